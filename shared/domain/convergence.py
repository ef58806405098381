"""Has gradient descent reached the least-squares line? The verdict every result carries.

A fit has converged when its raw-unit line is within `tolerance` standard errors of the exact
least-squares line of its training points, in both parameters:
    |w_raw − w_opt| ≤ tol · se_w   and   |b_raw − b_opt| ≤ tol · se_b.
Where the standard errors are 0 or undefined (two points, or points exactly on a line, so
there is no residual scatter to measure against), the rule is on the excess loss, with the
data's own spread in place of the residuals':
    excess_loss ≤ tol² · Var(t_c) / n
(where all t_c are equal too, mean(t_c)² stands in for Var(t_c): the API stores that scale as
`t_c_var`). Where t_u are all equal
the optimum is not unique and there is no verdict (None).

excess_loss is the training loss at the fitted line less the least-squares loss: with
Δw = w_raw − w_opt and Δb = b_raw − b_opt, exactly Var(t_u)·Δw² + (Δb + Δw·mean(t_u))².
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared.domain.finite import finite_or_none


@dataclass(frozen=True)
class Verdict:
    converged: bool | None
    gap_se_w: float | None
    gap_se_b: float | None
    excess_loss: float | None


@dataclass(frozen=True)
class Optimum:
    """What the verdict needs of a fit's training points (the columns the API stored at submission)."""

    w_opt: float | None
    b_opt: float | None
    se_w: float | None
    se_b: float | None
    t_u_mean: float | None
    t_u_sxx: float | None
    t_c_var: float | None  # Var(t_c), or mean(t_c)² where all t_c are equal
    n: int

    def has_errors(self) -> bool:
        return _positive(self.se_w) and _positive(self.se_b)

    def loss_scale(self) -> float:
        """Var(t_c)/n: the fallback rule's scale."""
        return max(self.t_c_var or 0.0, 1e-300) / max(self.n, 1)

    def excess_allowed(self, tolerance: float) -> float:
        """The fallback rule's bound on the excess loss, tolerance² · Var(t_c)/n. A product, not
        `tolerance**2`: Python's power raises OverflowError past float's range (a tolerance over
        ~1e154, which the contract allows), where a product is inf and the rule accepts every line."""
        return tolerance * tolerance * self.loss_scale()


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def verdict(w_raw: float, b_raw: float, optimum: Optimum, tolerance: float) -> Verdict:
    o = optimum
    if o.w_opt is None or o.b_opt is None or o.t_u_mean is None or not o.t_u_sxx:
        return Verdict(None, None, None, None)
    dw, db = w_raw - o.w_opt, b_raw - o.b_opt
    # Products, not ** 2: Python's power raises OverflowError past float's range, a product is inf.
    offset = db + dw * o.t_u_mean
    excess = finite_or_none(o.t_u_sxx / o.n * dw * dw + offset * offset)
    if o.has_errors():
        assert o.se_w is not None and o.se_b is not None
        gap_w, gap_b = finite_or_none(dw / o.se_w), finite_or_none(db / o.se_b)
        converged = gap_w is not None and gap_b is not None and abs(gap_w) <= tolerance and abs(gap_b) <= tolerance
        return Verdict(converged, gap_w, gap_b, excess)
    converged = excess is not None and excess <= o.excess_allowed(tolerance)
    return Verdict(converged, None, None, excess)


@dataclass(frozen=True)
class VectorVerdict:
    """The verdict of a model with any number of parameters: its gap to the least-squares optimum in
    standard uncertainties, one per parameter in its names' order (None where they are 0 or
    undefined), and its excess loss."""

    converged: bool | None
    gap_se: list[float | None] | None
    excess_loss: float | None


def vector_verdict(
    parameters: list[float], solution: dict[str, Any], optimum: Optimum | None, tolerance: float
) -> VectorVerdict:
    """The line's rule on a vector (raw units): every |θ_j − θ_opt,j| ≤ tol·u_j, or where any u_j is 0
    or undefined, excess ≤ tol²·Var(t_c)/n with excess = Δθᵀ·E[φφᵀ]·Δθ (`solution`:
    shared/domain/model_stats.ModelStats.solution)."""
    opt = solution.get("parameters_opt") or []
    gram = solution.get("gram")
    if optimum is None or not opt or any(v is None for v in opt) or gram is None:
        return VectorVerdict(None, None, None)
    delta = [p - o for p, o in zip(parameters, opt, strict=True)]
    excess = finite_or_none(
        sum(delta[i] * (gram[i][j] or 0.0) * delta[j] for i in range(len(delta)) for j in range(len(delta)))
    )
    covariance = solution.get("covariance")
    u = [covariance[j][j] for j in range(len(delta))] if covariance else []
    if u and all(v is not None and math.isfinite(v) and v > 0 for v in u):
        gaps = [finite_or_none(d / math.sqrt(v)) for d, v in zip(delta, u, strict=True)]
        converged = all(g is not None and abs(g) <= tolerance for g in gaps)
        return VectorVerdict(converged, gaps, excess)
    converged = excess is not None and excess <= optimum.excess_allowed(tolerance)
    return VectorVerdict(converged, None, excess)
