"""Drift between two calibrations of an instrument, read from the fits the store keeps.

Everything here is computed from the figures each fit keeps of its data (the least-squares line,
the residual SD, t_u's mean and spread), never from the readings themselves: a batch of 10,000
instruments gets its verdicts without loading 10,000 data blobs. The math is shared/domain/drift.py;
this module reads a fit as a calibration and gives a verdict its row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from shared.domain.drift import chi2_of_difference, chi2_p_value, next_due, rms_of_line
from shared.store.models import Fit, raw_line, training_points

__all__ = ["Calibration", "Drift", "drift", "next_due", "verdict_row"]


@dataclass(frozen=True)
class Calibration:
    """A succeeded fit of an instrument, as its history shows it: the fitted line in raw units with
    the least-squares uncertainty of its data, and that data's summary (for RMS errors of any line)."""

    fit_id: str
    calibrated_at: dt.datetime
    w_raw: float
    b_raw: float
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

    @classmethod
    def of(cls, fit: Fit | sa.Row[Any]) -> Calibration:
        """From a Fit, or a row of CALIBRATION_COLUMNS (thousands at a time, without ORM objects)."""
        raw = raw_line(fit.status, fit.w, fit.b, fit.input_scale, fit.input_shift)
        assert raw is not None, "a calibration is a succeeded fit"
        return cls(
            fit_id=fit.id,
            calibrated_at=fit.created_at,
            w_raw=raw[0],
            b_raw=raw[1],
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
        )

    def rms_of_line(self, w: float, b: float) -> float | None:
        """The RMS error of the line t_c = w·t_u + b on this calibration's training points
        (shared/domain/drift.rms_of_line). None where the data does not determine its least-squares
        line (t_u all equal)."""
        if self.w_opt is None or self.b_opt is None or self.t_u_mean is None or not self.t_u_sxx:
            return None
        return rms_of_line(self.n_train, self.residual_sd, self.t_u_mean, self.t_u_sxx, self.w_opt - w, self.b_opt - b)

    def parameters(self) -> np.ndarray:
        """The fitted function in raw units, as a vector: (w, b) for the line."""
        return np.array([self.w_raw, self.b_raw])

    def covariance(self) -> np.ndarray | None:
        if self.se_w is None or self.se_b is None or self.cov_wb is None:
            return None
        return np.array([[self.se_w**2, self.cov_wb], [self.cov_wb, self.se_b**2]])


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


def drift(previous: Calibration, new: Calibration, threshold: float) -> Drift:
    """The new calibration against the one before it.

    chi² is the squared Mahalanobis distance of the parameter vectors' difference under the sum of
    the two covariance matrices: two independent estimates of one function differ by that much with
    probability p = P(χ²_p ≥ chi²), p the number of parameters (exp(−chi²/2) for the line).
    Flagged when p < threshold. chi² and p are null where a covariance is unknown (fewer than 3
    points) or the sum is singular (both fits exact): no verdict, not flagged.
    as_found: how the previous line reads the new data; as_left: how the new line does."""
    chi2 = None
    c_prev, c_new = previous.covariance(), new.covariance()
    if c_prev is not None and c_new is not None:
        chi2 = chi2_of_difference(new.parameters() - previous.parameters(), c_prev + c_new)
    p_value = chi2_p_value(chi2, len(new.parameters())) if chi2 is not None else None
    return Drift(
        chi2=chi2,
        p_value=p_value,
        flagged=p_value is not None and p_value < threshold,
        as_found_rms=new.rms_of_line(previous.w_raw, previous.b_raw),
        as_left_rms=new.rms_of_line(new.w_raw, new.b_raw),
    )
