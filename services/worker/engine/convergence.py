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
and only decreases: the terms alone bracket the epoch from which the bound meets the rule
(_bracket), halving narrows the wide brackets, and a backward scan from there finds the first
epoch from which the rule itself holds for good.
"""

from __future__ import annotations

import math

import torch

from services.worker.engine.closed_form import GradientDescent
from services.worker.engine.spectra import LineSpectrum, Spectrum

_SCAN = 2048
_FIRST_SCAN = 32
# Once every fit's bracket is at most this many epochs wide, the bound is evaluated at each epoch
# of it at once: _CELLS (fits × epochs) in all, so a few fits skip the halvings and a batch's
# evaluation stays small, with at least _WINDOW epochs a fit.
_CELLS = 8192
_WINDOW = 16


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

    def meets(rows: torch.Tensor | slice, deviation: torch.Tensor, powers: torch.Tensor) -> torch.Tensor:
        """The rule for the fits `rows`, given their deviations (R, K, p) and the powers of their
        rates (R, K, p) at K epochs each: (R, K)."""
        by_se = (deviation <= targets[rows, None, :]).all(-1)
        by_loss = (excess[rows, None, :] * powers * powers).sum(-1) <= target_excess[rows, None]
        return torch.where(by_errors[rows, None], by_se, by_loss)

    def holds(rows: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The rule at k (R, K) for the fits `rows` (R,)."""
        powers = torch.pow(rho[rows, None, :], k[:, :, None].to(rho.dtype))  # (R, K, p)
        return meets(rows, torch.einsum("bjt,bkt->bkj", coefficients[rows], powers).abs(), powers)

    magnitude, rate = coefficients.abs(), rho.abs()
    every = slice(None)

    def bound(rows: torch.Tensor | slice, k: torch.Tensor) -> torch.Tensor:
        """Whether the decreasing bound meets the rule at k (R, K) for the fits `rows`: then the rule
        holds from k on."""
        powers = torch.pow(rate[rows, None, :], k[:, :, None].to(rate.dtype))  # (R, K, p)
        return meets(rows, (magnitude[rows, None, :, :] * powers[:, :, None, :]).sum(-1), powers)

    dev = rho.device
    # The bound fails at lo (or lo = -1) and meets the rule at hi. The terms alone bracket the
    # epoch (_bracket); each end is checked on the bound itself, and an end that does not check
    # out (rounding, a rate that does not contract) falls back to the whole range.
    lo, hi = _bracket(magnitude, rate, excess, targets, target_excess, by_errors, limit)
    at = bound(every, torch.stack([lo.clamp_min(0), hi, torch.full_like(hi, limit)], 1))
    reachable = at[:, 2]
    lo = torch.where(at[:, 0] | (lo < 0), torch.full_like(lo, -1), lo)
    hi = torch.where(at[:, 1], hi, torch.full_like(hi, limit))
    # Halve the brackets still wider than the window, those fits' only (a batch's slow rates
    # take a dozen halvings; the rest of its fits, none).
    window = max(_WINDOW, _CELLS // max(1, rho.shape[0]))
    rows = torch.nonzero(hi - lo > window).squeeze(1)
    while rows.numel():
        low, high = lo[rows], hi[rows]
        mid = (low + high) // 2  # >= 0: the bracket is wider than 2
        ok = bound(rows, mid[:, None])[:, 0]
        hi[rows], lo[rows] = torch.where(ok, mid, high), torch.where(ok, low, mid)
        rows = rows[hi[rows] - lo[rows] > window]
    # Every bracket's epochs at once: the bound holds from the first that meets it.
    span = int((hi - lo).max()) if hi.numel() else 1
    k = (lo[:, None] + 1 + torch.arange(span, device=dev)[None, :]).minimum(hi[:, None])
    first = bound(every, k).to(torch.int8).argmax(1, keepdim=True)
    hi = torch.where(reachable, k.gather(1, first)[:, 0], hi)
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


def _bracket(
    magnitudes: torch.Tensor,
    rates: torch.Tensor,
    excess: torch.Tensor,
    targets: torch.Tensor,
    target_excess: torch.Tensor,
    by_errors: torch.Tensor,
    limit: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per fit, epochs (lo, hi) between which the decreasing bound first meets the rule, from its
    terms alone. The bound is at least its largest term, so it fails while any term is over its
    target; it is at most p times its largest, so it meets the rule once every term is within
    target / p. A term c·r^k falls to a level L at k = log(L / c) / log r, so the bracket is about
    log(p) / -log(r) epochs wide (a few for most rates) where [-1, limit] took about 20 halvings.
    `magnitudes` (B, p, p) the deviations' terms' |coefficients|, `rates` (B, p) the |ρ|."""
    p = rates.shape[1]
    log_rate = torch.log(rates)

    def latest_crossing(
        terms: torch.Tensor, level: torch.Tensor, log_base: torch.Tensor, dims: tuple[int, ...]
    ) -> torch.Tensor:
        # A term that is zero never crosses (nan, -inf: no constraint); one whose target is zero
        # never gets there (inf: the limit); a rate that does not contract gives what the checks reject.
        return torch.nan_to_num(torch.log(level / terms) / log_base, nan=-math.inf).amax(dims)

    def crossings(share: float) -> torch.Tensor:
        by_se = latest_crossing(magnitudes, targets[:, :, None] * share, log_rate[:, None, :], (1, 2))
        by_loss = latest_crossing(excess, target_excess[:, None] * share, 2 * log_rate, (1,))
        return torch.where(by_errors, by_se, by_loss)

    lo = crossings(1.0).clamp(-1, limit).ceil() - 1
    hi = crossings(1.0 / p).clamp(0, limit).ceil()
    return lo.clamp_min(-1).to(torch.int64), hi.to(torch.int64)
