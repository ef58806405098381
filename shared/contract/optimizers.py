"""The optimizers a fit may ask for: one declaration each, its options with their defaults.

A fit names its optimizer either flat, as the first API did (`"optimizer": "adam", "betas": [...]`,
shared/schemas.FitOptions), or as one object, `"optimizer": {"kind": "adam", "betas": [...]}`,
the discriminated union below (`kind` picks the class, which generators read). Either way the
API stores the optimizer's name and its options resolved, defaults filled, as one JSON object
(`fits.optimizer_options`), and the worker hands that object to the update rule of the same name
(services/worker/engine/rules.py). So a new optimizer is a class here, added to `OptimizerSpec`,
and its rule there: no column, no migration.

Options mean what torch.optim means by them, and default to torch.optim's defaults (momentum,
which torch leaves at 0, to 0.9).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

Fraction = Annotated[float, Field(strict=True, ge=0, lt=1)]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]

DEFAULT_DELTA = 0.1


class _Optimizer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The update is p ← p − lr·g: the learning rate's stability limit (lr_max of the data's
    # Hessian) applies to it, so the pre-flight can say "stable" (shared/resolved.preflight).
    plain: ClassVar[bool] = False

    def options(self) -> dict[str, Any]:
        """The options as stored and served: every default filled, JSON-ready."""
        return self.model_dump(mode="json", exclude={"kind"})


class GD(_Optimizer):
    """The book's gradient descent, p ← p − lr·g, with the gradient taken the book's three ways:
    analytic (its grad_fn; the exact closed form runs it), loss.backward(), or the central
    difference with step `delta`. All three give the same fit."""

    plain: ClassVar[bool] = True
    kind: Literal["gd"] = Field(json_schema_extra={"example": "gd"})
    gradient: Literal["analytic", "autograd", "finite_difference"] = Field(
        "analytic", json_schema_extra={"example": "finite_difference"}
    )
    delta: Positive | None = Field(
        None, json_schema_extra={"example": 0.1}, description='gradient "finite_difference" only; default 0.1'
    )

    @model_validator(mode="after")
    def _delta_with_finite_difference(self) -> GD:
        if self.delta is not None and self.gradient != "finite_difference":
            raise PydanticCustomError(
                "option_mismatch", 'delta applies to gradient "finite_difference" only', {"field": "delta"}
            )
        return self

    def options(self) -> dict[str, Any]:
        if self.gradient == "finite_difference":
            return {"gradient": self.gradient, "delta": DEFAULT_DELTA if self.delta is None else self.delta}
        return {"gradient": self.gradient}


class SGD(_Optimizer):
    """torch.optim.SGD without momentum: p ← p − lr·g (full batch, so gd's update by autograd)."""

    plain: ClassVar[bool] = True
    kind: Literal["sgd"] = Field(json_schema_extra={"example": "sgd"})


class Momentum(_Optimizer):
    """torch.optim.SGD with momentum μ: buf ← g (first step), then μ·buf + g; p ← p − lr·buf."""

    kind: Literal["momentum"] = Field(json_schema_extra={"example": "momentum"})
    momentum: Fraction = Field(0.9, json_schema_extra={"example": 0.9})


class Adam(_Optimizer):
    """torch.optim.Adam: bias-corrected first and second moments of the gradient."""

    kind: Literal["adam"] = Field(json_schema_extra={"example": "adam"})
    betas: tuple[Fraction, Fraction] = Field((0.9, 0.999), json_schema_extra={"example": [0.9, 0.999]})
    eps: Positive = Field(1e-8, json_schema_extra={"example": 1e-8})


class RMSprop(_Optimizer):
    """torch.optim.RMSprop (not centered, no momentum): v ← α·v + (1 − α)·g²; p ← p − lr·g/(√v + eps)."""

    kind: Literal["rmsprop"] = Field(json_schema_extra={"example": "rmsprop"})
    alpha: Fraction = Field(0.99, json_schema_extra={"example": 0.99})
    eps: Positive = Field(1e-8, json_schema_extra={"example": 1e-8})


OptimizerSpec = Annotated[GD | SGD | Momentum | Adam | RMSprop, Field(discriminator="kind")]
# The names, in the order the document lists them (the flat form's enum too).
Name = Literal["gd", "sgd", "momentum", "adam", "rmsprop"]
# Each declaration by its kind, read off the union (tests/engine/test_rules.py: the same names as Name
# and as the engine's rules).
DECLARED: dict[str, type[_Optimizer]] = {
    get_args(cls.model_fields["kind"].annotation)[0]: cls for cls in get_args(get_args(OptimizerSpec)[0])
}

# The flat form's options (the first API's fields of a fit), each with the optimizer it belongs
# to; gradient and delta are gd's. An optimizer added later takes its options in the object form.
FLAT_OPTIONS = {"gradient": "gd", "delta": "gd", "momentum": "momentum", "betas": "adam", "eps": "adam"}


_SPEC: TypeAdapter[GD | SGD | Momentum | Adam | RMSprop] = TypeAdapter(OptimizerSpec)


def _either_form(value: Any, _handler: ValidatorFunctionWrapHandler) -> Any:
    """A name (the flat form) or an object whose kind picks its class: validated here rather than as
    a union, so an error names `optimizer` (or `optimizer.<option>`), not a branch of the union."""
    if isinstance(value, _Optimizer):
        return value
    if isinstance(value, str):
        if value in DECLARED:
            return value
        raise PydanticCustomError("optimizer", "an optimizer: one of {names}", {"names": ", ".join(DECLARED)})
    if isinstance(value, dict):
        kind = value.get("kind")
        if not isinstance(kind, str) or kind not in DECLARED:
            raise PydanticCustomError("optimizer_kind", "kind must be one of {names}", {"names": ", ".join(DECLARED)})
        return DECLARED[kind].model_validate(value)
    raise PydanticCustomError("optimizer", "an optimizer: a name, or an object with kind and its options")


# A fit's `optimizer` field: either form (shared/schemas.FitOptions), documented as the union.
EitherForm = Annotated[Name | OptimizerSpec, WrapValidator(_either_form)]


def is_plain(name: str) -> bool:
    return DECLARED[name].plain


def from_flat(name: str, given: dict[str, Any]) -> GD | SGD | Momentum | Adam | RMSprop:
    """The object form of a flat request: `given` holds the flat options that are set (not None)."""
    return _SPEC.validate_python({"kind": name, **given})


def options_of(name: str, **given: Any) -> dict[str, Any]:
    """The stored options of optimizer `name` with these options given, the rest defaulted."""
    return from_flat(name, given).options()
