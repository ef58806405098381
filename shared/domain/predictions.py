"""Predictions of any model linear in its parameters, with their uncertainty, on vectors (numpy).

A reading's prediction is φ(t_u)ᵀθ, φ the model's design row (its features and the constant, the
order of shared/domain/least_squares.py). Its standard uncertainty by the GUM's law of propagation
(JCGM 100:2008, 5.1.2, first order) from the parameters' covariance V and the reading's own u(t_u):

    u²(t_c) = φᵀ V φ + (∂f/∂t_u)² u²(t_u)

and the interval for a new observation of ordinary least squares (what statsmodels calls obs_ci):
t_{(1+level)/2, n−p} · sqrt(s² + φᵀ V φ), s the residual SD and V = s²(XᵀX)⁻¹. For the book's line
that is t·s·sqrt(1 + 1/n + (t_u − mean)²/Sxx), shared/domain/calibration.predict's formula.

A function fitted after a change of variables (Callendar–Van Dusen, Steinhart–Hart: shared/domain/
functions.py) is the same with φ replaced by ∂t_c/∂θ at the reading, and s carried from its fitted
response to t_c by ∂t_c/∂y (first order: the delta method, what GUM 5.1.2 states).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.domain.calibration import student_t_quantile
from shared.domain.functions import Forward, function_of
from shared.domain.model_stats import polynomial_design


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


def polynomial_forward(theta: np.ndarray, t_u: np.ndarray) -> Forward:
    """A polynomial's predictions at the readings t_u and their derivatives (shared/domain/functions.Forward):
    to the coefficients (the design row), to t_u (Σ k·a_k·t_u^(k−1)) and to the response (1)."""
    degree = len(theta) - 1
    design = polynomial_design(t_u, degree)
    # ∂f/∂t_u: the design's columns t_u^(k−1) are the ones before t_u^k.
    slope = sum((k * theta[k - 1] * t_u ** (k - 1) for k in range(1, degree + 1)), np.zeros_like(t_u))
    return Forward(design @ theta, design, slope, np.ones_like(t_u))


def forward_of(stored_model: dict[str, Any]) -> Callable[[np.ndarray, np.ndarray], Forward]:
    """How a fit of this stored `model` (not the line) predicts t_c from readings, in its coefficients."""
    function = function_of(stored_model)
    return function.forward if function is not None else polynomial_forward


def curve(
    stored_model: dict[str, Any], coefficients: Sequence[float], t_u: np.ndarray, points: int = 97
) -> list[list[float]]:
    """[t_u, t_c] pairs of the fitted function across the readings' range, for a chart (no point that
    float64 cannot hold, where a function has no value)."""
    if len(t_u) == 0:
        return []
    across = np.linspace(float(np.min(t_u)), float(np.max(t_u)), points)
    with np.errstate(all="ignore"):
        values = forward_of(stored_model)(np.asarray(coefficients, dtype=np.float64), across).t_c
    return [[float(u), float(c)] for u, c in zip(across, values, strict=True) if math.isfinite(c)]


# Readings tried across the data's range to find where a function crosses a reference value; each
# crossing is then refined in its cell by Newton's method, which a smooth function's few steps take
# to float64's resolution.
_INVERSE_GRID = 4097
_NEWTON_STEPS = 6


@dataclass(frozen=True)
class Inverted:
    """The reading that gives each reference value, its standard uncertainty (None without a
    covariance), and for each value with no reading, or several, in the range: why (else None)."""

    t_u: np.ndarray
    u_t_u: np.ndarray | None
    problems: list[str | None]


def inverse_on_function(
    forward: Callable[[np.ndarray, np.ndarray], Forward],
    coefficients: np.ndarray,
    covariance: np.ndarray | None,
    t_c: np.ndarray,
    u_t_c: np.ndarray | float,
    low: float,
    high: float,
) -> Inverted:
    """Any model's inverse within the readings' range [low, high]: where f(t_u) = t_c has exactly one
    solution there, that reading; its uncertainty by the GUM's law for the implicit function
    f(t_u; θ) = t_c, u²(t_u) = [u²(t_c) + ∂_θfᵀ·V·∂_θf] / (∂f/∂t_u)² (for the line, ISO/TS 28037's x
    from y). The function on a grid of the range splits into monotone runs; each run holds a value at
    most once (a binary search finds its cell), and every value is then refined in its cell at once
    (the chord, then Newton's steps): a million values cost a search each and a few calls of the
    function in all, not a loop a value."""
    targets = np.asarray(t_c, dtype=np.float64)
    grid = np.linspace(low, high, _INVERSE_GRID)
    with np.errstate(all="ignore"):
        along = forward(coefficients, grid).t_c
    count = np.zeros(len(targets), dtype=np.int64)
    left = np.zeros(len(targets), dtype=np.int64)
    if np.isfinite(along).all():
        for start, end in _monotone_runs(along):
            values = along[start : end + 1]
            rising = values[-1] >= values[0]
            ordered = values if rising else values[::-1]
            # A run after the first starts where the one before ended: that value is the other's.
            lowest = ordered[0] if start == 0 or not rising else np.nextafter(ordered[0], np.inf)
            highest = ordered[-1] if start == 0 or rising else np.nextafter(ordered[-1], -np.inf)
            inside = (targets >= lowest) & (targets <= highest)
            cell = np.clip(np.searchsorted(ordered, targets[inside]) - 1, 0, len(values) - 2)
            count[inside] += 1
            left[inside] = start + (cell if rising else len(values) - 2 - cell)
    one = count == 1
    found = np.full(len(targets), np.nan)
    if one.any():
        # In its cell, from the chord between the cell's ends, then Newton's steps on f'(t_u).
        cell, wanted = left[one], targets[one]
        lo, hi, f_lo, f_hi = grid[cell], grid[cell + 1], along[cell], along[cell + 1]
        with np.errstate(all="ignore"):
            x = np.clip(lo + (wanted - f_lo) / (f_hi - f_lo) * (hi - lo), lo, hi)
            x = np.where(np.isfinite(x), x, lo)
            for _ in range(_NEWTON_STEPS):
                at = forward(coefficients, x)
                step = (at.t_c - wanted) / at.d_t_u
                x = np.clip(x - np.where(np.isfinite(step), step, 0.0), lo, hi)
        found[one] = x
    span = f"[{low:.6g}, {high:.6g}]"
    problems: list[str | None] = [
        None
        if n == 1
        else f"no reading in the data's range {span} gives it"
        if n == 0
        else f"{n} readings in the data's range {span} give it"
        for n in count.tolist()
    ]
    if covariance is None:
        return Inverted(found, None, problems)
    with np.errstate(all="ignore"):
        at = forward(coefficients, np.where(np.isnan(found), low, found))
        variance = np.square(u_t_c) + np.square(standard_uncertainty(at.d_coefficients, covariance))
        u_t_u = np.where(np.isnan(found), np.nan, np.sqrt(variance) / np.abs(at.d_t_u))
    return Inverted(found, u_t_u, problems)


def _monotone_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) grid indices of each run over which the values only rise or only fall; a run
    ends where the next starts (at a turning point)."""
    direction = np.sign(np.diff(values))
    moving = np.flatnonzero(direction != 0)
    turns = moving[1:][direction[moving[1:]] != direction[moving[:-1]]]
    bounds = [0, *turns.tolist(), len(values) - 1]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def forward_interval(
    at_opt: Forward, covariance: np.ndarray, residual_sd: float, dof: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """The `level` interval for a new observation's t_c, around the least-squares function's
    prediction (`at_opt`): t·sqrt(∂ᵀΣ∂ + (∂t_c/∂y·s)²), the residual scatter s carried from the
    fitted response to t_c through the function's slope (first order; exact for a polynomial)."""
    t = student_t_quantile((1 + level) / 2, dof)
    spread = np.square(at_opt.d_response * residual_sd) + np.square(
        standard_uncertainty(at_opt.d_coefficients, covariance)
    )
    half = t * np.sqrt(spread)
    return at_opt.t_c - half, at_opt.t_c + half


def line_covariance(se_w: float, se_b: float, cov_wb: float) -> np.ndarray:
    """A line's parameters' covariance in (w, b) order, from their standard uncertainties."""
    return np.array([[se_w * se_w, cov_wb], [cov_wb, se_b * se_b]])


def line_variance(t_u: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """φᵀVφ at each reading, φ = (t_u, 1): V one (2, 2) covariance, or one per reading (m, 2, 2)."""
    v = np.asarray(covariance)
    found: np.ndarray = v[..., 1, 1] + t_u * t_u * v[..., 0, 0] + 2 * t_u * v[..., 0, 1]
    return found


def forward_uncertainty(
    t_u: np.ndarray, w: np.ndarray | float, covariance: np.ndarray, u_t_u: np.ndarray | float = 0.0
) -> np.ndarray:
    """u(t_c) of w·t_u + b at each reading (GUM, first order; ISO/TS 28037's forward evaluation):
    u²(t_c) = u²(b) + t_u²·u²(w) + 2·t_u·cov(w, b) + w²·u²(t_u). `w` and `covariance` one line's,
    or one per reading (m,) and (m, 2, 2)."""
    variance = line_variance(t_u, covariance) + np.square(w * np.asarray(u_t_u))
    found: np.ndarray = np.sqrt(np.maximum(variance, 0.0))  # ≥ 0 but for rounding
    return found


def inverse_on_line(
    t_c: np.ndarray, w: float, b: float, covariance: np.ndarray | None, u_t_c: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """The reading that gives each reference value on the line, t_u = (t_c − b)/w, and its standard
    uncertainty (ISO/TS 28037's prediction of x from y, the GUM's law for the implicit function):
    u²(t_u) = [u²(t_c) + u²(b) + t_u²·u²(w) + 2·t_u·cov(w, b)] / w²; None without a covariance."""
    t_u = (t_c - b) / w
    if covariance is None:
        return t_u, None
    variance = np.square(u_t_c) + line_variance(t_u, covariance)
    u_t_u: np.ndarray = np.sqrt(np.maximum(variance, 0.0)) / abs(w)
    return t_u, u_t_u
