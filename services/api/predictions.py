"""Predictions on a fit's line, with their intervals and uncertainties: for a fit (POST
/v1/fits/{id}/predict) and for an instrument's calibration (POST /v1/instruments/{id}/predict),
which is a fit; and the inverse, the reading that gives a reference value (POST
/v1/fits/{id}/inverse), with its uncertainty (shared/domain/predictions.py for the formulas)."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.api.problems import Problem
from shared.contract.responses import serve
from shared.contract.schemas import Inverse, InverseRequest, Prediction, PredictRequest
from shared.domain import calibration
from shared.domain.predictions import (
    forward_interval,
    forward_of,
    forward_uncertainty,
    inverse_on_function,
    inverse_on_line,
    standard_uncertainty,
)
from shared.store.models import Fit


def prediction(fit: Fit, body: PredictRequest) -> dict[str, Any]:
    """The Prediction body for these readings on this fit's line; 409 where the fit cannot answer."""
    fit_id = fit.id
    if fit.model is not None:
        return _model_prediction(fit, body)
    raw = fit.raw_params()
    if raw is None:
        raise Problem(409, f"fit {fit_id} is {fit.status}: predictions need a succeeded fit", slug="not-succeeded")
    if body.interval is not None and fit.weighted:
        _no_interval_when_weighted(fit)
    spread = fit.prediction_spread() if body.interval is not None else None
    if body.interval is not None and spread is None:
        # The request is well formed; this fit's data cannot carry an interval: a conflict with
        # the fit, like an interval on a fit that has not converged.
        raise Problem(
            409,
            f"fit {fit_id} cannot give a prediction interval: it needs at least 3 points and t_u not all equal",
            slug="no-interval",
        )
    covariance = _covariance(fit) if body.u_t_u is not None else None
    unconverged = fit.converged is False
    if (body.interval is not None or body.u_t_u is not None) and unconverged and not body.allow_unconverged:
        _not_converged(fit, "its interval would not describe its line", "for bounds that include the gap")
    try:
        predicted = calibration.predict(*raw, body.t_u, interval=body.interval, spread=spread)
        optimum = (
            calibration.predict(fit.w_opt, fit.b_opt, body.t_u, interval=body.interval, spread=spread)
            if unconverged and body.interval is not None and fit.w_opt is not None and fit.b_opt is not None
            else None
        )
    except calibration.PredictionOutOfRange as out:
        # A reading any float64 allows, on this fit's line: a conflict with the fit (another
        # fit's line may map it fine), named like a field so the client sees which reading.
        raise Problem(
            409,
            f"t_u[{out.index}]: {out} on the line of fit {fit_id}",
            slug="prediction-out-of-range",
            errors=[{"loc": ["t_u", out.index], "msg": str(out)}],
        ) from None
    answer: dict[str, Any] = {"fit_id": fit.id, "t_c": predicted.t_c, "converged": fit.converged}
    if covariance is not None:  # u_t_u was given
        with np.errstate(over="ignore", invalid="ignore"):
            readings = np.asarray(body.t_u, dtype=np.float64)
            u_t_c = forward_uncertainty(readings, raw[0], covariance, np.asarray(body.u_t_u))
        answer["u_t_c"] = _finite_or_409(u_t_c, "t_u", fit_id)
    if optimum is not None and optimum.lower is not None and optimum.upper is not None:
        # Bounds around both lines: the least-squares prediction with its interval, and the fit's own
        # prediction with the same half-width, so the gap between the lines is inside them.
        lower = [min(lo, t - (c - lo)) for lo, c, t in zip(optimum.lower, optimum.t_c, predicted.t_c, strict=True)]
        upper = [max(up, t + (up - c)) for up, c, t in zip(optimum.upper, optimum.t_c, predicted.t_c, strict=True)]
        answer |= {"lower": lower, "upper": upper, "bounds_include_gap": True}
    elif predicted.lower is not None:
        answer |= {"lower": predicted.lower, "upper": predicted.upper}
    return serve(Prediction, answer)


# Why a fit of another model than the line gives no interval and no u_t_c, for predict and apply alike.
NO_COVARIANCE = (
    "has no covariance of its parameters (it needs more points than parameters): it cannot give an interval or u_t_c"
)
# Why a weighted fit gives no interval, for predict and apply alike.
WEIGHTED_NO_INTERVAL = (
    "was weighted by stated uncertainties (u_t_c): a new observation's interval depends on that "
    "observation's own uncertainty, which calib does not know; send u_t_u for u_t_c, the standard "
    "uncertainty of the calibration's value"
)


def _no_interval_when_weighted(fit: Fit) -> None:
    raise Problem(409, f"fit {fit.id} {WEIGHTED_NO_INTERVAL}", slug="no-interval")


def _model_prediction(fit: Fit, body: PredictRequest) -> dict[str, Any]:
    """A polynomial's or a transformed function's predictions (t_c from the reading; Callendar–Van
    Dusen inverted), the interval for a new observation and u(t_c) by the law of propagation
    (shared/domain/predictions.py), from the least-squares covariance stored at submission."""
    parameters, solution = (fit.parameters or {}).get("values"), fit.solution or {}
    if fit.status != "succeeded" or not parameters or any(v is None for v in parameters):
        raise Problem(409, f"fit {fit.id} is {fit.status}: predictions need a succeeded fit", slug="not-succeeded")
    covariance = fit.model_covariance()
    if body.interval is not None and fit.weighted:
        _no_interval_when_weighted(fit)
    if (body.interval is not None or body.u_t_u is not None) and covariance is None:
        raise Problem(
            409,
            f"fit {fit.id} {NO_COVARIANCE}",
            slug="no-uncertainty",
        )
    if (body.interval is not None or body.u_t_u is not None) and fit.converged is False and not body.allow_unconverged:
        _not_converged(fit, "its interval would not describe its curve", "for bounds that include the gap")
    readings = np.asarray(body.t_u, dtype=np.float64)
    theta = np.asarray(parameters, dtype=np.float64)
    assert fit.model is not None, "the line's predictions are prediction()'s own"
    forward = forward_of(fit.model)
    with np.errstate(over="ignore", invalid="ignore"):
        own = forward(theta, readings)
        answer: dict[str, Any] = {
            "fit_id": fit.id,
            "t_c": _finite_or_409(own.t_c, "t_u", fit.id),
            "converged": fit.converged,
        }
        if body.u_t_u is not None and covariance is not None:
            u = standard_uncertainty(own.d_coefficients, covariance, own.d_t_u, np.asarray(body.u_t_u))
            answer["u_t_c"] = _finite_or_409(u, "t_u", fit.id)
        if body.interval is not None and covariance is not None and fit.residual_sd is not None:
            at_opt = forward(np.asarray(solution["parameters_opt"], dtype=np.float64), readings)
            lower, upper = forward_interval(
                at_opt, covariance, fit.residual_sd, fit.n_train - len(theta), body.interval
            )
            # Around the least-squares curve, widened to hold the fit's own prediction with the same
            # half-width where it has not reached it (as for the line).
            gap, centre = fit.converged is False, at_opt.t_c
            answer |= {
                "lower": _finite_or_409(np.minimum(lower, own.t_c - (centre - lower)) if gap else lower, "t_u", fit.id),
                "upper": _finite_or_409(np.maximum(upper, own.t_c + (upper - centre)) if gap else upper, "t_u", fit.id),
                **({"bounds_include_gap": True} if gap else {}),
            }
    return serve(Prediction, answer)


def inverse(fit: Fit, body: InverseRequest, readings: np.ndarray | None = None) -> dict[str, Any]:
    """The Inverse body: the reading that gives each reference value on this fit's line, with its
    uncertainty where the fit has a covariance; 409 where the fit cannot answer."""
    if fit.model is not None:
        assert readings is not None, "another model's inverse searches the range of the fit's readings"
        return _model_inverse(fit, body, readings)
    raw = fit.raw_params()
    if raw is None:
        raise Problem(409, f"fit {fit.id} is {fit.status}: readings need a succeeded fit", slug="not-succeeded")
    if fit.converged is False and not body.allow_unconverged:
        _not_converged(fit, "the readings would be its line's, not the calibration's", "for them anyway")
    w, b = raw
    if w == 0:
        raise Problem(
            409,
            f"fit {fit.id}'s line is flat (w_raw = 0): no reading gives t_c[0], or every one does",
            slug="no-reading",
            errors=[{"loc": ["t_c", 0], "msg": "no single reading gives this value on a flat line"}],
        )
    t_c = np.asarray(body.t_c, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        given = np.asarray(body.u_t_c if body.u_t_c is not None else 0.0)
        t_u, u_t_u = inverse_on_line(t_c, w, b, fit.covariance(), given)
    answer = {
        "fit_id": fit.id,
        "t_u": _finite_or_409(t_u, "t_c", fit.id),
        "u_t_u": _finite_or_409(u_t_u, "t_c", fit.id) if u_t_u is not None else None,
        "converged": fit.converged,
    }
    return serve(Inverse, answer)


def _model_inverse(fit: Fit, body: InverseRequest, readings: np.ndarray) -> dict[str, Any]:
    """Any other model's inverse: the one reading in the range of the fit's own readings that gives
    each reference value (shared/domain/predictions.inverse_on_function); a value with none, or
    several, is a 409 naming it."""
    assert fit.model is not None
    parameters = (fit.parameters or {}).get("values")
    if fit.status != "succeeded" or not parameters or any(v is None for v in parameters):
        raise Problem(409, f"fit {fit.id} is {fit.status}: readings need a succeeded fit", slug="not-succeeded")
    if fit.converged is False and not body.allow_unconverged:
        _not_converged(fit, "the readings would be its curve's, not the calibration's", "for them anyway")
    covariance = fit.model_covariance()
    found = inverse_on_function(
        forward_of(fit.model),
        np.asarray(parameters, dtype=np.float64),
        covariance,
        np.asarray(body.t_c, dtype=np.float64),
        np.asarray(body.u_t_c if body.u_t_c is not None else 0.0),
        float(readings.min()),
        float(readings.max()),
    )
    errors = [{"loc": ["t_c", i], "msg": why} for i, why in enumerate(found.problems) if why is not None]
    if errors:
        first = errors[0]
        raise Problem(
            409,
            f"t_c[{first['loc'][1]}]: {first['msg']} on the {fit.model['kind']} of fit {fit.id}",
            slug="no-reading",
            errors=errors,
        )
    answer = {
        "fit_id": fit.id,
        "t_u": _finite_or_409(found.t_u, "t_c", fit.id),
        "u_t_u": _finite_or_409(found.u_t_u, "t_c", fit.id) if found.u_t_u is not None else None,
        "converged": fit.converged,
    }
    return serve(Inverse, answer)


def _covariance(fit: Fit) -> np.ndarray:
    """The fit's parameters' covariance; 409 without one (fewer than 3 points, or t_u all equal)."""
    found = fit.covariance()
    if found is not None:
        return found
    raise Problem(
        409,
        f"fit {fit.id} has no covariance of its parameters (it needs at least 3 points and t_u not all "
        "equal): it cannot give u_t_c",
        slug="no-uncertainty",
    )


def _not_converged(fit: Fit, why: str, allowed: str) -> None:
    by_name = (fit.parameters or {}).get("gap_se") or []
    names = (fit.solution or {}).get("names") or []
    if fit.gap_se_w is not None and fit.gap_se_b is not None:
        gap = f"{fit.gap_se_w:+.3g} SE in w, {fit.gap_se_b:+.3g} SE in b"
    elif by_name and None not in by_name:
        gap = ", ".join(f"{value:+.3g} SE in {name}" for name, value in zip(names, by_name, strict=True))
    elif fit.excess_loss is not None:
        gap = f"excess loss {fit.excess_loss:.3g}"
    else:  # stored as null: past float64's range
        gap = "an excess loss past float64's range"
    raise Problem(
        409,
        f"fit {fit.id} has not converged ({gap} from the least-squares line): {why}; run it to "
        f'convergence (epochs "auto"), or send allow_unconverged: true {allowed}',
        slug="not-converged",
    )


def _finite_or_409(values: np.ndarray, name: str, fit_id: str) -> list[float]:
    """The values as a list; the first that is not a finite number is 409 naming its value's place:
    NaN where the fit's function has no value there (a Callendar–Van Dusen curve past its turning
    point, a thermistor's at t_u ≤ 0), infinite past float64's range."""
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        index = int(bad[0])
        if np.isnan(values[index]):
            message = "the fit's function has no value there (outside its domain)"
        else:
            message = "its answer is outside the range of a 64-bit float"
        raise Problem(
            409,
            f"{name}[{index}]: {message} (fit {fit_id})",
            slug="prediction-out-of-range",
            errors=[{"loc": [name, index], "msg": message}],
        )
    found: list[float] = values.tolist()
    return found
