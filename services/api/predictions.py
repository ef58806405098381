"""Predictions on a fit's line, with their intervals: for a fit (POST /v1/fits/{id}/predict) and
for an instrument's calibration (POST /v1/instruments/{id}/predict), which is a fit."""

from __future__ import annotations

from typing import Any

from services.api.problems import Problem
from shared.contract.responses import serve
from shared.contract.schemas import Prediction, PredictRequest
from shared.domain import calibration
from shared.store.models import Fit


def prediction(fit: Fit, body: PredictRequest) -> dict[str, Any]:
    """The Prediction body for these readings on this fit's line; 409 where the fit cannot answer."""
    fit_id = fit.id
    raw = fit.raw_params()
    if raw is None:
        raise Problem(409, f"fit {fit_id} is {fit.status}: predictions need a succeeded fit", slug="not-succeeded")
    spread = fit.prediction_spread() if body.interval is not None else None
    if body.interval is not None and spread is None:
        # The request is well formed; this fit's data cannot carry an interval: a conflict with
        # the fit, like an interval on a fit that has not converged.
        raise Problem(
            409,
            f"fit {fit_id} cannot give a prediction interval: it needs at least 3 points and t_u not all equal",
            slug="no-interval",
        )
    unconverged = fit.converged is False
    if body.interval is not None and unconverged and not body.allow_unconverged:
        gap = (
            f"{fit.gap_se_w:+.3g} SE in w, {fit.gap_se_b:+.3g} SE in b"
            if fit.gap_se_w is not None and fit.gap_se_b is not None
            else f"excess loss {fit.excess_loss:.3g}"
        )
        raise Problem(
            409,
            f"fit {fit_id} has not converged ({gap} from the least-squares line): its interval would "
            'not describe its line; run it to convergence (epochs "auto"), or send '
            "allow_unconverged: true for bounds that include the gap",
            slug="not-converged",
        )
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
    if optimum is not None and optimum.lower is not None and optimum.upper is not None:
        # Bounds around both lines: the least-squares prediction with its interval, and the fit's own
        # prediction with the same half-width, so the gap between the lines is inside them.
        lower = [min(lo, t - (c - lo)) for lo, c, t in zip(optimum.lower, optimum.t_c, predicted.t_c, strict=True)]
        upper = [max(up, t + (up - c)) for up, c, t in zip(optimum.upper, optimum.t_c, predicted.t_c, strict=True)]
        answer |= {"lower": lower, "upper": upper, "bounds_include_gap": True}
    elif predicted.lower is not None:
        answer |= {"lower": predicted.lower, "upper": predicted.upper}
    return serve(Prediction, answer)
