"""Predictions of any model linear in its parameters, with their uncertainty, on vectors (numpy).

A reading's prediction is φ(t_u)ᵀθ, φ the model's design row (its features and the constant, the
order of shared/domain/least_squares.py). Its standard uncertainty by the GUM's law of propagation
(JCGM 100:2008, 5.1.2, first order) from the parameters' covariance V and the reading's own u(t_u):

    u²(t_c) = φᵀ V φ + (∂f/∂t_u)² u²(t_u)

and the interval for a new observation of ordinary least squares (what statsmodels calls obs_ci):
t_{(1+level)/2, n−p} · sqrt(s² + φᵀ V φ), s the residual SD and V = s²(XᵀX)⁻¹. For the book's line
that is t·s·sqrt(1 + 1/n + (t_u − mean)²/Sxx), shared/domain/calibration.predict's formula.
"""

from __future__ import annotations

import numpy as np

from shared.domain.calibration import student_t_quantile


def predicted(design: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(m, p) design rows, (p,) parameters: the m predictions."""
    found: np.ndarray = design @ theta
    return found


def standard_uncertainty(
    design: np.ndarray,
    covariance: np.ndarray,
    slope: np.ndarray | None = None,
    u_t_u: np.ndarray | float | None = None,
) -> np.ndarray:
    """u(t_c) of each prediction: the parameters' covariance propagated through the design rows, and
    where given, each reading's u(t_u) through the function's slope at it (∂f/∂t_u, (m,))."""
    variance = np.einsum("mi,ij,mj->m", design, covariance, design)
    if u_t_u is not None:
        if slope is None:
            raise ValueError("u(t_u) propagates through the slope of the function at each reading")
        variance = variance + np.square(slope) * np.square(u_t_u)
    found: np.ndarray = np.sqrt(variance)
    return found


def observation_interval(
    design: np.ndarray, theta: np.ndarray, covariance: np.ndarray, residual_sd: float, dof: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """The `level` interval for a new observation at each design row (ordinary least squares, with
    `covariance` scaled by the residual variance): lower and upper bounds."""
    centre = predicted(design, theta)
    t = student_t_quantile((1 + level) / 2, dof)
    half = t * np.sqrt(residual_sd**2 + np.square(standard_uncertainty(design, covariance)))
    return centre - half, centre + half
