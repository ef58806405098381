"""Calibration-grade statistics of a fit's data, computed once at submission (numpy, float64).

- The stability pre-flight: gradient descent on the mean squared error of
  t_c ≈ w·x + b, with x = input_scale·t_u, has the constant Hessian
  H = 2·[[mean(x²), mean(x)], [mean(x), 1]]. It is stable for learning rates below
  lr_max = 2/λ_max(H); 2/(λ_min + λ_max) is the fastest rate (it minimises the
  slowest contraction), which `learning_rate: "auto"` picks; λ_max/λ_min is the
  condition number.
- The exact least-squares line in raw units, with the usual OLS standard errors
  and covariance (residual variance over n − 2), R², the residual SD, and what a
  prediction interval needs (mean of t_u, its sum of squared deviations).

Batches are computed in one vectorised pass (np.add.reduceat over the concatenated
points), so 10,000 fits cost milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.domain.finite import finite_or_none


@dataclass(frozen=True)
class DataStats:
    """Per fit, in raw units except where named. None where the data does not determine a value."""

    lr_max: float | None  # model space: the largest stable learning rate
    lr_auto: float | None  # model space: 2 / (λ_min + λ_max)
    condition_number: float | None  # model space; None when the Hessian is singular
    w_opt: float | None
    b_opt: float | None
    se_w: float | None
    se_b: float | None
    cov_wb: float | None
    r2: float | None
    residual_sd: float | None
    t_u_mean: float
    t_u_sxx: float  # sum of (t_u - mean)², for prediction intervals
    # Var(t_c), or mean(t_c)² where all t_c are equal: the convergence rule's scale where the
    # standard errors are 0 or undefined (shared/domain/convergence.py).
    t_c_var: float | None = None


# A fit's readings: as the request gave them, or as numpy arrays once split.
Values = Sequence[float] | np.ndarray


def data_stats(
    t_u: Sequence[Values],
    t_c: Sequence[Values],
    input_scale: Sequence[float],
    input_shift: Sequence[float] | None = None,
) -> list[DataStats]:
    """Per fit; the model sees x = (t_u - input_shift) * input_scale."""
    n = np.array([len(u) for u in t_u], dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(n[:-1])]).astype(np.int64)
    u = np.concatenate([np.asarray(v, dtype=np.float64) for v in t_u])
    c = np.concatenate([np.asarray(v, dtype=np.float64) for v in t_c])
    scale = np.asarray(input_scale, dtype=np.float64)
    shift = np.zeros_like(scale) if input_shift is None else np.asarray(input_shift, dtype=np.float64)

    # Data near float64's limits overflows below (squares past 1e308): those figures come out
    # inf or nan, and finite_or_none reports them as None rather than warn on every request.
    with np.errstate(all="ignore"):
        return _stats(u, c, n, starts, scale, shift)


def _stats(
    u: np.ndarray, c: np.ndarray, n: np.ndarray, starts: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> list[DataStats]:
    mean_u = np.add.reduceat(u, starts) / n
    mean_c = np.add.reduceat(c, starts) / n
    # Deviations from each fit's mean before squaring: the textbook one-pass sums
    # lose digits when the mean is large against the spread (t_u around 50 here).
    du = u - np.repeat(mean_u, n.astype(np.int64))
    dc = c - np.repeat(mean_c, n.astype(np.int64))
    sxx = np.add.reduceat(du * du, starts)
    sxy = np.add.reduceat(du * dc, starts)
    syy = np.add.reduceat(dc * dc, starts)

    # The Hessian in model space, x = scale·(t_u − shift): 2·[[E x², E x], [E x, 1]].
    ex = scale * (mean_u - shift)
    ex2 = scale**2 * (sxx / n + (mean_u - shift) ** 2)
    half_trace = (ex2 + 1) / 2
    spread = np.sqrt(((ex2 - 1) / 2) ** 2 + ex**2)
    lam_max = 2 * (half_trace + spread)
    lam_min = 2 * np.maximum(ex2 - ex**2, 0) / (half_trace + spread)  # det / λ_max: no cancellation

    w_opt = sxy / sxx
    b_opt = mean_c - w_opt * mean_u
    sse = np.maximum(syy - w_opt * sxy, 0)
    s2 = sse / (n - 2)
    se_w = np.sqrt(s2 / sxx)
    se_b = np.sqrt(s2 * (1 / n + mean_u**2 / sxx))
    cov_wb = -mean_u * s2 / sxx
    r2 = 1 - sse / syy
    lr_max = 2 / lam_max
    lr_auto = 2 / (lam_min + lam_max)
    condition = lam_max / lam_min

    out = []
    for i in range(len(n)):
        determined = sxx[i] > 0
        dof = n[i] > 2 and determined
        out.append(
            DataStats(
                lr_max=finite_or_none(lr_max[i]),
                lr_auto=finite_or_none(lr_auto[i]),
                condition_number=finite_or_none(condition[i]) if determined else None,
                w_opt=finite_or_none(w_opt[i]) if determined else None,
                b_opt=finite_or_none(b_opt[i]) if determined else None,
                se_w=finite_or_none(se_w[i]) if dof else None,
                se_b=finite_or_none(se_b[i]) if dof else None,
                cov_wb=finite_or_none(cov_wb[i]) if dof else None,
                r2=finite_or_none(r2[i]) if determined and syy[i] > 0 else None,
                residual_sd=finite_or_none(math.sqrt(s2[i])) if dof else None,
                t_u_mean=float(mean_u[i]),
                t_u_sxx=float(sxx[i]),
                t_c_var=finite_or_none(syy[i] / n[i] if syy[i] > 0 else mean_c[i] ** 2),
            )
        )
    return out


# Past this, the slowest direction of gradient descent contracts by less than 1 - 2/κ per
# epoch even at the best rate: thousands of epochs for each factor e. (The raw thermometer
# data has κ ≈ 3.4e4; scaled by 0.1 it has κ ≈ 336.)
ILL_CONDITIONED = 1e3


def warnings_for(stats: DataStats, learning_rate: float, model_determined: bool | None = None) -> list[str]:
    """What a user should know before the fit runs. `model_determined`: for a model other than the
    unweighted line, whether its data determine its least-squares parameters (None: the line's figures)."""
    notes = []
    if model_determined is not None:
        if not model_determined:
            notes.append(
                "the data do not determine the model's least-squares parameters (too few distinct points, "
                "or values too large or too small for float64 to square)"
            )
    elif stats.t_u_sxx == 0:
        notes.append("all t_u are equal: the slope is not determined by the data")
    elif stats.w_opt is None:
        notes.append(
            "t_u and t_c are too large or too small for float64 to square: the least-squares line "
            "is not determined; rescale them toward unit size"
        )
    if stats.lr_max is not None and learning_rate >= stats.lr_max:
        notes.append(
            f"learning_rate {learning_rate:g} exceeds the stable limit {stats.lr_max:.2g}: this fit will diverge"
        )
    if stats.condition_number is not None and stats.condition_number > ILL_CONDITIONED:
        notes.append(
            f"condition number {stats.condition_number:.2g}: gradient descent converges slowly "
            "along the flattest direction; scaling t_u (input_scale) toward unit size helps"
        )
    return notes


def student_t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with `dof` degrees of freedom: scipy's inverse of the t CDF
    (what scipy.stats.t.ppf computes), exact to the last digits at every p and dof, where a
    hand-written bracket once gave narrow intervals. Imported here, on the first interval asked
    for: scipy costs every process that imports it a quarter of a second, and most never need it."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, p))


class PredictionOutOfRange(ValueError):
    """A prediction (or its interval) past float64's range; `index` is its reading's place."""

    def __init__(self, index: int) -> None:
        super().__init__("its prediction is outside the range of a 64-bit float")
        self.index = index


@dataclass(frozen=True)
class Prediction:
    t_c: list[float]
    lower: list[float] | None = None
    upper: list[float] | None = None


@dataclass(frozen=True)
class Spread:
    """What a prediction interval needs of the n training points: the residual SD and t_u's moments."""

    n: int
    residual_sd: float
    t_u_mean: float
    t_u_sxx: float


def predict(
    w: float, b: float, t_u: Sequence[float], *, interval: float | None = None, spread: Spread | None = None
) -> Prediction:
    """t_c = w·t_u + b in raw units, with the OLS prediction interval for a new reading
    centred on this line when `interval` is given: t·s·sqrt(1 + 1/n + (t_u - mean)²/Sxx),
    t from Student's t with n - 2 dof."""
    u = np.asarray(t_u, dtype=np.float64)
    # Readings near float64's limit overflow to infinity, which JSON cannot carry: the
    # first such reading is reported by its index rather than answered.
    with np.errstate(over="ignore", invalid="ignore"):
        t_c = w * u + b
        bounds: tuple[np.ndarray, np.ndarray] | None = None
        if interval is not None:
            assert spread is not None and spread.n > 2 and spread.t_u_sxx > 0
            t = student_t_quantile((1 + interval) / 2, spread.n - 2)
            d = u - spread.t_u_mean
            half = t * spread.residual_sd * np.sqrt(1 + 1 / spread.n + d * d / spread.t_u_sxx)
            bounds = (t_c - half, t_c + half)
        finite = np.isfinite(t_c)
        for bound in bounds or ():
            finite &= np.isfinite(bound)
    if not finite.all():
        raise PredictionOutOfRange(int(np.argmin(finite)))
    if bounds is None:
        return Prediction(t_c.tolist())
    return Prediction(t_c.tolist(), bounds[0].tolist(), bounds[1].tolist())


def standardization(t_u: Values) -> tuple[float, float] | None:
    """(shift, scale) = (mean, 1/SD) of t_u, population SD; None when all t_u are equal, or
    when the mean, the SD or its inverse is past float64 (t_u near 1e308, or below 1e-154
    where squares underflow to 0)."""
    values = np.asarray(t_u, dtype=np.float64)
    with np.errstate(all="ignore"):
        mean, sd = float(values.mean()), float(values.std())
        scale = 1 / sd if sd > 0 else math.inf
    return (mean, scale) if math.isfinite(mean) and math.isfinite(scale) and scale > 0 else None
