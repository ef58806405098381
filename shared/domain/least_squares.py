"""Exact (weighted) least squares for many fits of any model linear in its parameters, on vectors.

A fit's design is its features at each point, f_1(t_u) … f_q(t_u), and a constant, last (the
engine's order: services/worker/engine/models.py); with stated uncertainties u(t_c) each point
weighs 1/u². Per fit, about the weighted means (so nothing cancels when t_u is large against its
spread):

    C θ_f = c,   θ_0 = my − mᵀθ_f,   C = Σ w (f − m)(f − m)ᵀ,  c = Σ w (f − m)(y − my)

and the covariance of θ = (θ_f, θ_0) is σ²·[[C⁻¹, −C⁻¹m], [−mᵀC⁻¹, 1/Σw + mᵀC⁻¹m]], with
σ² = 1 where the uncertainties are stated (ISO/TS 28037 clause 6: from the stated uncertainties,
not rescaled), else the residual variance SSE/(n − p) (ordinary least squares, as statsmodels
reports it). With stated uncertainties, χ²_obs = Σ w r² is tested against χ² with n − p degrees of
freedom: `consistent` where it is at most the 95 % quantile (clause 6.3).

Batches: every sum is one np.add.reduceat over the points of all fits, so 10,000 fits cost a few
passes over their points; C is built one pair of features at a time (never a (points, q, q) array).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# An eigenvalue of C this small against its largest is rounding noise: that direction of θ_f is not
# determined by the points (a degree they cannot fix, a feature that does not vary).
RANK_RTOL = 1e-12


@dataclass(frozen=True)
class Solutions:
    """Per fit (B of them), p parameters each; NaN where the points do not determine a figure."""

    parameters: np.ndarray  # (B, p)
    covariance: np.ndarray  # (B, p, p)
    residual_sd: np.ndarray  # (B,) sqrt(Σ r² / (n − p)), in t_c's units
    r2: np.ndarray  # (B,) 1 − SSE/SST, both weighted
    dof: np.ndarray  # (B,) n − p
    chi2_obs: np.ndarray  # (B,) Σ w r²; NaN without stated uncertainties
    chi2_p: np.ndarray  # (B,) P(χ²_dof ≥ chi2_obs)
    consistent: np.ndarray  # (B,) bool: chi2_obs ≤ the 95 % quantile (False without stated uncertainties)
    determined: np.ndarray  # (B,) bool: C has full rank

    @property
    def standard_uncertainties(self) -> np.ndarray:
        found: np.ndarray = np.sqrt(np.diagonal(self.covariance, axis1=1, axis2=2))
        return found


def solve(design: np.ndarray, y: np.ndarray, counts: np.ndarray, u_y: np.ndarray | None = None) -> Solutions:
    """`design` (P, p): each point's features, the constant column last; `y` (P,); `counts` (B,)
    points per fit, in order; `u_y` (P,) the stated standard uncertainty of each y, or None."""
    n = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n[:-1])]).astype(np.int64)
    features = np.asarray(design, dtype=np.float64)[:, :-1]
    q = features.shape[1]
    weighted = u_y is not None
    w = 1.0 / np.square(np.asarray(u_y, dtype=np.float64)) if weighted else np.ones(len(y))

    def total(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, starts)

    with np.errstate(all="ignore"):
        weight = total(w)
        mean_f = np.stack([total(w * features[:, i]) for i in range(q)], 1) / weight[:, None]
        mean_y = total(w * y) / weight
        df = features - np.repeat(mean_f, n, axis=0)
        dy = y - np.repeat(mean_y, n)
        cov = np.empty((len(n), q, q))
        for i in range(q):
            for j in range(i, q):
                cov[:, i, j] = cov[:, j, i] = total(w * df[:, i] * df[:, j])
        cross = np.stack([total(w * df[:, i] * dy) for i in range(q)], 1)
        inverse, determined = _pseudo_inverse(cov)
        coef = np.einsum("bij,bj->bi", inverse, cross)
        const = mean_y - np.einsum("bi,bi->b", coef, mean_f)
        # The residuals themselves, not syy − cᵀθ_f, which cancels where the fit is close.
        residual = dy - np.einsum("pi,pi->p", df, np.repeat(coef, n, axis=0))
        sse_weighted = total(w * residual * residual)
        sse = total(residual * residual)
        dof = n - (q + 1)
        sigma2 = np.ones(len(n)) if weighted else sse_weighted / dof
        covariance = np.empty((len(n), q + 1, q + 1))
        cm = np.einsum("bij,bj->bi", inverse, mean_f)
        covariance[:, :q, :q] = inverse
        covariance[:, :q, q] = covariance[:, q, :q] = -cm
        covariance[:, q, q] = 1 / weight + np.einsum("bi,bi->b", mean_f, cm)
        covariance *= np.where(dof > 0, sigma2, np.nan)[:, None, None]
        covariance[~determined] = np.nan
        chi2_obs = sse_weighted if weighted else np.full(len(n), np.nan)
        chi2_p, consistent = chi2_test(chi2_obs, dof)
        return Solutions(
            parameters=np.concatenate([coef, const[:, None]], 1),
            covariance=covariance,
            residual_sd=np.where(dof > 0, np.sqrt(sse / np.maximum(dof, 1)), np.nan),
            r2=1 - sse_weighted / total(w * dy * dy),
            dof=dof,
            chi2_obs=chi2_obs,
            chi2_p=chi2_p,
            consistent=consistent,
            determined=determined,
        )


def _pseudo_inverse(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C⁻¹ per fit through its eigen-decomposition, leaving out directions of rounding-noise variance
    (the minimum-norm solution there), and whether C had full rank."""
    finite = np.isfinite(cov).all(axis=(1, 2))
    safe = np.where(finite[:, None, None], cov, np.eye(cov.shape[1]))
    values, vectors = np.linalg.eigh(safe)
    largest = np.abs(values).max(1, keepdims=True)
    kept = values > RANK_RTOL * np.maximum(largest, np.finfo(np.float64).tiny)
    inverse_values = np.where(kept, 1 / np.where(kept, values, 1.0), 0.0)
    inverse = np.einsum("bij,bj,bkj->bik", vectors, inverse_values, vectors)
    inverse[~finite] = np.nan
    return inverse, kept.all(1) & finite


def chi2_test(chi2_obs: np.ndarray, dof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(χ²_dof ≥ χ²_obs) and χ²_obs ≤ the 95 % quantile (NaN and False where either is undefined).
    scipy is imported here: it costs every process that imports it a quarter of a second."""
    from scipy.special import chdtrc, chdtri

    usable = np.isfinite(chi2_obs) & (dof > 0)
    safe_dof = np.where(usable, dof, 1).astype(np.float64)
    p = np.where(usable, chdtrc(safe_dof, np.where(usable, chi2_obs, 0.0)), np.nan)
    quantile = chdtri(safe_dof, 0.05)
    return p, usable & (chi2_obs <= quantile)
