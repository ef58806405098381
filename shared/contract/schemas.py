"""Request and response schemas (Pydantic v2): what the API accepts and what it documents."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.contract import examples
from shared.contract.callbacks import AllowedHosts, url_problem
from shared.contract.model_kinds import (
    LINE_MODEL,
    TRANSFORMED,
    CallendarVanDusenModel,
    LineModel,
    ModelSpec,
    PolynomialModel,
    SteinhartHartModel,
)
from shared.contract.numbers import whole
from shared.contract.optimizers import FLAT_OPTIONS, EitherForm, Fraction, OptimizerSpec, Positive, from_flat
from shared.domain.calibration import standardization
from shared.domain.functions import CVD_RANGE, KELVIN, function_of
from shared.domain.splits import choose_indices, split, validation_count

# strict: "1.5" or true is a type error, not a number; no NaN or infinity.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _uncertainties(given: Any, positive: bool = False) -> float | list[float]:
    """Standard uncertainties: one finite number ≥ 0 (> 0 where `positive`) for all values, or a list of
    them. One check, so that a problem names the field (`u_t_u`, `u_t_u[3]`'s index in its message), not
    a union's branches."""
    bound = "> 0" if positive else "≥ 0"

    def one(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PydanticCustomError("uncertainty", f"{where}a number {bound} is expected")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise PydanticCustomError("uncertainty", f"{where}a finite number {bound} is expected, got {value!r}")
        return float(value)

    if isinstance(given, np.ndarray) and given.dtype == np.float64 and given.ndim == 1:
        # A CSV or Parquet batch's column, checked at once and kept an array (as its readings are);
        # the first value out of bounds is named as the list path names it.
        bad = ~np.isfinite(given) | (given <= 0 if positive else given < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            one(float(given[i]), f"[{i}]: ")
        return given  # type: ignore[return-value]
    if isinstance(given, list):
        if len(given) > 1_000_000:
            raise PydanticCustomError("uncertainty", "at most 1,000,000 values")
        return [one(value, f"[{i}]: ") for i, value in enumerate(given)]
    return one(given, "")


def _uncertainties_out(value: Any) -> float | list[float]:
    listed: float | list[float] = value.tolist() if isinstance(value, np.ndarray) else value
    return listed


# Standard uncertainties: one finite number ≥ 0 for all values, or one per value.
Uncertainties = Annotated[
    float | list[float],
    PlainValidator(_uncertainties),
    PlainSerializer(_uncertainties_out),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "array", "items": {"type": "number", "minimum": 0}, "maxItems": 1_000_000},
            ]
        }
    ),
]

# Stated uncertainties that weigh a fit (weights 1/u²): each > 0.
PositiveUncertainties = Annotated[
    float | list[float],
    PlainValidator(lambda given: _uncertainties(given, positive=True)),
    PlainSerializer(_uncertainties_out),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "maxItems": 1_000_000},
            ]
        }
    ),
]


def _points_array(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # A batch's readings arrive as float64 arrays (services/api/columns.py), never as Python lists:
    # checked at once and kept as they are. Where a value is not finite, the list path names it,
    # exactly as it names it in a JSON list.
    if isinstance(value, np.ndarray) and value.dtype == np.float64 and value.ndim == 1:
        return value if np.isfinite(value).all() else handler(value.tolist())
    return handler(value)


def _points_list(value: Any) -> list[float]:
    listed: list[float] = value.tolist() if isinstance(value, np.ndarray) else value
    return listed


# A fit's readings: a list of finite numbers in JSON, a float64 array on a batch's columnar path.
Points = Annotated[list[Finite], WrapValidator(_points_array), PlainSerializer(_points_list, return_type=list[float])]


# Strict integers that may be written 241 or 241.0.
WholeFromZero = Annotated[int, Field(strict=True, ge=0), BeforeValidator(whole)]
WholeFromOne = Annotated[int, Field(strict=True, ge=1), BeforeValidator(whole)]
Seed = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1), BeforeValidator(whole)]

DEFAULT_EPOCHS = 5000
DEFAULT_TOLERANCE = 0.01


# The pattern of a text without them, for the document (the validators use the function).
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"


# An instrument's name as users tag it ("TT-101"): 1 to 200 characters, neither a control character
# nor "/" (the name is a segment of its URL, /v1/instruments/{id}).
INSTRUMENT_PATTERN = r"^[^/\x00-\x1f\x7f]*$"
InstrumentId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=INSTRUMENT_PATTERN), Field(strict=True)
]


def instrument_name(text: str) -> str | None:
    """`text` as an instrument's name, or None where it cannot be one (a CSV series named with "/")."""
    return text if 1 <= len(text) <= 200 and not has_control_characters(text) and "/" not in text else None


# One regex search, not a Python loop per character: a 10,000-series batch checks 20,000 labels.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


# Half of a UTF-16 pair alone (JSON's "\udc80"): a str can hold one, UTF-8 text cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    """NUL and the other C0 controls and DEL: no database column or label filter takes NUL, and
    the rest have no place in a name a person reads."""
    return _CONTROL_CHARACTER.search(text) is not None


def _learning_rate(value: Any) -> float | str:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError('a positive number, or "auto"')
    if not math.isfinite(value) or value <= 0:
        raise ValueError('must be a positive finite number, or "auto"')
    return float(value)


# One validator for both forms, so an error's loc is ["learning_rate"], not a union branch.
LearningRate = Annotated[
    float | Literal["auto"],
    PlainValidator(_learning_rate),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"const": "auto"}],
            "default": 0.01,
            "examples": [0.01, "auto"],
            "description": '"auto": the fastest stable rate for the data, 2/(λ_min + λ_max) of '
            "the loss's Hessian; the rate used is in params.learning_rate",
        }
    ),
]


def _epochs(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    value = whole(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('an integer of at least 1, or "auto"')
    if value < 1:
        raise ValueError('must be at least 1, or "auto"')
    return value


# One validator for both forms, so an error's loc is ["epochs"], not a union branch.
Epochs = Annotated[
    int | Literal["auto"],
    PlainValidator(_epochs),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}],
            "default": DEFAULT_EPOCHS,
            "examples": [5000, "auto"],
            "description": '"auto": run until the fit has converged (see convergence_tolerance), at most max_epochs',
        }
    ),
]


def _limit(info: ValidationInfo, name: str, default: int) -> int:
    settings = (info.context or {}).get("settings")
    return int(getattr(settings, name, default))


def _allowed_callback(value: str, info: ValidationInfo) -> str:
    """A callback URL the operator allows (CALIB_WEBHOOK_ALLOWED_HOSTS; none without settings)."""
    settings = (info.context or {}).get("settings")
    problem = url_problem(value, AllowedHosts.parse(getattr(settings, "webhook_allowed_hosts", "")))
    if problem:
        raise PydanticCustomError("callback_not_allowed", problem)
    return value


CallbackUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2000, pattern=NO_CONTROL_CHARACTERS),
    Field(strict=True, description="POSTed the final JSON, signed, when it ends (docs/instruments.md: Webhooks)"),
    AfterValidator(_allowed_callback),
]


class DataTooLarge(ValueError):
    """Data over a configured limit: the API answers 413, not 422."""


class Init(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": examples.INIT_EXAMPLE})
    w: Finite = 1.0
    b: Finite = 0.0


def _one_of_fraction_or_indices(schema: dict[str, Any]) -> None:
    # What the validator below enforces, said as structure a client generator reads: two object
    # shapes, each naming the other's fields as null (left out or null counts as not given), so
    # that no request matches both and no `not` is needed.
    given = schema.pop("properties")
    schema.pop("type", None)
    schema.pop("additionalProperties", None)
    null = {"type": "null"}

    def form(title: str, required: str, own: dict[str, Any], other: tuple[str, ...]) -> dict[str, Any]:
        return {
            "title": title,
            "type": "object",
            "required": [required],
            "properties": {**own, **dict.fromkeys(other, null)},
            "additionalProperties": False,
        }

    def not_null(name: str) -> dict[str, Any]:
        kept = {key: value for key, value in given[name].items() if key not in ("anyOf", "default")}
        return {**given[name]["anyOf"][0], **kept}

    fraction, indices = not_null("fraction"), not_null("indices")
    schema["oneOf"] = [
        form("ValidationByFraction", "fraction", {"fraction": fraction, "seed": given["seed"]}, ("indices",)),
        form("ValidationByIndices", "indices", {"indices": indices}, ("fraction", "seed")),
    ]
    schema["examples"] = [{"fraction": 0.2, "seed": 0}, {"indices": [2, 10]}]


class Validation(BaseModel):
    """Points held out of training: their loss is recorded every epoch beside the training loss.
    Either a fraction (the book's int(fraction·n) points, picked by a seeded shuffle) or the indices."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of_fraction_or_indices)
    fraction: Annotated[float, Field(strict=True, gt=0, lt=1)] | None = Field(
        None, json_schema_extra={"example": 0.2}, description="without indices"
    )
    seed: Seed | None = Field(None, json_schema_extra={"example": 0}, description="with fraction only; default 0")
    indices: Annotated[list[WholeFromZero], Field(min_length=1, json_schema_extra={"uniqueItems": True})] | None = (
        Field(
            None,
            json_schema_extra={"example": [2, 10]},
            description="0-based positions in t_u and t_c, none repeated; without fraction",
        )
    )

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> Validation:
        if (self.fraction is None) == (self.indices is None):
            raise PydanticCustomError("validation_form", "give either fraction (with an optional seed) or indices")
        if self.seed is not None and self.fraction is None:
            raise PydanticCustomError("option_mismatch", "seed applies to fraction only", {"field": "seed"})
        if self.indices is not None and len(set(self.indices)) != len(self.indices):
            raise PydanticCustomError("duplicate", "indices must not repeat", {"field": "indices"})
        return self


class EarlyStopping(BaseModel):
    """Stop when the monitored loss has not improved by more than min_delta for `patience`
    epochs (Keras's EarlyStopping rule), decided on the stored float32 losses."""

    model_config = ConfigDict(extra="forbid")
    monitor: Literal["loss", "val_loss"] | None = Field(
        None,
        json_schema_extra={"example": "val_loss"},
        description='default "val_loss" when the fit has a validation split, else "loss"',
    )
    min_delta: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] = Field(
        0.0, json_schema_extra={"example": 0.0001}
    )
    patience: WholeFromOne = Field(10, json_schema_extra={"example": 10})


class FitOptions(BaseModel):
    """The settings of a fit that a batch's `defaults` may also carry.

    Some options apply only beside another's value, each refused with a 422 naming it otherwise:
    input_scale (other than 1) with normalize "scale"; gradient (other than "analytic") with
    optimizer "gd"; delta with gradient "finite_difference"; momentum with optimizer "momentum";
    betas and eps with optimizer "adam"; max_epochs with epochs "auto"; early_stopping's monitor
    "val_loss" with a validation split; the flat options (gradient, delta, momentum, betas, eps) only
    with an optimizer given by name. A field left out or null is not given."""

    model_config = ConfigDict(extra="forbid")
    epochs: Epochs = DEFAULT_EPOCHS
    max_epochs: WholeFromOne | None = Field(
        None,
        json_schema_extra={"example": 200000},
        description='with epochs "auto" only: the most epochs to run (default: the service\'s epoch limit)',
    )
    convergence_tolerance: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] = Field(
        DEFAULT_TOLERANCE,
        json_schema_extra={"example": 0.01},
        description="a fit has converged when its raw-unit line is within this many standard errors of the "
        "least-squares line, in w and in b (where the standard errors are 0 or undefined: when its "
        "excess loss is at most tolerance² · Var(t_c) / n)",
    )
    model: ModelSpec = Field(
        default_factory=lambda: LINE_MODEL,
        json_schema_extra={"example": {"kind": "polynomial", "degree": 2}},
        description='the function fitted: {"kind": "line"} (the default, t_c = w·t_u + b), '
        '{"kind": "polynomial", "degree": d} (t_c = a0 + a1·t_u + … + ad·t_u^d, 1 ≤ d ≤ 5), '
        '{"kind": "callendar_van_dusen"} (t_u a resistance in Ω > 0, t_c a temperature in °C within '
        "−200…850; R(T) = R0·(1 + A·T + B·T² + C·(T − 100)·T³), C for T < 0 only) or "
        '{"kind": "steinhart_hart"} (t_u in Ω > 0; 1/(t_c + 273.15) = a + b·ln t_u + c·(ln t_u)³). '
        "The last two are fitted in their linear form (shared/domain/functions.py): the loss is in the "
        "units of their response (Ω² for Callendar–Van Dusen, K⁻² for Steinhart–Hart); u_t_c weighs them "
        "through the response (u(t_c)/T² for Steinhart–Hart, |dR/dT|·u(t_c) for Callendar–Van Dusen)",
    )
    learning_rate: LearningRate = 0.01
    init: Init = Field(default_factory=Init, json_schema_extra={"example": {"w": 1.0, "b": 0.0}})
    input_scale: Finite = Field(
        1.0,
        json_schema_extra={"example": 0.1, "anyOf": [{"exclusiveMinimum": 0}, {"exclusiveMaximum": 0}]},
        description='not 0; with normalize "scale" only, unless 1',
    )
    # How t_u is presented to the model: "scale" (x = input_scale * t_u, the book's 0.1),
    # "standardize" (x = (t_u - mean) / SD of the fit's data), "none" (x = t_u). The result
    # always carries the raw-unit line too (w_raw, b_raw).
    normalize: Literal["none", "scale", "standardize"] = Field(
        "scale",
        json_schema_extra={"example": "standardize"},
        description='"standardize" needs training t_u that are not all equal (a spread float64 can hold)',
    )
    # The optimizer by name with its options flat (the first API's form, kept), or as one object
    # whose `kind` picks it (shared/contract/optimizers.py; every optimizer's options, RMSprop's alpha too).
    optimizer: EitherForm = Field(
        "gd",
        json_schema_extra={"examples": ["adam", {"kind": "rmsprop", "alpha": 0.99, "eps": 1e-8}]},
        description="a name (its options below, flat) or an object with `kind` and the optimizer's options",
    )
    # For gd: the book's analytic grad_fn (the exact closed form), loss.backward(), or the
    # book's central difference with step `delta`. All three give the same fit.
    gradient: Literal["analytic", "autograd", "finite_difference"] = Field(
        "analytic", json_schema_extra={"example": "autograd"}, description='optimizer "gd" (flat) only'
    )
    delta: Positive | None = Field(
        None, json_schema_extra={"example": 0.1}, description='gradient "finite_difference" only; default 0.1'
    )
    # Optimizer options of the flat form, each only with the optimizer it belongs to (torch.optim's
    # meaning); left out, they take torch's defaults, and momentum 0.9.
    momentum: Fraction | None = Field(
        None, json_schema_extra={"example": 0.9}, description='optimizer "momentum" (flat) only; default 0.9'
    )
    betas: tuple[Fraction, Fraction] | None = Field(
        None,
        json_schema_extra={"example": [0.9, 0.999]},
        description='optimizer "adam" (flat) only; default [0.9, 0.999]',
    )
    eps: Positive | None = Field(
        None, json_schema_extra={"example": 1e-8}, description='optimizer "adam" (flat) only; default 1e-8'
    )
    validation: Validation | None = Field(
        None,
        json_schema_extra={"example": {"fraction": 0.2, "seed": 0}},
        description="indices name points of t_u; a split holds out at least one point and leaves at least "
        "two to train on",
    )
    early_stopping: EarlyStopping | None = Field(
        None, json_schema_extra={"example": {"monitor": "val_loss", "min_delta": 0.0001, "patience": 10}}
    )

    @model_validator(mode="after")
    def _val_loss_needs_validation(self) -> FitOptions:
        if self.early_stopping and self.early_stopping.monitor == "val_loss" and self.validation is None:
            raise PydanticCustomError(
                "option_mismatch", 'monitor "val_loss" needs a validation split', {"field": "early_stopping.monitor"}
            )
        return self

    @model_validator(mode="after")
    def _input_scale_only_with_scale(self) -> FitOptions:
        if self.normalize != "scale" and self.input_scale != 1.0:
            raise PydanticCustomError(
                "option_mismatch", 'input_scale applies to normalize "scale" only', {"field": "input_scale"}
            )
        return self

    @model_validator(mode="after")
    def _options_match_the_optimizer(self) -> FitOptions:
        given = {name: value for name, value in self._flat_options().items() if value is not None}
        if not isinstance(self.optimizer, str):
            for name in given:
                raise PydanticCustomError(
                    "option_mismatch",
                    f"{name} goes inside the optimizer object when the optimizer is one",
                    {"field": name},
                )
            return self
        if "gradient" in given and self.optimizer != "gd":
            raise PydanticCustomError(
                "option_mismatch",
                'gradient applies to optimizer "gd" only (torch.optim optimizers use autograd)',
                {"field": "gradient"},
            )
        if self.delta is not None and self.gradient != "finite_difference":
            raise PydanticCustomError(
                "option_mismatch", 'delta applies to gradient "finite_difference" only', {"field": "delta"}
            )
        for name, optimizer in FLAT_OPTIONS.items():
            if name in given and self.optimizer != optimizer:
                raise PydanticCustomError(
                    "option_mismatch", f'{name} applies to optimizer "{optimizer}" only', {"field": name}
                )
        return self

    def _flat_options(self) -> dict[str, Any]:
        # gradient "analytic" is its default: given or not, it asks for nothing.
        values = {name: getattr(self, name) for name in FLAT_OPTIONS}
        return {**values, "gradient": None if self.gradient == "analytic" else self.gradient}

    def optimizer_spec(self) -> OptimizerSpec:
        """The optimizer as one object, whichever form the request used."""
        if not isinstance(self.optimizer, str):
            return self.optimizer
        given = {name: value for name, value in self._flat_options().items() if value is not None}
        return from_flat(self.optimizer, given)

    @field_validator("epochs", "max_epochs")
    @classmethod
    def _epochs_limit(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
        limit = _limit(info, "max_epochs", 1_000_000)
        if isinstance(value, int) and value > limit:
            raise ValueError(f"at most {limit} epochs")
        return value

    @model_validator(mode="after")
    def _max_epochs_with_auto(self) -> FitOptions:
        if self.max_epochs is not None and self.epochs != "auto":
            raise PydanticCustomError(
                "option_mismatch", 'max_epochs applies to epochs "auto" only', {"field": "max_epochs"}
            )
        return self

    @field_validator("input_scale")
    @classmethod
    def _nonzero_scale(cls, value: float) -> float:
        if value == 0:
            raise ValueError("input_scale must not be 0")
        return value


class FitCreate(FitOptions):
    model_config = ConfigDict(json_schema_extra={"example": examples.FIT_CREATE_EXAMPLE})
    # minItems documents the two-point minimum; the validator below gives the clearer message.
    t_u: Points = Field(
        json_schema_extra={"example": [35.7, 55.9, 58.2, 81.9, 56.3], "minItems": 2},
        description="the uncalibrated instrument's readings",
    )
    t_c: Points = Field(
        json_schema_extra={"example": [0.5, 14.0, 15.0, 28.0, 11.0], "minItems": 2},
        description="the reference values: one per t_u, as many as t_u",
    )
    u_t_c: PositiveUncertainties | None = Field(
        None,
        json_schema_extra={"example": 0.5},
        description="the standard uncertainty of each reference value, > 0 (one number for all, or one per "
        "t_c): the fit is then weighted least squares, weights 1/u², its parameters' uncertainties come "
        "from these (not rescaled by the residuals) and the result adds chi2_obs, chi2_dof, chi2_p and "
        "consistent (ISO/TS 28037 clause 6)",
    )
    u_t_u: Uncertainties | None = Field(
        None,
        json_schema_extra={"example": 0.2},
        description="with u_t_c, for a line: the standard uncertainty of each reading, ≥ 0 (one number for all, "
        "or one per t_u): the line is then fitted by generalized distance regression (ISO/TS 28037 clause 7), "
        "minimizing Σ (t_c − w·t_u − b)² / (u_t_c² + w²·u_t_u²), its uncertainties and χ² from the stated "
        "uncertainties",
    )
    labels: dict[str, Annotated[str, Field(max_length=256, json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})]] = (
        Field(
            default_factory=dict,
            json_schema_extra={"propertyNames": {"minLength": 1, "maxLength": 64, "pattern": NO_CONTROL_CHARACTERS}},
        )
    )
    callback_url: CallbackUrl | None = Field(None, json_schema_extra={"example": "https://hooks.example.com/calib"})
    instrument: InstrumentId | None = Field(
        None,
        json_schema_extra={"example": "TT-101"},
        description="the instrument this fit calibrates: once succeeded, it is the instrument's newest calibration",
    )

    @field_validator("t_u", "t_c")
    @classmethod
    def _points(cls, value: list[float], info: ValidationInfo) -> list[float]:
        limit = _limit(info, "max_points_per_fit", 1_000_000)
        if len(value) > limit:
            raise DataTooLarge(f"at most {limit} points per fit")
        if len(value) < 2:
            raise ValueError("at least 2 points are needed to fit a line")
        return value

    @field_validator("u_t_c")
    @classmethod
    def _stated_uncertainties(cls, given: Any, info: ValidationInfo) -> Any:
        # Each > 0 (PositiveUncertainties): a weight is 1/u², and a u of 0 would make one point the whole fit.
        return _one_per_value(given, info, "t_c")

    @field_validator("u_t_u")
    @classmethod
    def _reading_uncertainties(cls, given: Any, info: ValidationInfo) -> Any:
        return _one_per_value(given, info, "t_u")

    @model_validator(mode="after")
    def _readings_uncertain_only_with_references(self) -> FitCreate:
        # Generalized distance regression weighs each point by 1/(u_t_c² + w²·u_t_u²): it needs u_t_c,
        # and calib runs it for the line (ISO/TS 28037 is about straight lines).
        if self.u_t_u is not None and self.u_t_c is None:
            raise PydanticCustomError(
                "option_mismatch", "u_t_u goes with u_t_c (generalized distance regression)", {"field": "u_t_u"}
            )
        if self.u_t_u is not None and not isinstance(self.model, LineModel):
            raise PydanticCustomError(
                "model_mismatch",
                "u_t_u (generalized distance regression) is for the line; {kind} takes u_t_c only",
                {"field": "u_t_u", "kind": self.model.kind},
            )
        return self

    def stated_u_t_u(self) -> np.ndarray | None:
        """u(t_u) of every point as an array, or None."""
        if self.u_t_u is None:
            return None
        return np.broadcast_to(np.asarray(self.u_t_u, dtype=np.float64), (len(self.t_u),)).copy()

    def stated_u_t_c(self) -> np.ndarray | None:
        """u(t_c) of every point as an array (one number for all spread out), or None."""
        if self.u_t_c is None:
            return None
        return np.broadcast_to(np.asarray(self.u_t_c, dtype=np.float64), (len(self.t_c),)).copy()

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        limit = _limit(info, "max_labels", 32)
        if len(value) > limit:
            raise ValueError(f"at most {limit} labels")
        for key, text in value.items():
            if not 1 <= len(key) <= 64:
                raise ValueError("label keys are 1 to 64 characters")
            if has_control_characters(key) or has_control_characters(text):
                raise PydanticCustomError(
                    "control_characters", "labels hold no control characters (NUL, line breaks…)", {"field": key}
                )
            if _SURROGATE.search(key):
                # A value's str check refuses these; a key's does not, and the label is stored as
                # UTF-8 JSON, which cannot hold one (json_text raised: a 500).
                named = key.encode("utf-8", "backslashreplace").decode()  # the problem is UTF-8 too
                raise PydanticCustomError(
                    "lone_surrogate", "label keys are text: no lone surrogate (as the escape \\udc80)", {"field": named}
                )
        return value

    def held_out(self) -> list[int] | None:
        """The validation indices this request picks (sorted), or None without a split."""
        if self.validation is None:
            return None
        if self.validation.indices is not None:
            return sorted(self.validation.indices)
        assert self.validation.fraction is not None
        return choose_indices(len(self.t_u), self.validation.fraction, self.validation.seed or 0)

    @model_validator(mode="after")
    def _split_leaves_a_line_to_fit(self) -> FitCreate:
        if self.validation is None or len(self.t_u) != len(self.t_c):
            return self
        n = len(self.t_u)
        for i, index in enumerate(self.validation.indices or []):
            if index >= n:
                raise PydanticCustomError(
                    "out_of_range",
                    "index {index} is past the last point ({last})",
                    {"field": f"validation.indices.{i}", "index": index, "last": n - 1},
                )
        if self.validation.fraction is not None and validation_count(n, self.validation.fraction) < 1:
            raise PydanticCustomError(
                "empty_split",
                "fraction {fraction} of {n} points holds out no point",
                {"field": "validation.fraction", "fraction": self.validation.fraction, "n": n},
            )
        if n - len(self.held_out() or []) < 2:
            raise PydanticCustomError(
                "no_training", "the split leaves fewer than 2 points to train on", {"field": "validation"}
            )
        return self

    @model_validator(mode="after")
    def _enough_points_for_the_model(self) -> FitCreate:
        if isinstance(self.model, LineModel) or len(self.t_u) != len(self.t_c):
            return self
        if isinstance(self.model, TRANSFORMED):
            _within_the_functions_domain(self.model, self.t_u, self.t_c)
        training_t_c = split(self.t_c, self.held_out())[0]
        needed, training = self.model.needed(training_t_c), len(training_t_c)
        if training < needed:
            degree = f"of degree {self.model.degree}" if isinstance(self.model, PolynomialModel) else ""
            raise PydanticCustomError(
                "too_few_points",
                "a {kind} {degree} needs at least {needed} training points; t_u has {training}",
                {
                    "field": "model.degree" if degree else "t_u",
                    "kind": self.model.kind,
                    "degree": degree,
                    "needed": needed,
                    "training": training,
                },
            )
        return self

    @model_validator(mode="after")
    def _standardize_needs_spread(self) -> FitCreate:
        # Standardization uses the training points only (the held-out ones must not leak in).
        # The same test the submission's standardization makes, so nothing accepted fails it.
        if self.normalize == "standardize" and standardization(self.training_regressor()) is None:
            raise PydanticCustomError(
                "no_spread",
                "standardize needs training t_u that are not all equal, with a spread float64 can hold",
                {"field": "normalize"},
            )
        return self

    def training_t_u(self) -> np.ndarray:
        return split(self.t_u, self.held_out())[0]

    def training_regressor(self) -> np.ndarray:
        """What normalize acts on: t_u, or for a transformed function its regressor (the temperature
        for Callendar–Van Dusen, ln t_u for Steinhart–Hart)."""
        if isinstance(self.model, TRANSFORMED):
            training_t_c = split(self.t_c, self.held_out())[0]
            return function_of(self.model.stored(training_t_c)).regressor(  # type: ignore[union-attr]
                self.training_t_u(), training_t_c
            )
        return self.training_t_u()

    @field_validator("t_c")
    @classmethod
    def _pairs_with_t_u(cls, value: list[float], info: ValidationInfo) -> list[float]:
        t_u = info.data.get("t_u")
        if t_u is not None and len(t_u) != len(value):
            raise ValueError(f"t_c has {len(value)} values but t_u has {len(t_u)}: they must pair up")
        return value


def _within_the_functions_domain(
    model: CallendarVanDusenModel | SteinhartHartModel, t_u: list[float], t_c: list[float]
) -> None:
    """Resistances positive; Callendar–Van Dusen's temperatures within IEC 60751's −200…850 °C,
    Steinhart–Hart's above absolute zero."""
    for i, r in enumerate(t_u):
        if not r > 0:
            raise PydanticCustomError(
                "out_of_domain",
                "a resistance must be > 0 for {kind}; t_u[{i}] is {r}",
                {"field": f"t_u.{i}", "kind": model.kind, "i": i, "r": r},
            )
    cvd = isinstance(model, CallendarVanDusenModel)
    lowest, highest = CVD_RANGE if cvd else (-KELVIN, math.inf)
    for i, t in enumerate(t_c):
        if not (lowest <= t <= highest if cvd else t > lowest):
            raise PydanticCustomError(
                "out_of_domain",
                "t_c[{i}] = {t} °C is outside {kind}'s range ({lowest} … {highest} °C)",
                {"field": f"t_c.{i}", "kind": model.kind, "i": i, "t": t, "lowest": lowest, "highest": highest},
            )


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": examples.PREDICT_REQUEST_EXAMPLE})
    t_u: Annotated[list[Finite], Field(min_length=1, max_length=1_000_000)]
    # A prediction interval for a new reading at each t_u, at this confidence.
    interval: Annotated[float, Field(strict=True, gt=0, lt=1, json_schema_extra={"example": 0.95})] | None = None
    # Strict, as every request field: 0 or "yes" for a boolean is the client's mistake, said as 422.
    allow_unconverged: bool = Field(
        False,
        strict=True,
        json_schema_extra={"example": False},
        description="an interval (or u_t_c) on a fit that has not converged: 409 unless this is true; then "
        "its bounds span the fit's prediction and the least-squares one, widened by the interval (u_t_c "
        "is then the least-squares line's, at the fit's prediction)",
    )
    u_t_u: Uncertainties | None = Field(
        None,
        json_schema_extra={"example": 0.2},
        description="the standard uncertainty of each reading (one for all, or one per t_u): the answer then "
        "carries u_t_c, the standard uncertainty of each prediction, "
        "sqrt(u²(b) + t_u²·u²(w) + 2·t_u·cov(w, b) + w²·u²(t_u)) (GUM, first order; ISO/TS 28037's "
        "forward evaluation); 0 for the line's uncertainty alone",
    )

    @field_validator("u_t_u")
    @classmethod
    def _one_uncertainty_per_reading(cls, given: Any, info: ValidationInfo) -> Any:
        return _one_per_value(given, info, "t_u")


class InverseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": examples.INVERSE_REQUEST_EXAMPLE})
    t_c: Annotated[list[Finite], Field(min_length=1, max_length=1_000_000, json_schema_extra={"example": [10.5]})]
    u_t_c: Uncertainties | None = Field(
        None,
        json_schema_extra={"example": 0.5},
        description="the standard uncertainty of each reference value (one for all, or one per t_c); "
        "none: 0, the line's uncertainty alone",
    )
    allow_unconverged: bool = Field(
        False,
        strict=True,
        json_schema_extra={"example": False},
        description="a fit that has not converged: 409 unless this is true (its u_t_u is then the "
        "least-squares line's, at the fit's reading)",
    )

    @field_validator("u_t_c")
    @classmethod
    def _one_uncertainty_per_value(cls, given: Any, info: ValidationInfo) -> Any:
        return _one_per_value(given, info, "t_c")


def _one_per_value(given: Any, info: ValidationInfo, of: str) -> Any:
    """Uncertainties given as a list: one per value of `of` (which validated before them)."""
    values = info.data.get(of)
    if isinstance(given, list) and values is not None and len(given) != len(values):
        raise PydanticCustomError(
            "uncertainties", f"one number for all, or one per {of} ({len(values)}); got {len(given)}"
        )
    return given


class Served(BaseModel):
    """A response model: the API serializes every body through one (shared/contract/responses.py),
    so a field it does not declare is refused, never served undocumented."""

    model_config = ConfigDict(extra="forbid")


class Gap(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.GAP_EXAMPLE})
    w: float
    b: float


class Convergence(Served):
    gap_se_w: float | None = Field(
        description="(w_raw − w_opt) / se_w; null where se_w is 0 or undefined", json_schema_extra={"example": 0.0031}
    )
    gap_se_b: float | None = Field(description="(b_raw − b_opt) / se_b", json_schema_extra={"example": -0.0046})
    excess_loss: float | None = Field(
        description="the training loss at the fitted line less the least-squares loss",
        json_schema_extra={"example": 1.2e-7},
    )
    epochs_needed: int | None = Field(
        description="gd: the epochs this learning rate needs from this start to "
        "converge (null where unknown, or not within the epoch limit)",
        json_schema_extra={"example": 4008},
    )
    gap_se: dict[str, float | None] | None = Field(
        None,
        description="each parameter's gap to the least-squares one in its standard uncertainties, by name "
        "(for a line, gap_se_w and gap_se_b)",
        json_schema_extra={"example": {"w": 0.0031, "b": -0.0046}},
    )


class Result(Served):
    """The fit, and against it the exact least-squares line of the same data (raw units)."""

    model_config = ConfigDict(json_schema_extra={"example": examples.RESULT_EXAMPLE})

    # The line's own fields: null for every other model kind, whose figures are the general form below.
    w: float | None = Field(description="the line's slope in model space (null for other models)")
    b: float | None = Field(description="the line's intercept in model space (null for other models)")
    loss: float | None = Field(
        description="the training loss (mean squared error) at the returned line w, b: the loss of the "
        "result. Null only where it overflows float64. Not the last value of the per-epoch series, "
        "whose epochs are each taken before that epoch's update (see last_epoch_loss)",
        json_schema_extra={"example": 2.927645},
    )
    last_epoch_loss: float | None = Field(
        description="the per-epoch series' last value: the loss of epoch epochs_done, taken before its "
        "update (the line the book prints last)",
        json_schema_extra={"example": 2.927648},
    )
    w_raw: float | None = Field(description="the line's slope in raw units (null for other models)")
    b_raw: float | None = Field(description="the line's intercept in raw units (null for other models)")
    w_opt: float | None = Field(json_schema_extra={"example": 0.536772})
    b_opt: float | None = Field(json_schema_extra={"example": -17.304786})
    gap: Gap | None = Field(
        description="w_raw - w_opt and b_raw - b_opt: how far gradient descent stopped from the optimum"
    )
    se_w: float | None = Field(json_schema_extra={"example": 0.035539})
    se_b: float | None = Field(json_schema_extra={"example": 1.927227})
    cov_wb: float | None = Field(json_schema_extra={"example": -0.065423})
    r2: float | None = Field(json_schema_extra={"example": 0.96205})
    residual_sd: float | None = Field(json_schema_extra={"example": 1.891622})
    val_loss: float | None = Field(
        None,
        description="the validation loss at the returned line (with a split)",
        json_schema_extra={"example": 3.5756},
    )
    last_epoch_val_loss: float | None = Field(
        None,
        description="the validation series' last value: epoch epochs_done's, before its update (with a split)",
        json_schema_extra={"example": 3.5757},
    )
    converged: bool | None = Field(
        description="whether the fitted line is within convergence_tolerance standard "
        "errors of the least-squares line (null: t_u all equal, no verdict); "
        "se_w, se_b, cov_wb, r2 and residual_sd belong to the least-squares "
        "line, not to a fitted line that has not converged",
        json_schema_extra={"example": True},
    )
    convergence: Convergence
    # With stated uncertainties (u_t_c) only: the weighted fit's χ² test (ISO/TS 28037 clause 6.3).
    chi2_obs: float | None = Field(
        None,
        description="with u_t_c: Σ ((t_c − f(t_u)) / u_t_c)² at the least-squares parameters",
        json_schema_extra={"example": 1.664762},
    )
    chi2_dof: int | None = Field(
        None, description="with u_t_c: n − p (training points less parameters)", json_schema_extra={"example": 4}
    )
    chi2_p: float | None = Field(
        None, description="with u_t_c: P(χ²(chi2_dof) ≥ chi2_obs)", json_schema_extra={"example": 0.797}
    )
    consistent: bool | None = Field(
        None,
        description="with u_t_c: chi2_obs is at most the 95 % quantile of χ²(chi2_dof): the data agree with "
        "their stated uncertainties and the model",
        json_schema_extra={"example": True},
    )
    # The general form of every model kind (API.md, third round), in raw units; a line's is a second
    # view of w_raw, b_raw, w_opt, b_opt, se_w, se_b and cov_wb.
    parameter_names: list[str] = Field(
        description="the model's parameters in order (a line: w, the slope, and b, the intercept)",
        json_schema_extra={"example": ["w", "b"]},
    )
    parameters: dict[str, float | None] = Field(
        description="the fitted parameters by name, raw units; null where one is past float64's range (a "
        "function's presented parameter can be where its coefficients are not: Callendar–Van Dusen's A, B "
        "and C are coefficients over R0)",
        json_schema_extra={"example": {"w": 0.5367, "b": -17.3}},
    )
    parameters_opt: dict[str, float] | None = Field(
        description="the exact least-squares parameters by name (null where the data do not determine them)",
        json_schema_extra={"example": {"w": 0.536772, "b": -17.304786}},
    )
    standard_uncertainties: dict[str, float | None] | None = Field(
        description="each least-squares parameter's standard uncertainty (for a line, se_w and se_b)",
        json_schema_extra={"example": {"w": 0.035539, "b": 1.927227}},
    )
    covariance: list[list[float]] | None = Field(
        description="the least-squares parameters' covariance, rows and columns in parameter_names order "
        "(for a line, se_w², cov_wb and se_b²); null where any of it is undefined",
        json_schema_extra={"example": [[0.001263, -0.065423], [-0.065423, 3.714204]]},
    )


class Prediction(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.PREDICTION_EXAMPLE})
    fit_id: str
    t_c: list[float]
    lower: list[float] | None = None
    upper: list[float] | None = None
    converged: bool | None = Field(
        None, description="the fit's convergence verdict (result.converged)", json_schema_extra={"example": True}
    )
    bounds_include_gap: bool | None = Field(
        None,
        description="with allow_unconverged on a fit that has not converged: the bounds span the least-"
        "squares prediction's interval and the fit's prediction with the same half-width",
        json_schema_extra={"example": True},
    )
    u_t_c: list[float] | None = Field(
        None,
        description="with u_t_u: the standard uncertainty of each prediction",
        json_schema_extra={"example": [0.41, 0.52]},
    )


class Inverse(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.INVERSE_EXAMPLE})
    fit_id: str
    t_u: list[float] = Field(
        description="the reading that gives each reference value: on a line (t_c − b_raw) / w_raw; on any other "
        "model the one reading within the range of the fit's readings where its function equals t_c (none, "
        "or several, is a 409 naming the value)",
        json_schema_extra={"example": [4.913]},
    )
    u_t_u: list[float] | None = Field(
        description="its standard uncertainty, sqrt(u²(t_c) + u²(b) + t_u²·u²(w) + 2·t_u·cov(w, b)) / |w| "
        "(ISO/TS 28037's prediction of x from y); for any other model sqrt(u²(t_c) + ∂_θfᵀ·V·∂_θf) / |∂f/∂t_u| "
        "(the GUM's law for the implicit function); null where the fit has no covariance (fewer points "
        "than it needs, or t_u all equal)",
        json_schema_extra={"example": [0.322]},
    )
    converged: bool | None = Field(
        description="the fit's convergence verdict (result.converged)", json_schema_extra={"example": True}
    )


class ValidationUsed(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.VALIDATION_USED_EXAMPLE})
    fraction: float | None = None
    seed: int | None = None
    indices: list[int] = Field(
        description="the held-out points, chosen at submission", json_schema_extra={"example": [2, 10]}
    )


class EarlyStoppingUsed(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.EARLY_STOPPING_USED_EXAMPLE})
    monitor: Literal["loss", "val_loss"]
    min_delta: float
    patience: int


class Params(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.PARAMS_EXAMPLE})
    learning_rate: float
    init: Init
    input_scale: float
    normalize: str
    model: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "line"},
        description="the function fitted, as the request gave it",
        json_schema_extra={"example": {"kind": "polynomial", "degree": 2}},
    )
    input_shift: float | None = None
    optimizer: str
    gradient: str = Field(description='gd\'s gradient; "analytic" for the other optimizers')
    delta: float | None = None
    momentum: float | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    optimizer_options: dict[str, Any] = Field(
        description="every option of the optimizer as it ran, defaults filled: the object form of "
        "`optimizer` less its kind (the flat fields above repeat the first API's)",
        json_schema_extra={"example": {"betas": [0.9, 0.999], "eps": 1e-8}},
    )
    validation: ValidationUsed | None = None
    early_stopping: EarlyStoppingUsed | None = None
    convergence_tolerance: float = Field(json_schema_extra={"example": 0.01})
    epochs_auto: bool = Field(
        description='the request asked for epochs "auto"; `epochs` is then its max_epochs',
        json_schema_extra={"example": False},
    )


class FitError(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.FIT_ERROR_EXAMPLE})
    type: str = Field(
        description='why a fit failed: "worker_lost" (the worker running it alone was lost max_attempts '
        'times, docs/reliability.md) or "internal" (its run raised while it ran alone; a chunk of several '
        "that raises goes back to the queue in halves, so one fit's fault fails no other)"
    )
    detail: str = Field(description="what happened, in words: for internal, the exception")


class Suggestion(Served):
    """Options that make gradient descent converge on any data: the learning rate from the data's
    curvature, the input standardized (the Hessian becomes 2·I), and epochs until converged."""

    model_config = ConfigDict(json_schema_extra={"example": examples.SUGGESTION_EXAMPLE})

    learning_rate: Literal["auto"]
    normalize: Literal["standardize"]
    epochs: Literal["auto"]


class FitPreflight(Served):
    """What the data says of a fit before it is submitted: nothing is stored or queued."""

    model_config = ConfigDict(json_schema_extra={"example": examples.FIT_PREFLIGHT_EXAMPLE})

    n_points: int
    learning_rate: float = Field(description='the learning rate the fit would run with ("auto" resolved)')
    lr_max: float | None = Field(
        description="the largest stable learning rate of plain gradient descent on this data, in model "
        "space (2 / the largest eigenvalue of the loss's Hessian); null where the data does not determine it",
        json_schema_extra={"example": 0.000339},
    )
    condition_number: float | None = Field(json_schema_extra={"example": 33794.0})
    stable: bool | None = Field(
        description="learning_rate < lr_max: whether gd and sgd (full-batch) stay finite; false means the "
        "fit will diverge. Null for momentum and adam, whose limits differ, or where lr_max is unknown",
        json_schema_extra={"example": False},
    )
    warnings: list[str] = Field(description="what the fit's own warnings would say")
    suggestion: Suggestion | None = Field(
        description="when stable is false: options to add to the request that converge (null otherwise)"
    )


class FitPublic(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.FIT_PUBLIC_EXAMPLE})
    id: str
    status: Literal["queued", "running", "succeeded", "diverged", "failed", "cancelled"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    epochs: int
    epochs_done: int
    n_points: int
    attempt: int
    params: Params
    labels: dict[str, str]
    instrument: str | None = Field(json_schema_extra={"example": "TT-101"})
    batch_id: str | None
    result: Result | None
    diverged_at_epoch: int | None
    stop_reason: Literal["completed", "early_stopped", "converged", "max_epochs"] | None = Field(
        description="how a succeeded fit ended: all its epochs, early stopping at epochs_done, or with epochs "
        '"auto" converged at epochs_done or max_epochs reached first',
        json_schema_extra={"example": "early_stopped"},
    )
    lr_max: float | None = Field(
        description="2/λ_max of the loss's Hessian in the model's space: larger learning rates diverge",
        json_schema_extra={"example": 0.033},
    )
    condition_number: float | None = Field(json_schema_extra={"example": 335.99})
    warnings: list[str] = Field(
        json_schema_extra={"example": ["learning_rate 0.01 exceeds the stable limit 0.00034: this fit will diverge"]}
    )
    losses_pruned: bool = Field(
        description="retention deleted this fit's losses (its losses routes answer 410); its result is kept",
        json_schema_extra={"example": False},
    )
    error: FitError | None
    links: dict[str, str]


class FitList(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.FIT_LIST_EXAMPLE})
    items: list[FitPublic]
    next: str | None


class LossPage(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.LOSS_PAGE_EXAMPLE})
    fit_id: str
    epochs_done: int
    start: int
    # JSON has no NaN or infinity: an epoch whose loss is past float32's range (a diverging fit's
    # last epochs) is null, as in the validation series.
    loss: list[float | None] = Field(description="each epoch's loss; null where it is not finite")
    val_loss: list[float | None] | None = Field(None, description="with a validation split; same indexing as loss")
    next: str | None


class FitData(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.FIT_DATA_EXAMPLE})
    fit_id: str
    t_u: list[float]
    t_c: list[float]
    validation_indices: list[int] = Field(description="the held-out points; empty without a split")
    u_t_c: list[float] | None = Field(
        None,
        description="the stated standard uncertainty of each t_c, where the fit was given them",
        json_schema_extra={"example": [0.5, 0.5, 0.5]},
    )
    u_t_u: list[float] | None = Field(
        None,
        description="the stated standard uncertainty of each t_u, where the fit was given them",
        json_schema_extra={"example": [0.2, 0.2, 0.2]},
    )


class LossBucket(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.LOSS_BUCKET_EXAMPLE})
    first_epoch: int
    last_epoch: int
    min: float | None = Field(description="null where not finite, as in a page of losses")
    max: float | None
    last: float | None
    val_min: float | None = None
    val_max: float | None = None
    val_last: float | None = None


class LossBuckets(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.LOSS_BUCKETS_EXAMPLE})
    fit_id: str
    epochs_done: int
    start: int
    end: int
    buckets: list[LossBucket]


class Problem(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.PROBLEM_EXAMPLE})
    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    quota: str | None = Field(
        None,
        description="for a refusal by a quota: its name (fit_epochs_per_request, "
        "in_flight_fit_epochs, stored_loss_bytes, queued_fits, "
        "queued_messages, pending_webhooks)",
        json_schema_extra={"example": "in_flight_fit_epochs"},
    )
    limit: int | None = Field(None, description="the quota", json_schema_extra={"example": 2_000_000_000})
    requested: int | None = Field(None, description="what the request asked for", json_schema_extra={"example": 5000})
    remaining: int | None = Field(None, description="what is left of the quota", json_schema_extra={"example": 0})


class UsageQuotas(Served):
    fit_epochs_per_request: int = Field(json_schema_extra={"example": 500_000_000})
    in_flight_fit_epochs: int = Field(json_schema_extra={"example": 2_000_000_000})
    stored_loss_bytes: int = Field(json_schema_extra={"example": 53_687_091_200})


class Usage(Served):
    tenant: str = Field(json_schema_extra={"example": "plant-7"})
    fits: int = Field(description="the tenant's fits, all statuses", json_schema_extra={"example": 12_000})
    stored_loss_bytes: int = Field(
        description="bytes of losses the tenant stores", json_schema_extra={"example": 240_000_000}
    )
    in_flight_fit_epochs: int = Field(
        description="epochs not yet run of its queued and running fits", json_schema_extra={"example": 5_000_000}
    )
    quotas: UsageQuotas = Field(
        json_schema_extra={
            "example": {
                "fit_epochs_per_request": 500_000_000,
                "in_flight_fit_epochs": 2_000_000_000,
                "stored_loss_bytes": 53_687_091_200,
            }
        }
    )


class BatchFit(BaseModel):
    """One fit of a batch: its data, and any field of the batch's defaults to override."""

    model_config = ConfigDict(extra="allow")
    t_u: list[Any]
    t_c: list[Any]


class BatchCreate(BaseModel):
    # At run time defaults and fits stay loose (each merged fit is validated as a
    # FitCreate, with errors located by fit); services/api/openapi.py documents them
    # precisely, as FitOptions and FitCreate.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": examples.BATCH_CREATE_EXAMPLE})
    defaults: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"example": {"epochs": 5000, "input_scale": 0.1}}
    )
    fits: list[BatchFit] = Field(min_length=1)
    callback_url: CallbackUrl | None = Field(None, json_schema_extra={"example": "https://hooks.example.com/calib"})


class BatchOptions(BaseModel):
    """What a CSV or Parquet batch takes beside its fits' defaults, as query parameters."""

    model_config = ConfigDict(extra="ignore")
    callback_url: CallbackUrl | None = None


class BatchPublic(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.BATCH_PUBLIC_EXAMPLE})
    id: str
    count: int
    status: Literal["queued", "running", "completed", "cancelled"]
    counts: dict[str, int]
    drifted: int = Field(
        description="succeeded fits whose instrument's calibration drifted from the one before it (flagged)",
        json_schema_extra={"example": 0},
    )
    created_at: str
    finished_at: str | None
    links: dict[str, str]


class Drift(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.DRIFT_EXAMPLE})
    chi2: float | None = Field(
        description="squared Mahalanobis distance of (Δw_raw, Δb_raw) under the sum of the two calibrations' "
        "covariances (2 degrees of freedom); null where a covariance is unknown or the sum singular",
        json_schema_extra={"example": 1.37},
    )
    p_value: float | None = Field(description="P(χ²₂ ≥ chi2) = exp(−chi2/2)", json_schema_extra={"example": 0.504})
    flagged: bool = Field(
        description="p_value below the service's drift threshold", json_schema_extra={"example": False}
    )
    as_found_rms: float | None = Field(
        description="RMS error of the previous calibration's line on this calibration's data",
        json_schema_extra={"example": 1.93},
    )
    as_left_rms: float | None = Field(
        description="RMS error of this calibration's line on its own data", json_schema_extra={"example": 1.75}
    )


class DecisionPoint(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.DECISION_POINT_EXAMPLE})
    t_u: float = Field(json_schema_extra={"example": 50.0})
    t_c: float = Field(json_schema_extra={"example": 10.4})
    error: float | None = Field(
        description="t_c − f_prev(t_u): the previous calibration's error as found at this point; null where "
        "f_prev has no finite value at t_u (outside its function's domain, e.g. a thermistor's at t_u ≤ 0, or "
        "past float's range): the point cannot be judged, and fails",
        json_schema_extra={"example": 0.3},
    )
    u: float | None = Field(
        description="sqrt(u_t_c² + u²(f_prev(t_u))): the new fit's stated u(t_c) (its residual SD where none was "
        "stated) and the previous calibration's standard uncertainty at t_u; null where it is not finite",
        json_schema_extra={"example": 0.12},
    )
    probability_of_conformity: float | None = Field(
        description="Φ((upper − error)/u) − Φ((lower − error)/u) (JCGM 106 7.3); null at a point that cannot be "
        "judged (error null, or u not a number)",
        json_schema_extra={"example": 0.9993},
    )
    verdict: Literal["pass", "conditional pass", "conditional fail", "fail"] = Field(
        json_schema_extra={"example": "pass"}
    )


class Decision(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.DECISION_EXAMPLE})
    points: list[DecisionPoint] = Field(
        description="one per point of this calibration, in its order",
        json_schema_extra={"example": examples.DECISION_EXAMPLE["points"]},
    )
    verdict: Literal["pass", "conditional pass", "conditional fail", "fail"] | None = Field(
        description="the worst point's, in the order pass < conditional pass < conditional fail < fail",
        json_schema_extra={"example": "conditional pass"},
    )


class CalibrationPublic(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.CALIBRATION_PUBLIC_EXAMPLE})
    fit_id: str
    calibrated_at: str = Field(description="when the fit's readings were submitted (its created_at)")
    model: ModelSpec = Field(
        json_schema_extra={"example": {"kind": "line"}}, description="the function this calibration fitted"
    )
    parameters: dict[str, float | None] = Field(
        description="its parameters in raw units by name (the line's w and b; a polynomial's a1 … a0; "
        "Callendar–Van Dusen's A, B, C, R0; Steinhart–Hart's b, c, a)",
        json_schema_extra={"example": {"w": 0.5367, "b": -17.3}},
    )
    standard_uncertainties: dict[str, float | None] = Field(
        description="each parameter's standard uncertainty (null where the data do not determine it)",
        json_schema_extra={"example": {"w": 0.0021, "b": 0.12}},
    )
    w_raw: float | None = Field(description="the line's slope in raw units (null for other models)")
    b_raw: float | None = Field(description="the line's intercept in raw units (null for other models)")
    se_w: float | None
    se_b: float | None
    cov_wb: float | None
    r2: float | None
    n_points: int
    converged: bool | None
    drift: Drift | None = Field(description="against the calibration before it; null for the first")
    decision: Decision | None = Field(
        None,
        json_schema_extra={"example": examples.DECISION_EXAMPLE},
        description="where the instrument has limits: the calibration before it judged as found at this one's "
        "points under the instrument's decision rule (ILAC G8); null for the first, or without limits",
    )


class InstrumentSummary(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.INSTRUMENT_SUMMARY_EXAMPLE})
    id: str
    calibrations: int
    current: CalibrationPublic | None
    tolerance: float | None = Field(description="the largest acceptable as-found RMS (PUT sets it)")
    limits: Limits | None = Field(
        None,
        description="the acceptable error of a reading, in t_c units (PUT sets it)",
        json_schema_extra={"example": examples.LIMITS_EXAMPLE},
    )
    decision_rule: Literal["simple", "guard_band"] = Field(
        "simple", description="how each point is judged against the limits", json_schema_extra={"example": "guard_band"}
    )
    coverage_factor: float = Field(2.0, description="k of the guard band w = k·u", json_schema_extra={"example": 2.0})
    verdict: Literal["pass", "conditional pass", "conditional fail", "fail"] | None = Field(
        None,
        description="the current calibration's decision's verdict; null without one",
        json_schema_extra={"example": "pass"},
    )
    next_due: str | None = Field(
        description="date (YYYY-MM-DD) when the linear trend of as-found RMS reaches the tolerance; null with "
        "fewer than 3 calibrations, no tolerance, or a trend that is flat or falling; past: overdue",
        json_schema_extra={"example": "2027-03-14"},
    )
    links: dict[str, str]


class InstrumentPublic(InstrumentSummary):
    model_config = ConfigDict(json_schema_extra={"example": examples.INSTRUMENT_PUBLIC_EXAMPLE})
    history: list[CalibrationPublic] = Field(
        description="its calibrations, newest first: a page of history_limit (100) of them"
    )
    history_next: str | None = Field(
        None,
        description="the next (older) page of the history; null on the last",
        json_schema_extra={"example": "/v1/instruments/TT-101?history_cursor=3f2c9a4e-8d1b-4c57-9e0a-5b7d2f6c1a88"},
    )


class InstrumentList(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.INSTRUMENT_LIST_EXAMPLE})
    items: list[InstrumentSummary] = Field(description="by id; each without its history (GET the instrument)")
    next: str | None


class Limits(BaseModel):
    """The acceptable error of a reading, lower < upper, in t_c units."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": examples.LIMITS_EXAMPLE})
    lower: Finite = Field(json_schema_extra={"example": -0.5})
    upper: Finite = Field(json_schema_extra={"example": 0.5}, description="greater than lower")

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if not self.lower < self.upper:
            raise PydanticCustomError(
                "limits",
                "upper ({upper}) must be greater than lower ({lower})",
                {"field": "upper", "lower": self.lower, "upper": self.upper},
            )
        return self


class InstrumentUpdate(BaseModel):
    """Each field left out stays as it is; null clears tolerance or limits."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": examples.INSTRUMENT_UPDATE_EXAMPLE})
    tolerance: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] | None = Field(
        None,
        json_schema_extra={"example": 0.5},
        description="the largest acceptable as-found RMS, in t_c's units; null clears it",
    )
    limits: Limits | None = Field(
        None,
        json_schema_extra={"example": examples.LIMITS_EXAMPLE},
        description="the acceptable error of a reading: from then on each calibration after the first carries "
        "a decision on the one before it as found; null clears them",
    )
    decision_rule: Literal["simple", "guard_band"] | None = Field(
        None,
        json_schema_extra={"example": "guard_band"},
        description='"simple" (ILAC G8 simple acceptance, the default) or "guard_band" (w = k·u)',
    )
    coverage_factor: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] | None = Field(
        None, json_schema_extra={"example": 2.0}, description="k of the guard band (default 2)"
    )


class WebhookAttemptPublic(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.WEBHOOK_ATTEMPT_PUBLIC_EXAMPLE})
    number: int = Field(json_schema_extra={"example": 1})
    started_at: str = Field(json_schema_extra={"example": "2026-11-27T23:00:05.120Z"})
    status_code: int | None = Field(
        description="the receiver's answer; null: none (a timeout, a refusal, or an attempt lost with its worker)",
        json_schema_extra={"example": 500},
    )
    error: str | None = Field(json_schema_extra={"example": "answered 500"})
    seconds: float | None = Field(json_schema_extra={"example": 0.021})


class WebhookDeliveryPublic(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.WEBHOOK_DELIVERY_PUBLIC_EXAMPLE})
    id: str = Field(
        description="also sent as the Calib-Delivery header",
        json_schema_extra={"example": "5b0c7e2a-1f3d-4c8e-9a6b-2d4f8e1c3a57"},
    )
    event: Literal["fit.ended", "batch.ended", "instrument.verdict"] = Field(
        json_schema_extra={"example": "batch.ended"},
        description='"instrument.verdict": a calibration found the one before it failing, or conditionally '
        "(its instrument's limits; sent to the fit's callback_url, or its batch's)",
    )
    subject_id: str = Field(
        description="the fit's or the batch's id (for instrument.verdict, the calibrating fit's)",
        json_schema_extra={"example": "9a1e7c3d-2b4f-4e8a-8c6d-1f0b5a7e3c92"},
    )
    url: str
    status: Literal["pending", "delivered", "failed"] = Field(
        description="failed: given up after retrying for CALIB_WEBHOOK_GIVE_UP_SECONDS (a day by default)",
        json_schema_extra={"example": "delivered"},
    )
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    attempts: list[WebhookAttemptPublic]


class WebhookDeliveryList(Served):
    model_config = ConfigDict(json_schema_extra={"example": examples.WEBHOOK_DELIVERY_LIST_EXAMPLE})
    items: list[WebhookDeliveryPublic] = Field(description="newest first")
    next: str | None


SCHEMAS: tuple[type[BaseModel], ...] = (
    FitOptions,
    FitCreate,
    FitPublic,
    FitPreflight,
    FitList,
    FitData,
    LossPage,
    LossBuckets,
    PredictRequest,
    Prediction,
    InverseRequest,
    Inverse,
    Problem,
    BatchCreate,
    BatchPublic,
    Usage,
    InstrumentPublic,
    InstrumentList,
    InstrumentUpdate,
    WebhookDeliveryList,
)
