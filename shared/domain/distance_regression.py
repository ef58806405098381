"""A straight line when both the readings and the reference values carry stated uncertainties:
generalized distance regression (ISO/TS 28037:2010, clause 7), numpy and scipy only.

With u(t_u) and u(t_c) per point, the line t_c = w·t_u + b minimizes the sum of squared distances of
the points from it, each coordinate in its own standard uncertainties; minimized over the points'
positions on the line, that sum is

    F(w, b) = Σ (t_c − w·t_u − b)² / (u²(t_c) + w²·u²(t_u)),

χ² with n − 2 degrees of freedom where the stated uncertainties are right. For a given slope the
intercept is the weighted mean's, so F is minimized over w alone (Brent's method from the weighted
least-squares slope) and then polished by Gauss–Newton on the residuals ρ_i = (t_c − w·t_u − b)/s_i,
s_i = sqrt(u²(t_c) + w²·u²(t_u)), whose Jacobian rows are −(t*_i, 1)/s_i with t*_i the point's foot
on the line. The covariance of (w, b) is (JᵀJ)⁻¹ at the solution, from the stated uncertainties and
not rescaled (ISO/TS 28037 7.3; what scipy's ODR reports as cov_beta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_POLISH = 8  # Gauss–Newton steps after Brent: quadratic convergence leaves nothing after a few


@dataclass(frozen=True)
class DistanceFit:
    """One fit's generalized distance regression; None where its data do not determine it."""

    w: float | None
    b: float | None
    covariance: np.ndarray | None  # (2, 2), (w, b) order
    chi2_obs: float | None
    dof: int
    weights: np.ndarray | None  # 1/s_i² at the solution: the loss's Gauss–Newton curvature
    residual_sd: float | None
    r2: float | None


def distance_regression(t_u: np.ndarray, t_c: np.ndarray, u_t_u: np.ndarray, u_t_c: np.ndarray) -> DistanceFit:
    """The line's generalized distance regression; not determined where the data or their stated
    uncertainties leave float64's range (the search fails there rather than return a wrong line)."""
    try:
        with np.errstate(all="ignore"):
            return _solve(t_u, t_c, u_t_u, u_t_c)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError, RuntimeError):
        return DistanceFit(None, None, None, None, len(t_u) - 2, None, None, None)


def _solve(t_u: np.ndarray, t_c: np.ndarray, u_t_u: np.ndarray, u_t_c: np.ndarray) -> DistanceFit:
    from scipy.optimize import minimize_scalar

    x, y = np.asarray(t_u, dtype=np.float64), np.asarray(t_c, dtype=np.float64)
    vx, vy = np.square(np.asarray(u_t_u, dtype=np.float64)), np.square(np.asarray(u_t_c, dtype=np.float64))
    n = len(x)
    undetermined = DistanceFit(None, None, None, None, n - 2, None, None, None)
    if n < 2 or not np.ptp(x) > 0:
        return undetermined

    def intercept(w: float) -> tuple[float, np.ndarray]:
        v = 1 / (vy + w * w * vx)
        return float(np.sum(v * (y - w * x)) / np.sum(v)), v

    def profile(w: float) -> float:
        b, v = intercept(w)
        return float(np.sum(v * np.square(y - w * x - b)))

    with np.errstate(all="ignore"):
        v0 = 1 / vy
        mx = np.sum(v0 * x) / np.sum(v0)
        start = float(np.sum(v0 * (x - mx) * y) / np.sum(v0 * np.square(x - mx)))
        if not math.isfinite(start):
            return undetermined
        step = max(abs(start), 1.0) * 0.1
        w = float(minimize_scalar(profile, bracket=(start - step, start + step), options={"xtol": 1e-12}).x)
        b, _ = intercept(w)
        jacobian = np.empty((n, 2))
        for _ in range(_POLISH):
            s = np.sqrt(vy + w * w * vx)
            residual = (y - w * x - b) / s
            foot = x + w * vx * residual / s  # each point's position on the line
            jacobian[:, 0], jacobian[:, 1] = -foot / s, -1 / s
            delta, *_ = np.linalg.lstsq(jacobian, -residual, rcond=None)
            w, b = w + float(delta[0]), b + float(delta[1])
        s2 = vy + w * w * vx
        residual = y - w * x - b
        foot = x + w * vx * residual / s2
        jacobian[:, 0], jacobian[:, 1] = -foot / np.sqrt(s2), -1 / np.sqrt(s2)
        normal = jacobian.T @ jacobian
        covariance = np.linalg.inv(normal) if np.linalg.cond(normal) < 1e14 else None
        chi2 = float(np.sum(np.square(residual) / s2))
        v = 1 / s2
        mean = np.sum(v * y) / np.sum(v)
        r2 = 1 - chi2 / float(np.sum(v * np.square(y - mean)))
        residual_sd = float(np.sqrt(np.sum(np.square(residual)) / (n - 2))) if n > 2 else None
    if not (math.isfinite(w) and math.isfinite(b) and math.isfinite(chi2)):
        return undetermined
    return DistanceFit(w, b, covariance, chi2, n - 2, v, residual_sd, r2 if math.isfinite(r2) else None)
