"""How many epochs gradient descent needs to converge, exactly, from the closed form's eigen-decomposition.

After k updates the model-space parameters are θ* + R·(z1 ρ1^k, z2 ρ2^k) (closed_form.py), so
each raw-unit deviation from the optimum is a sum of two geometric terms,

    Δw_raw(k) = s·(cos z1 ρ1^k − sin z2 ρ2^k)
    Δb_raw(k) = (sin z1 − s·shift·cos z1) ρ1^k + (cos z2 + s·shift·sin z2) ρ2^k

(s the input scale), and the excess loss is excess1 ρ1^{2k} + excess2 ρ2^{2k}. Any other model
linear in its parameters is the same with p terms: Δθ_raw(k) = T·R·(z ρ^k), T its linear map to
raw units (`deviations`). The rule (shared/domain/convergence.py) is |Δθ_raw,j| ≤ T_j for every
parameter (for the line, |Δw_raw| ≤ T_w and |Δb_raw| ≤ T_b), or excess ≤ T_e where the standard
errors are not defined. The sum of the terms' absolute values bounds each deviation
and only decreases: bisection finds the epoch from which the bound meets the rule, and a
backward scan from there finds the first epoch from which the rule itself holds for good.
"""

from __future__ import annotations

import torch

from services.worker.engine.closed_form import GradientDescent
from services.worker.engine.spectra import LineSpectrum, Spectrum

_SCAN = 2048
_FIRST_SCAN = 32


def line_deviations(spectrum: LineSpectrum, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The line's raw-unit deviations from the optimum as sums of geometric terms (the module's
    formulas, written out as they were first published): (B, 2 deviations, 2 terms)."""
    e = spectrum
    z1, z2 = e.z[:, 0], e.z[:, 1]
    return torch.stack(
        [
            torch.stack([scale * e.cos * z1, -scale * e.sin * z2], 1),
            torch.stack([e.sin * z1 - scale * shift * e.cos * z1, e.cos * z2 + scale * shift * e.sin * z2], 1),
        ],
        1,
    )


def deviations(spectrum: Spectrum, raw: torch.Tensor) -> torch.Tensor:
    """Any model's: Δθ_raw(k) = T·R·(z ρ^k) for T the linear map from model-space parameters to
    raw ones (B, p, p), so deviation j is Σ_i (T R)_ji z_i ρ_i^k: (B, p deviations, p terms)."""
    return torch.einsum("bjk,bki,bi->bji", raw, spectrum.basis, spectrum.z)


def epochs_needed(
    engine: GradientDescent,
    scale: torch.Tensor,
    shift: torch.Tensor,
    target_w: torch.Tensor,
    target_b: torch.Tensor,
    target_excess: torch.Tensor,
    by_errors: torch.Tensor,
    limit: int,
) -> torch.Tensor:
    """The line's rule (targets on w and b): see epochs_to_converge."""
    e = engine.spectrum
    if not isinstance(e, LineSpectrum):
        raise TypeError("a line's targets for another model")
    targets = torch.stack([target_w, target_b], 1)
    return epochs_to_converge(line_deviations(e, scale, shift), e, targets, target_excess, by_errors, limit)


def epochs_to_converge(
    coefficients: torch.Tensor,
    spectrum: Spectrum,
    targets: torch.Tensor,
    target_excess: torch.Tensor,
    by_errors: torch.Tensor,
    limit: int,
) -> torch.Tensor:
    """Per fit, the first epoch count k from which the rule holds at every later k ≤ limit; -1 where it
    does not hold by `limit` (or the rates make it diverge). `coefficients` (B, p, p): each raw
    parameter's deviation as geometric terms in ρ (line_deviations, deviations); `targets` (B, p) the
    tolerance on each (tolerance × its standard uncertainty); `by_errors`: that rule, else the
    excess-loss rule with `target_excess` (already multiplied by the tolerance)."""
    rho = spectrum.rho  # (B, p)
    excess = spectrum.excess

    def holds(rows: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The rule at k (R, K) for the fits `rows` (R,)."""
        powers = torch.pow(rho[rows, None, :], k[:, :, None].to(rho.dtype))  # (R, K, 2)
        deviation = torch.einsum("bjt,bkt->bkj", coefficients[rows], powers).abs()  # (R, K, 2)
        by_se = (deviation <= targets[rows, None, :]).all(-1)
        by_loss = (excess[rows, None, :] * powers * powers).sum(-1) <= target_excess[rows, None]
        return torch.where(by_errors[rows, None], by_se, by_loss)

    def bound(k: torch.Tensor) -> torch.Tensor:
        """Whether the decreasing bound meets the rule at k (B,): then the rule holds from k on."""
        powers = torch.pow(rho.abs(), k[:, None].to(rho.dtype))
        deviation = (coefficients.abs() * powers[:, None, :]).sum(-1)
        by_se = (deviation <= targets).all(-1)
        by_loss = (excess * powers * powers).sum(-1) <= target_excess
        return torch.where(by_errors, by_se, by_loss)

    size, dev = rho.shape[0], rho.device
    lo = torch.full((size,), -1, dtype=torch.int64, device=dev)  # the bound fails at lo (or lo = -1)
    hi = torch.full((size,), limit, dtype=torch.int64, device=dev)  # ... and meets the rule at hi
    reachable = bound(hi)
    while bool(((hi - lo) > 1).any()):
        mid = (lo + hi) // 2
        ok = bound(mid.clamp_min(0))
        hi = torch.where(ok & (mid >= 0), mid, hi)
        lo = torch.where(ok & (mid >= 0), lo, torch.maximum(mid, lo))
    # Back from where the bound holds: the first k from which the rule itself holds for good.
    # Each pass scans a window of epochs of the fits still open only: most fail within a few
    # epochs of where the bound holds, so the first window is short and each next one twice as
    # long, up to _SCAN (a first window of _SCAN was most of a 10,000-fit batch's convergence time).
    needed = hi.clone()
    rows = torch.nonzero(reachable & (hi > 0)).squeeze(1)
    width = _FIRST_SCAN
    while rows.numel():
        top = hi[rows]
        k = top[:, None] - 1 - torch.arange(width, device=dev)[None, :]  # descending from top - 1
        fails = ~holds(rows, k.clamp_min(0)) & (k >= 0)
        failed = fails.any(1)
        first_fail = fails.to(torch.int8).argmax(1)
        exhausted = top - width <= 0
        needed[rows] = torch.where(failed, top - first_fail, torch.where(exhausted, 0, top - width))
        hi[rows] = torch.where(failed | exhausted, top, top - width)
        rows = rows[~(failed | exhausted)]
        width = min(2 * width, _SCAN)
    return torch.where(reachable, needed, torch.full_like(needed, -1))
