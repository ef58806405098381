"""What a non-line model's data says before any epoch runs, computed once at submission (numpy).

The line keeps its own closed formulas (shared/domain/calibration.py), which every published figure
of calib was computed with. Any other kind linear in its parameters (a polynomial) gets here:
- the exact least squares in raw units, t_c ≈ Σ θ_j φ_j(t_u), by shared/domain/least_squares.py
  (ordinary least squares: the covariance from the residual variance over n − p, as statsmodels
  reports it), with R² and the residual SD; with stated uncertainties u(t_c), weighted least squares
  (weights 1/u²), the covariance from the stated uncertainties, not rescaled, and the χ² test
  (ISO/TS 28037 clause 6). The line with stated uncertainties is computed here too, as degree 1;
- the pre-flight of gradient descent in model space, x = (t_u − shift)·scale: the loss's Hessian is
  H = 2·E[φ(x)φ(x)ᵀ], stable below lr_max = 2/λ_max, fastest at 2/(λ_min + λ_max) (what
  `learning_rate: "auto"` picks), its condition number λ_max/λ_min;
- E[φ(t_u)φ(t_u)ᵀ] in raw units, so that the convergence verdict can measure a fit's excess loss
  Δθᵀ·G·Δθ where the standard uncertainties are 0 or undefined (shared/domain/convergence.py).

The features are the engine's, in its order (services/worker/engine/models.py): t_u, t_u², …, t_u^d,
then the constant.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.domain.distance_regression import distance_regression
from shared.domain.finite import finite_or_none
from shared.domain.functions import Function
from shared.domain.least_squares import RANK_RTOL, Solutions, chi2_test, solve


@dataclass(frozen=True)
class ModelStats:
    """One fit's figures; None where its data does not determine them."""

    names: tuple[str, ...]
    parameters_opt: list[float | None]
    covariance: list[list[float | None]] | None
    gram: list[list[float | None]]
    residual_sd: float | None
    r2: float | None
    lr_max: float | None
    lr_auto: float | None
    condition_number: float | None
    # With stated uncertainties: Σ r²/u², n − p, P(χ² ≥ chi2_obs), chi2_obs ≤ the 95 % quantile.
    chi2: dict[str, Any] | None = None
    response_var: float | None = None  # the variance of the fitted response (t_c, or a function's y)
    # Callendar–Van Dusen with stated u(t_c): the unweighted coefficients whose slope weighs it.
    weighting: list[float | None] | None = None

    def solution(self) -> dict[str, Any]:
        """The fit's `solution` column (shared/store/models.Fit)."""
        found: dict[str, Any] = {
            "names": list(self.names),
            "parameters_opt": self.parameters_opt,
            "covariance": self.covariance,
            "gram": self.gram,
        }
        if self.weighting is not None:
            found["weighting"] = self.weighting
        return found


def polynomial_design(t_u: np.ndarray, degree: int) -> np.ndarray:
    """(P, degree + 1): t_u, t_u², …, t_u^degree, then 1."""
    t = np.asarray(t_u, dtype=np.float64)
    return np.stack([*(t**k for k in range(1, degree + 1)), np.ones_like(t)], 1)


def polynomial_stats(
    t_u: Sequence[Sequence[float] | np.ndarray],
    t_c: Sequence[Sequence[float] | np.ndarray],
    degree: int,
    input_scale: Sequence[float],
    input_shift: Sequence[float],
    u_t_c: Sequence[Sequence[float] | np.ndarray] | None = None,
) -> list[ModelStats]:
    """Per fit, for polynomials of one degree; `u_t_c`: every fit's stated u(t_c) (weighted), or None."""
    counts = np.array([len(u) for u in t_u], dtype=np.int64)
    u = _joined(t_u)
    x = (u - np.repeat(np.asarray(input_shift, dtype=np.float64), counts)) * np.repeat(
        np.asarray(input_scale, dtype=np.float64), counts
    )
    names = (*(f"a{k}" for k in range(1, degree + 1)), "a0")
    with np.errstate(all="ignore"):
        raw, model = polynomial_design(u, degree), polynomial_design(x, degree)
    u_y = _joined(u_t_c) if u_t_c is not None else None
    return _linear_stats(names, raw, model, _joined(t_c), counts, u_y)


def function_stats(
    function: Function,
    t_u: Sequence[Sequence[float] | np.ndarray],
    t_c: Sequence[Sequence[float] | np.ndarray],
    input_scale: Sequence[float],
    input_shift: Sequence[float],
    u_t_c: Sequence[Sequence[float] | np.ndarray] | None = None,
) -> list[ModelStats]:
    """Per fit, for one transformed function (shared/domain/functions.py), in its coefficients: the
    least squares of its response on its features (weighted where u(t_c) is stated, by u(t_c) carried
    to the response), and gradient descent's pre-flight on Mᵀ·φ."""
    counts = np.array([len(u) for u in t_u], dtype=np.int64)
    u, c = _joined(t_u), _joined(t_c)
    with np.errstate(all="ignore"):
        v = function.regressor(u, c)
        shift = np.repeat(np.asarray(input_shift, dtype=np.float64), counts)
        scale = np.repeat(np.asarray(input_scale, dtype=np.float64), counts)
        raw, model = function.design(v), function.model_design(v, shift, scale)
        # Solved on the model-space design, whose columns are of like size, then mapped to the
        # coefficients: the raw design's columns (T … T⁴ for a PRT) span too many decades for one
        # rank tolerance. Least squares does not depend on how the function is parametrized.
        to_raw = function.raw_map(np.asarray(input_shift, dtype=np.float64), np.asarray(input_scale, dtype=np.float64))
        y = function.response(u, c)
        u_y, first = None, None
        if u_t_c is not None:
            if function.weighs_by_slope:
                first = _mapped(solve(model, y, counts), to_raw).parameters
            per_point = np.repeat(first, counts, axis=0) if first is not None else None
            u_y = function.response_uncertainty(u, c, _joined(u_t_c), per_point)
        found = _linear_stats(function.names, raw, model, y, counts, u_y, to_raw)
    if first is None:
        return found
    # The weights' slope, for the engine to weigh its loss with the same u(R).
    return [
        dataclasses.replace(stats, weighting=[finite_or_none(value) for value in row])
        for stats, row in zip(found, first, strict=True)
    ]


def distance_stats(
    t_u: np.ndarray, t_c: np.ndarray, u_t_u: np.ndarray, u_t_c: np.ndarray, input_scale: float, input_shift: float
) -> ModelStats:
    """One line's generalized distance regression (shared/domain/distance_regression.py) as the
    weighted line's figures: (w, b), their covariance and the χ² test from the stated uncertainties;
    the pre-flight from the loss's Gauss–Newton curvature at the solution, 2·Σ vφφᵀ / Σ 1/u²(t_c)
    (v = 1/(u²(t_c) + w²·u²(t_u)), φ = (x, 1) in model space): the loss is not quadratic in w, so
    lr_max is that of the neighbourhood of the solution."""
    found = distance_regression(t_u, t_c, u_t_u, u_t_c)
    determined = found.w is not None and found.b is not None
    lr_max = lr_auto = condition = None
    gram: list[list[float | None]] = [[None, None], [None, None]]
    if found.weights is not None:
        total = float(np.sum(1 / np.square(u_t_c)))
        x = (np.asarray(t_u, dtype=np.float64) - input_shift) * input_scale
        design = np.stack([x, np.ones_like(x)], 1)
        lr_max, lr_auto, condition = _preflight((design.T * found.weights) @ design / total)
        raw = np.stack([np.asarray(t_u, dtype=np.float64), np.ones_like(x)], 1)
        gram = [[finite_or_none(v) for v in row] for row in (raw.T * found.weights) @ raw / total]
    chi2 = None
    if determined and found.chi2_obs is not None and found.dof > 0:
        p, consistent = chi2_test(np.array([found.chi2_obs]), np.array([found.dof]))
        chi2 = {
            "chi2_obs": finite_or_none(found.chi2_obs),
            "chi2_dof": found.dof,
            "chi2_p": finite_or_none(p[0]),
            "consistent": bool(consistent[0]),
        }
    covariance = found.covariance if determined and found.dof > 0 else None
    return ModelStats(
        names=("a1", "a0"),
        parameters_opt=[found.w, found.b] if determined else [None, None],
        covariance=[[finite_or_none(v) for v in row] for row in covariance] if covariance is not None else None,
        gram=gram,
        residual_sd=found.residual_sd,
        r2=found.r2,
        lr_max=lr_max,
        lr_auto=lr_auto,
        condition_number=condition,
        chi2=chi2,
        response_var=finite_or_none(float(np.var(np.asarray(t_c, dtype=np.float64)))),
    )


def _joined(parts: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64) for v in parts])


def _linear_stats(
    names: tuple[str, ...],
    raw: np.ndarray,
    model: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
    u_y: np.ndarray | None,
    to_raw: np.ndarray | None = None,
) -> list[ModelStats]:
    """Per fit: least squares of y on the raw design (weighted by 1/u_y² when given), the Gram
    matrices of the raw and the model-space design, and the pre-flight. With `to_raw` (B, p, p), the
    least squares is solved on the model-space design and its parameters mapped by it."""
    with np.errstate(all="ignore"):
        found = solve(raw, y, counts, u_y) if to_raw is None else _mapped(solve(model, y, counts, u_y), to_raw)
        # The loss gradient descent minimizes is the weighted mean square: its Hessian is 2·E_w[φφᵀ].
        weights = None if u_y is None else 1 / np.square(u_y)
        model_gram = _mean_outer(model, counts, weights)
        raw_gram = _mean_outer(raw, counts, weights)
        # The fallback verdict's scale, Var(y) (shared/domain/convergence.Optimum.loss_scale).
        starts = np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.int64)
        centred = y - np.repeat(np.add.reduceat(y, starts) / counts, counts)
        response_var = np.add.reduceat(centred * centred, starts) / counts
    out = []
    for i in range(len(counts)):
        lr_max, lr_auto, condition = _preflight(model_gram[i])
        determined = bool(found.determined[i])
        covariance = found.covariance[i] if determined and found.dof[i] > 0 else None
        chi2 = (
            {
                "chi2_obs": finite_or_none(found.chi2_obs[i]),
                "chi2_dof": int(found.dof[i]),
                "chi2_p": finite_or_none(found.chi2_p[i]),
                "consistent": bool(found.consistent[i]),
            }
            if u_y is not None and determined
            else None
        )
        out.append(
            ModelStats(
                names=names,
                parameters_opt=[finite_or_none(v) if determined else None for v in found.parameters[i]],
                covariance=[[finite_or_none(v) for v in row] for row in covariance] if covariance is not None else None,
                gram=[[finite_or_none(v) for v in row] for row in raw_gram[i]],
                residual_sd=finite_or_none(found.residual_sd[i]) if determined else None,
                r2=finite_or_none(found.r2[i]) if determined else None,
                lr_max=lr_max,
                lr_auto=lr_auto,
                condition_number=condition,
                chi2=chi2,
                response_var=finite_or_none(response_var[i]),
            )
        )
    return out


def _mapped(found: Solutions, to_raw: np.ndarray) -> Solutions:
    """Model-space solutions in the coefficients θ = M·θ': the parameters mapped, the covariance M·Σ·Mᵀ."""
    return dataclasses.replace(
        found,
        parameters=np.einsum("bij,bj->bi", to_raw, found.parameters),
        covariance=np.einsum("bij,bjk,blk->bil", to_raw, found.covariance, to_raw),
    )


def _mean_outer(design: np.ndarray, counts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per fit, the (weighted) mean of φφᵀ over its points: (B, p, p), one pair of features at a time."""
    starts = np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.int64)
    w = np.ones(len(design)) if weights is None else weights
    total = np.add.reduceat(w, starts)
    p = design.shape[1]
    out = np.empty((len(counts), p, p))
    for i in range(p):
        for j in range(i, p):
            out[:, i, j] = out[:, j, i] = np.add.reduceat(w * design[:, i] * design[:, j], starts) / total
    return out


def _preflight(gram: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """lr_max, the "auto" rate and the condition number of H = 2·gram."""
    if not np.isfinite(gram).all():
        return None, None, None
    values = 2 * np.linalg.eigvalsh(gram)
    largest, smallest = float(values[-1]), float(values[0])
    if not largest > 0:
        return None, None, None
    singular = smallest <= RANK_RTOL * largest
    return (
        finite_or_none(2 / largest),
        finite_or_none(2 / (max(smallest, 0.0) + largest)),
        None if singular else finite_or_none(largest / smallest),
    )


def uncertainty_of(variance: float | None) -> float | None:
    """A standard uncertainty from a stored variance (None where there is none, or it is negative)."""
    return math.sqrt(variance) if variance is not None and variance >= 0 else None
