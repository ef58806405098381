"""Drift between two calibrations of an instrument, and when its next calibration is due.

Everything here is computed from the figures each fit keeps of its data (the least-squares line,
the residual SD, t_u's mean and spread), never from the readings themselves: a batch of 10,000
instruments gets its verdicts without loading 10,000 data blobs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from shared.store.models import Fit, raw_line, training_points


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
        """The RMS error of the line t_c = w·t_u + b on this calibration's training points.

        The least-squares residuals r are orthogonal to 1 and to t_u, so for any line
        Σ(t_c − w·t_u − b)² = SSE_opt + n·(Δw·mean + Δb)² + Δw²·Sxx, with Δ = optimum − line:
        exact, and no reading needs to be loaded. None where the data does not determine its
        least-squares line (t_u all equal)."""
        if self.w_opt is None or self.b_opt is None or self.t_u_mean is None or not self.t_u_sxx:
            return None
        n = self.n_train
        if n == 2:
            sse_opt = 0.0  # two points: the least-squares line goes through both
        elif self.residual_sd is not None:
            sse_opt = self.residual_sd**2 * (n - 2)
        else:
            return None
        dw, db = self.w_opt - w, self.b_opt - b
        sse = sse_opt + n * (dw * self.t_u_mean + db) ** 2 + dw * dw * self.t_u_sxx
        return math.sqrt(sse / n) if math.isfinite(sse) else None

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


def verdict_row(fit_id: str, previous_id: str, found: Drift) -> dict[str, Any]:
    """A verdict as a row of drift_verdicts (shared.store.models.DriftVerdict; flagged is not stored)."""
    return {
        "fit_id": fit_id,
        "previous_id": previous_id,
        "chi2": found.chi2,
        "p_value": found.p_value,
        "as_found_rms": found.as_found_rms,
        "as_left_rms": found.as_left_rms,
    }


def drift(previous: Calibration, new: Calibration, threshold: float) -> Drift:
    """The new calibration against the one before it.

    chi² is the squared Mahalanobis distance of (Δw_raw, Δb_raw) under the sum of the two
    covariance matrices: two independent estimates of one line differ by that much with
    probability p = P(χ²₂ ≥ chi²) = exp(−chi²/2) (the survival function of χ² with 2 degrees of
    freedom, exactly). Flagged when p < threshold. chi² and p are null where a covariance is
    unknown (fewer than 3 points) or the sum is singular (both fits exact): no verdict, not flagged.
    as_found: how the previous line reads the new data; as_left: how the new line does."""
    chi2 = None
    c_prev, c_new = previous.covariance(), new.covariance()
    if c_prev is not None and c_new is not None:
        s = c_prev + c_new
        det = s[0, 0] * s[1, 1] - s[0, 1] ** 2
        dw, db = new.w_raw - previous.w_raw, new.b_raw - previous.b_raw
        if det > 0 and math.isfinite(det):
            value = (s[1, 1] * dw * dw - 2 * s[0, 1] * dw * db + s[0, 0] * db * db) / det
            chi2 = float(value) if math.isfinite(value) else None
    p_value = math.exp(-chi2 / 2) if chi2 is not None else None
    return Drift(
        chi2=chi2,
        p_value=p_value,
        flagged=p_value is not None and p_value < threshold,
        as_found_rms=new.rms_of_line(previous.w_raw, previous.b_raw),
        as_left_rms=new.rms_of_line(new.w_raw, new.b_raw),
    )


def next_due(
    calibrations: int, as_found: Sequence[tuple[dt.datetime, float]], tolerance: float | None
) -> dt.date | None:
    """When the least-squares trend of as-found RMS over time reaches the tolerance (the variables-
    data method of calibration interval analysis, in its simplest, linear form): with 3 or more
    calibrations and a tolerance. `as_found`: (calibrated at, as-found RMS) of those with one, in
    any order. None while the trend is flat or falling (never reached). A date in the past means
    the instrument is overdue."""
    if tolerance is None or calibrations < 3:
        return None
    points = [(moment.timestamp(), rms) for moment, rms in as_found]
    if len(points) < 2:
        return None
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    t0 = t.mean()
    sxx = float(((t - t0) ** 2).sum())
    if sxx == 0:
        return None
    slope = float(((t - t0) * (y - y.mean())).sum()) / sxx
    if not slope > 0:
        return None
    reached = t0 + (tolerance - float(y.mean())) / slope
    try:
        return dt.datetime.fromtimestamp(reached, dt.UTC).date()
    except (OverflowError, OSError, ValueError):
        return None  # centuries away: not a date worth planning
