"""Drift between two calibrations of an instrument, read from the fits the store keeps.

Two lines' verdicts are computed from the figures each fit keeps of its data (the least-squares
line, the residual SD, t_u's mean and spread), never from the readings themselves: a batch of 10,000
line instruments gets its verdicts without loading 10,000 data blobs. Any other pair (a polynomial,
a transformed function, a change of model) reads the new fit's training points for its as-found and
as-left RMS, which are in t_c units whatever the function fits. The math is shared/domain/drift.py;
this module reads a fit as a calibration and gives a verdict its row.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from shared.domain.drift import chi2_of_difference, chi2_p_value, next_due, rms_of_line
from shared.domain.predictions import forward_of, line_covariance, line_variance, standard_uncertainty
from shared.store.models import Fit, raw_line, training_points

__all__ = ["Calibration", "Drift", "drift", "needs_readings", "next_due", "verdict_row"]


@dataclass(frozen=True)
class Calibration:
    """A succeeded fit of an instrument, as its history shows it: the fitted function in raw units with
    the least-squares uncertainty of its data, and that data's summary (for RMS errors of any line).
    A line keeps its (w_raw, b_raw) and standard errors; any other model (a polynomial, a transformed
    function) its coefficients and their covariance, in the engine's order (shared/domain/functions.py)."""

    fit_id: str
    calibrated_at: dt.datetime
    w_raw: float | None
    b_raw: float | None
    se_w: float | None
    se_b: float | None
    cov_wb: float | None
    r2: float | None
    n_points: int
    converged: bool | None
    # The training points' summary: n, the least-squares line, its residual SD, t_u's mean and Sxx.
    n_train: int
    w_opt: float | None
    b_opt: float | None
    residual_sd: float | None
    t_u_mean: float | None
    t_u_sxx: float | None
    # A model other than the line: its stored `model`, coefficients and their covariance (else None).
    model: dict[str, Any] | None = None
    coefficients: tuple[float, ...] | None = None
    coefficient_covariance: tuple[tuple[float, ...], ...] | None = None

    @classmethod
    def of(cls, fit: Fit | sa.Row[Any]) -> Calibration:
        """From a Fit, or a row of CALIBRATION_COLUMNS (thousands at a time, without ORM objects)."""
        raw = raw_line(fit.status, fit.w, fit.b, fit.input_scale, fit.input_shift)
        model, parameters, solution = (_column(fit, name) for name in ("model", "parameters", "solution"))
        assert raw is not None or model is not None, "a calibration is a succeeded fit"
        covariance = (solution or {}).get("covariance") if model is not None else None
        usable = covariance is not None and all(v is not None for row in covariance for v in row)
        return cls(
            fit_id=fit.id,
            calibrated_at=fit.created_at,
            w_raw=raw[0] if raw is not None else None,
            b_raw=raw[1] if raw is not None else None,
            se_w=fit.se_w,
            se_b=fit.se_b,
            cov_wb=fit.cov_wb,
            r2=fit.r2,
            n_points=fit.n_points,
            converged=fit.converged,
            n_train=training_points(fit.n_points, fit.validation),
            w_opt=fit.w_opt,
            b_opt=fit.b_opt,
            residual_sd=fit.residual_sd,
            t_u_mean=fit.t_u_mean,
            t_u_sxx=fit.t_u_sxx,
            model=model,
            coefficients=tuple(parameters["values"]) if model is not None and parameters else None,
            coefficient_covariance=tuple(tuple(row) for row in covariance) if usable and covariance else None,
        )

    def rms_of_line(self, w: float, b: float) -> float | None:
        """The RMS error of the line t_c = w·t_u + b on this calibration's training points
        (shared/domain/drift.rms_of_line). None where the data does not determine its least-squares
        line (t_u all equal)."""
        if self.w_opt is None or self.b_opt is None or self.t_u_mean is None or not self.t_u_sxx:
            return None
        return rms_of_line(self.n_train, self.residual_sd, self.t_u_mean, self.t_u_sxx, self.w_opt - w, self.b_opt - b)

    def parameters(self) -> np.ndarray:
        """The fitted function in raw units, as a vector: (w, b) for the line, else its coefficients."""
        if self.model is not None:
            return np.array(self.coefficients or (), dtype=np.float64)
        return np.array([self.w_raw, self.b_raw], dtype=np.float64)

    def covariance(self) -> np.ndarray | None:
        if self.model is not None:
            return None if self.coefficient_covariance is None else np.array(self.coefficient_covariance)
        if self.se_w is None or self.se_b is None or self.cov_wb is None:
            return None
        return line_covariance(self.se_w, self.se_b, self.cov_wb)

    def read(self, t_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What this calibration makes of readings: t_c, and its own standard uncertainty there (the
        parameters' covariance propagated; 0 where it has none)."""
        covariance = self.covariance()
        with np.errstate(all="ignore"):
            if self.model is None:
                assert self.w_raw is not None and self.b_raw is not None
                t_c = self.w_raw * t_u + self.b_raw
                u = np.zeros_like(t_u) if covariance is None else np.sqrt(line_variance(t_u, covariance))
                return t_c, u
            forward = forward_of(self.model)(self.parameters(), t_u)
            u = np.zeros_like(t_u) if covariance is None else standard_uncertainty(forward.d_coefficients, covariance)
            return forward.t_c, u

    def rms_on(self, t_u: np.ndarray, t_c: np.ndarray) -> float | None:
        """The RMS error of this calibration on readings (t_u, t_c), in t_c units."""
        if len(t_u) == 0:
            return None
        error = t_c - self.read(t_u)[0]
        value = float(np.sqrt(np.mean(error * error)))
        return value if math.isfinite(value) else None


def _column(fit: Fit | sa.Row[Any], name: str) -> Any:
    """A column a row may lack: migration 0014's backfill reads fits as they were before models."""
    try:
        return getattr(fit, name)
    except (AttributeError, KeyError):
        return None


@dataclass(frozen=True)
class Drift:
    chi2: float | None
    p_value: float | None
    flagged: bool
    as_found_rms: float | None
    as_left_rms: float | None


def verdict_row(fit_id: str, previous_id: str, found: Drift, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    """A verdict as a row of drift_verdicts (shared.store.models.DriftVerdict; flagged is not stored),
    with the conformity decision where the instrument has limits."""
    return {
        "fit_id": fit_id,
        "previous_id": previous_id,
        "chi2": found.chi2,
        "p_value": found.p_value,
        "as_found_rms": found.as_found_rms,
        "as_left_rms": found.as_left_rms,
        "decision": decision,
        "verdict": decision["verdict"] if decision is not None else None,
    }


def drift(
    previous: Calibration,
    new: Calibration,
    threshold: float,
    training: tuple[np.ndarray, np.ndarray] | None = None,
) -> Drift:
    """The new calibration against the one before it.

    chi² is the squared Mahalanobis distance of the parameter vectors' difference under the sum of
    the two covariance matrices: two independent estimates of one function differ by that much with
    probability p = P(χ²_p ≥ chi²), p the number of parameters (exp(−chi²/2) for the line).
    Flagged when p < threshold. chi² and p are null where a covariance is unknown (fewer than 3
    points), the sum is singular (both fits exact), or the two are not the same function (a line
    then a quadratic: a change of model, not a drift): no verdict, not flagged.
    as_found: how the previous function reads the new data; as_left: how the new one does. Two lines
    get them from the new fit's summary; any other pair from the new fit's training points
    (`training`, which the caller reads only for them)."""
    chi2 = None
    c_prev, c_new = previous.covariance(), new.covariance()
    if c_prev is not None and c_new is not None and previous.model == new.model:
        chi2 = chi2_of_difference(new.parameters() - previous.parameters(), c_prev + c_new)
    p_value = chi2_p_value(chi2, len(new.parameters())) if chi2 is not None else None
    if previous.model is None and new.model is None:
        assert previous.w_raw is not None and previous.b_raw is not None
        assert new.w_raw is not None and new.b_raw is not None
        as_found, as_left = new.rms_of_line(previous.w_raw, previous.b_raw), new.rms_of_line(new.w_raw, new.b_raw)
    elif training is not None:
        as_found, as_left = previous.rms_on(*training), new.rms_on(*training)
    else:
        as_found = as_left = None
    return Drift(
        chi2=chi2,
        p_value=p_value,
        flagged=p_value is not None and p_value < threshold,
        as_found_rms=as_found,
        as_left_rms=as_left,
    )


def needs_readings(previous: Calibration, new: Calibration) -> bool:
    """Whether drift() needs the new fit's training points (any pair but two lines)."""
    return previous.model is not None or new.model is not None
