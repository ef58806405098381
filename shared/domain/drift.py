"""Drift between two calibrations, and the trend that says when the next one is due: the math, on
parameter vectors (numpy only; shared/store/drift.py reads the calibrations these figures need).

Two independent estimates of one calibration function, θ_a with covariance V_a and θ_b with V_b,
differ by Δ = θ_b − θ_a; under the hypothesis that the function did not move, Δᵀ(V_a + V_b)⁻¹Δ
follows χ² with as many degrees of freedom as parameters. For the book's line (two parameters)
the inverse is written out and the survival function of χ²₂ is exactly exp(−χ²/2): the figures
every stored verdict was computed with.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np


def chi2_of_difference(delta: np.ndarray, covariance: np.ndarray) -> float | None:
    """Δᵀ V⁻¹ Δ for V the sum of the two covariances; None where V is singular or a figure is not
    finite (no verdict)."""
    if delta.shape == (2,):
        det = covariance[0, 0] * covariance[1, 1] - covariance[0, 1] ** 2
        if not (det > 0 and math.isfinite(det)):
            return None
        dw, db = float(delta[0]), float(delta[1])
        value = (covariance[1, 1] * dw * dw - 2 * covariance[0, 1] * dw * db + covariance[0, 0] * db * db) / det
        return float(value) if math.isfinite(value) else None
    if not (np.isfinite(covariance).all() and np.isfinite(delta).all()):
        return None
    try:
        factor = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:  # not positive definite: singular (exact fits) or not a covariance
        return None
    solved = np.linalg.solve(factor, delta)
    value = float(solved @ solved)
    return value if math.isfinite(value) else None


def chi2_p_value(chi2: float, dof: int) -> float:
    """P(χ²_dof ≥ chi2): exp(−chi2/2) exactly for 2 degrees of freedom, scipy's otherwise (imported
    here: it costs every process that imports it a quarter of a second)."""
    if dof == 2:
        return math.exp(-chi2 / 2)
    from scipy.special import chdtrc

    return float(chdtrc(dof, chi2))


def rms_of_line(
    n: int, residual_sd: float | None, t_u_mean: float, t_u_sxx: float, dw: float, db: float
) -> float | None:
    """The RMS error, on a fit's n training points, of a line that differs from their least-squares
    line by (dw, db) = optimum − line.

    The least-squares residuals are orthogonal to 1 and to t_u, so Σ(t_c − w·t_u − b)² =
    SSE_opt + n·(dw·mean + db)² + dw²·Sxx, exactly, from the fit's summary alone."""
    if n == 2:
        sse_opt = 0.0  # two points: the least-squares line goes through both
    elif residual_sd is not None:
        sse_opt = residual_sd * residual_sd * (n - 2)
    else:
        return None
    # Products, not ** 2: Python's power raises OverflowError past float's range, a product is inf.
    offset = dw * t_u_mean + db
    sse = sse_opt + n * offset * offset + dw * dw * t_u_sxx
    return math.sqrt(sse / n) if math.isfinite(sse) else None


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
