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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.domain.least_squares import RANK_RTOL, solve


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

    def solution(self) -> dict[str, Any]:
        """The fit's `solution` column (shared/store/models.Fit)."""
        return {
            "names": list(self.names),
            "parameters_opt": self.parameters_opt,
            "covariance": self.covariance,
            "gram": self.gram,
        }


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
    u = np.concatenate([np.asarray(v, dtype=np.float64) for v in t_u])
    c = np.concatenate([np.asarray(v, dtype=np.float64) for v in t_c])
    u_y = np.concatenate([np.asarray(v, dtype=np.float64) for v in u_t_c]) if u_t_c is not None else None
    names = (*(f"a{k}" for k in range(1, degree + 1)), "a0")
    with np.errstate(all="ignore"):
        raw = polynomial_design(u, degree)
        found = solve(raw, c, counts, u_y)
        x = (u - np.repeat(np.asarray(input_shift, dtype=np.float64), counts)) * np.repeat(
            np.asarray(input_scale, dtype=np.float64), counts
        )
        # The loss gradient descent minimizes is the weighted mean square: its Hessian is 2·E_w[φφᵀ].
        weights = None if u_y is None else 1 / np.square(u_y)
        model_gram = _mean_outer(polynomial_design(x, degree), counts, weights)
        raw_gram = _mean_outer(raw, counts, weights)
    out = []
    for i in range(len(counts)):
        lr_max, lr_auto, condition = _preflight(model_gram[i])
        determined = bool(found.determined[i])
        covariance = found.covariance[i] if determined and found.dof[i] > 0 else None
        chi2 = (
            {
                "chi2_obs": _finite(found.chi2_obs[i]),
                "chi2_dof": int(found.dof[i]),
                "chi2_p": _finite(found.chi2_p[i]),
                "consistent": bool(found.consistent[i]),
            }
            if u_y is not None and determined
            else None
        )
        out.append(
            ModelStats(
                names=names,
                parameters_opt=[_finite(v) if determined else None for v in found.parameters[i]],
                covariance=[[_finite(v) for v in row] for row in covariance] if covariance is not None else None,
                gram=[[_finite(v) for v in row] for row in raw_gram[i]],
                residual_sd=_finite(found.residual_sd[i]) if determined else None,
                r2=_finite(found.r2[i]) if determined else None,
                lr_max=lr_max,
                lr_auto=lr_auto,
                condition_number=condition,
                chi2=chi2,
            )
        )
    return out


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
        _finite(2 / largest),
        _finite(2 / (max(smallest, 0.0) + largest)),
        None if singular else _finite(largest / smallest),
    )


def uncertainty_of(variance: float | None) -> float | None:
    """A standard uncertainty from a stored variance (None where there is none, or it is negative)."""
    return math.sqrt(variance) if variance is not None and variance >= 0 else None


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
