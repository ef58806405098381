"""What schemathesis is told about fit requests beyond what JSON Schema can say.

The OpenAPI document states as structure every rule a client generator reads (bounds,
patterns, validation's two forms as oneOf, input_scale not 0 as anyOf). The rest it says in
prose, and the API refuses a request that breaks them with a 422 naming the field: the options
that go together (issue 23: `if`/`then` and `not` made openapi-python-client drop FitCreate), and
the rules that relate one value to another's length or content, which JSON Schema cannot say.
Here each generated *schema-valid* (positive) fit request is brought within them, so
that schemathesis's positive_data_acceptance check tests the rest of the request instead of
tripping on these every time. Negative cases are left exactly as generated, and no check is
switched off or narrowed.

The rules, each with the repair made:
- t_c has one value per t_u: t_c is cut to, or repeated up to, the length of t_u;
- a list of uncertainties has one per value (`u_t_u` per t_u in a prediction or a fit, `u_t_c` per
  t_c in an inverse or a fit): it is cut to, or repeated up to, that length (an empty one becomes one
  number for all: 0, or 1 for a fit's stated uncertainties, which are > 0);
- a validation split names existing points, holds out at least one and leaves at least two
  to train on: otherwise it becomes `{"indices": [0]}` (or is dropped below three points,
  with an early stopping on `val_loss` dropped with it);
- normalize "standardize" needs training t_u with a spread float64 can hold: otherwise
  normalize becomes "none";
- an option that applies only beside another's value (FitOptions' description) is set to null
  (or its neutral value) where that value is not given; in a batch, on each fit merged with the
  defaults;
- an optimizer given as an object (`{"kind": "gd", ...}`) takes `delta` with gradient
  "finite_difference" only: otherwise its delta is dropped;
- a polynomial of degree d needs at least d + 1 training points: its degree is lowered to the
  training points less one;
- a fit's u_t_u (generalized distance regression) goes with u_t_c, on a line: otherwise it is set
  to null;
- Callendar–Van Dusen and Steinhart–Hart take resistances > 0 (each t_u becomes |t_u| + 1) and
  temperatures in their range (t_c is clipped to −200…850 °C, or above −273 °C), and 3 training
  points (4 for Callendar–Van Dusen with one below 0 °C): with fewer, the model becomes the line;
- an instrument's limits have lower < upper: they are swapped, or set one either side of an equal
  value.

- POST /v1/apply reads readings of the tenant's calibrated instruments (another name is a 422
  naming its row, as API.md asks): each generated reading is put on the one instrument the
  stack calibrated before the run, its value kept.
One repair is about time, not validity: a generated `?wait=S` (up to 60 s) on a fit or batch
that the fuzzer's own million-epoch fits keep running would hold the request for S seconds,
past schemathesis's 10 s request timeout, and the run for many minutes. Requests wait at
most one second, in any case whose S is within range; the answer's body is the same as with any S
(tests/api/test_waiting.py and tests/e2e/test_waiting.py wait up to 60 s). An S out of range
(a negative case's point) is left as generated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import schemathesis
from schemathesis.generation.modes import GenerationMode

from shared.domain.splits import choose_indices

# Options that apply only when another option has a given value (shared/contract/schemas.py,
# FitOptions' validators), with the value that makes them not apply.
_ONLY_WITH: list[tuple[str, Any, str, Any]] = [
    ("input_scale", 1.0, "normalize", "scale"),
    ("delta", None, "gradient", "finite_difference"),
    ("momentum", None, "optimizer", "momentum"),
    ("betas", None, "optimizer", "adam"),
    ("eps", None, "optimizer", "adam"),
    ("max_epochs", None, "epochs", "auto"),
]
# Seconds a positive case's `?wait=` is held to (see the docstring).
_LONGEST_WAIT = 1.0
_DEFAULTS = {"normalize": "scale", "gradient": "analytic", "optimizer": "gd", "epochs": 5000, "input_scale": 1.0}


def _value(merged: dict[str, Any], name: str) -> Any:
    value = merged.get(name)
    return _DEFAULTS.get(name) if value is None else value


def _pair(fit: dict[str, Any], values: str = "t_u", paired: str = "t_c") -> None:
    given, each = fit.get(values), fit.get(paired)
    if isinstance(given, list) and isinstance(each, list) and each and len(given) != len(each):
        fit[paired] = (each * (len(given) // len(each) + 1))[: len(given)]


def _one_uncertainty_per_value(body: dict[str, Any], values: str, uncertainties: str, empty: float = 0.0) -> None:
    if body.get(uncertainties) == []:
        body[uncertainties] = empty
    _pair(body, values, uncertainties)


def _held_out(validation: dict[str, Any], n: int) -> list[int] | None:
    """The indices this split holds out, or None when it is not a usable split of n points."""
    if validation.get("indices") is not None:
        indices = validation["indices"]
        usable = all(0 <= i < n for i in indices) and n - len(set(indices)) >= 2
        return sorted(indices) if usable else None
    fraction = validation.get("fraction")
    if fraction is None:
        return None
    held = choose_indices(n, fraction, int(validation.get("seed") or 0))
    return held if held and n - len(held) >= 2 else None


def _split(fit: dict[str, Any], merged: dict[str, Any]) -> list[int]:
    validation, n = merged.get("validation"), len(fit["t_u"])
    if not isinstance(validation, dict):
        return []
    held = _held_out(validation, n)
    if held is not None:
        return held
    if n >= 3:
        fit["validation"] = {"indices": [0]}
        return [0]
    fit["validation"] = None
    stopping = merged.get("early_stopping")
    if isinstance(stopping, dict) and stopping.get("monitor") == "val_loss":
        fit["early_stopping"] = None
    return []


def _spread(fit: dict[str, Any], merged: dict[str, Any], held: list[int]) -> None:
    if _value(merged, "normalize") != "standardize":
        return
    # What normalize acts on: t_u, or a transformed function's regressor (shared/domain/functions.py).
    kind = (merged.get("model") or {}).get("kind") if isinstance(merged.get("model"), dict) else None
    values = fit["t_c"] if kind == "callendar_van_dusen" else fit["t_u"]
    training = np.delete(np.asarray(values, dtype=np.float64), held)
    with np.errstate(all="ignore"):
        if kind == "steinhart_hart":
            training = np.log(training)
        mean, sd = float(training.mean()), float(training.std())
        scale = 1 / sd if sd > 0 else math.inf
    if not (math.isfinite(mean) and math.isfinite(scale) and scale > 0):
        fit["normalize"] = "none"


def _options_that_apply(fit: dict[str, Any], defaults: dict[str, Any]) -> None:
    merged = {**defaults, **fit}
    for option, neutral, needs, value in _ONLY_WITH:
        given = merged.get(option)
        if given is not None and given != neutral and _value(merged, needs) != value:
            fit[option] = neutral
    if _value(merged, "optimizer") != "gd" and _value(merged, "gradient") != "analytic":
        fit["gradient"] = "analytic"
        if merged.get("delta") is not None:
            fit["delta"] = None
    stopping = {**defaults, **fit}.get("early_stopping")
    if isinstance(stopping, dict) and stopping.get("monitor") == "val_loss" and not merged.get("validation"):
        fit["early_stopping"] = None


def _optimizer_object(body: dict[str, Any]) -> None:
    optimizer = body.get("optimizer")
    if isinstance(optimizer, dict) and "delta" in optimizer and optimizer.get("gradient") != "finite_difference":
        body["optimizer"] = {name: value for name, value in optimizer.items() if name != "delta"}


def _model_within_its_points(fit: dict[str, Any], defaults: dict[str, Any], held: list[int]) -> None:
    model = {**defaults, **fit}.get("model")
    if not isinstance(model, dict) or model.get("kind") != "polynomial":
        return
    training = len(fit["t_u"]) - len(held)  # at least 2: the split leaves two
    degree = model.get("degree")
    # A degree may come as 3 or 3.0 (JSON Schema's integers both).
    if isinstance(degree, int | float) and not isinstance(degree, bool) and degree >= training:
        fit["model"] = {"kind": "polynomial", "degree": training - 1}


# The functions fitted after a change of variables: their domain of t_c, and the fewest points.
_FUNCTIONS = {"callendar_van_dusen": (-200.0, 850.0), "steinhart_hart": (-273.0, math.inf)}


def _within_the_functions_domain(fit: dict[str, Any], defaults: dict[str, Any], held: list[int]) -> None:
    model = {**defaults, **fit}.get("model")
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind not in _FUNCTIONS:
        return
    lowest, highest = _FUNCTIONS[kind]
    fit["t_u"] = [abs(r) + 1.0 for r in fit["t_u"]]
    fit["t_c"] = [min(max(t, lowest), highest) for t in fit["t_c"]]
    training_t_c = np.delete(np.asarray(fit["t_c"], dtype=np.float64), held)
    needed = 4 if kind == "callendar_van_dusen" and (training_t_c < 0).any() else 3
    if len(training_t_c) < needed:
        fit["model"] = {"kind": "line"}


def _readings_uncertain_on_a_line_only(fit: dict[str, Any], defaults: dict[str, Any]) -> None:
    model = {**defaults, **fit}.get("model")
    on_a_line = model is None or (isinstance(model, dict) and model.get("kind") == "line")
    if fit.get("u_t_u") is not None and (fit.get("u_t_c") is None or not on_a_line):
        fit["u_t_u"] = None


def _repair(fit: dict[str, Any], defaults: dict[str, Any]) -> None:
    if not isinstance(fit.get("t_u"), list) or not isinstance(fit.get("t_c"), list):
        return
    _optimizer_object(fit)
    _optimizer_object(defaults)
    _options_that_apply(fit, defaults)
    _pair(fit)
    _one_uncertainty_per_value(fit, "t_c", "u_t_c", 1.0)
    _one_uncertainty_per_value(fit, "t_u", "u_t_u")
    held = _split(fit, {**defaults, **fit})
    _within_the_functions_domain(fit, defaults, held)
    _spread(fit, {**defaults, **fit}, held)
    _model_within_its_points(fit, defaults, held)
    _readings_uncertain_on_a_line_only(fit, defaults)


# The instrument the schemathesis stack calibrates before the run (tests/e2e/test_schemathesis.py).
CALIBRATED = "TT-101"


def _readings_of_the_calibrated_instrument(body: str) -> str:
    """Every reading of a generated CSV, on the instrument the stack has calibrated."""
    lines = body.splitlines(keepends=True)
    return lines[0] + "".join(CALIBRATED + line[line.index(",") :] for line in lines[1:] if "," in line)


def _seconds(wait: Any) -> float | None:
    """A generated wait as a number: a number, or (the stateful phase's links, a query string) a text
    that reads as one; None for anything else, which stays as generated."""
    if isinstance(wait, bool):
        return None
    if isinstance(wait, int | float):
        return float(wait)
    if isinstance(wait, str):
        try:
            found = float(wait)
        except ValueError:
            return None
        return found if math.isfinite(found) else None
    return None


def _shorter_wait(operation: str | None, case: Any) -> None:
    """A fit's or a batch's `?wait=S` within range held to _LONGEST_WAIT (the docstring). Any case (a
    negative one may be negative in another parameter): an out-of-range S stays as generated."""
    if operation in ("getFit", "getBatch") and isinstance(case.query, dict):
        wait = _seconds(case.query.get("wait"))
        if wait is not None and _LONGEST_WAIT < wait <= 60:
            case.query["wait"] = _LONGEST_WAIT


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    operation = _operation_id(context)
    _shorter_wait(operation, case)
    meta = getattr(case, "_meta", None)
    if meta is not None and meta.generation.mode == GenerationMode.POSITIVE:
        _within_the_rules(operation, case)
    return case


@schemathesis.hook
def before_add_examples(context: Any, examples: list[Any]) -> None:
    """The examples phase's cases (the document's examples put together, one property's with
    another's) are valid requests by intent: brought within the same rules."""
    for case in examples:
        # The document's example wait (30 s) on a batch still running held the request past
        # schemathesis's 10 s timeout (one CI run, on a loaded machine): held to 1 s as any wait is.
        _shorter_wait(_operation_id(context), case)
        _within_the_rules(_operation_id(context), case)


def _operation_id(context: Any) -> str | None:
    return context.operation.definition.raw.get("operationId") if context.operation else None


def _ordered_limits(body: dict[str, Any]) -> None:
    limits = body.get("limits")
    if not isinstance(limits, dict):
        return
    lower, upper = limits.get("lower"), limits.get("upper")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lower, upper))
    if numbers and not lower < upper:
        # Swapped, or around an equal value: a limit one wide either side.
        body["limits"] = {"lower": upper, "upper": lower} if upper < lower else {"lower": lower - 1, "upper": lower + 1}


def _within_the_rules(operation: str | None, case: Any) -> None:
    if operation == "apply" and isinstance(case.body, str):
        case.body = _readings_of_the_calibrated_instrument(case.body)
        return
    if not isinstance(case.body, dict):
        return
    body = case.body
    if operation in ("createFit", "preflightFit"):  # the pre-flight takes a fit's body
        _repair(body, {})
    elif operation in ("predict", "predictInstrument"):
        _one_uncertainty_per_value(body, "t_u", "u_t_u")
    elif operation == "inverse":
        _one_uncertainty_per_value(body, "t_c", "u_t_c")
    elif operation == "updateInstrument":
        _ordered_limits(body)
    elif operation == "createBatch" and isinstance(body.get("fits"), list):
        defaults = body.get("defaults") if isinstance(body.get("defaults"), dict) else {}
        _optimizer_object(defaults)
        _options_that_apply(defaults, {})  # the defaults are validated alone too
        for fit in body["fits"]:
            if isinstance(fit, dict):
                _repair(fit, defaults)
    case.body = body
