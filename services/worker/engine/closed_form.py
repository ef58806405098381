"""The exact fast path for optimizer "gd": every epoch of every fit in closed form.

The mean squared error of any model linear in its parameters (the book's line t_p = w*x + b,
a polynomial: services/worker/engine/models.py) depends on the data only through a few averages
of each fit, gathered in one pass in float64. Its Hessian H is constant, so gradient descent is
the linear system  theta_{k+1} - theta* = (I - lr H)(theta_k - theta*). In H's eigenbasis
(eigenvalues l_i, services/worker/engine/spectra.py) each coordinate z_i shrinks or grows by
rho_i = 1 - lr*l_i per epoch, and the loss before the k-th update is

    loss_k = L* + sum_i a_i * r_i^(k-1),   a_i = l_i z_i^2 / 2,  r_i = rho_i^2,

with L* the least-squares loss. Any epoch costs O(1) per fit whatever the
number of points, and the divergence epoch is found by bisection (loss_k is
convex in k, so once over the limit it stays over).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from services.worker.engine.models import LINE, Model
from services.worker.engine.series import FLOAT32_MAX, SeriesBatch
from services.worker.engine.spectra import Spectrum
from services.worker.engine.stopping import StopRule

# Bound on the (fits x epochs) losses one early-stopping window computes: 64 MB of float64.
_STOP_CELLS = 8_000_000


def exact_starts(model: Model, batch: SeriesBatch, start: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the fits whose start fits every one of their points exactly (every residual 0, as
    the book's loop computes them). Each fit's first point is looked at alone first: only where one
    of those residuals is 0 (rare) are all the points looked at, a pass that made the closed form of
    one fit of a million points 40 % slower when it ran for every fit."""
    if batch.x.shape[0] == 0:
        return torch.ones(batch.size, dtype=torch.bool, device=batch.x.device)
    first = (torch.cumsum(batch.n, 0) - batch.n).clamp(max=batch.x.shape[0] - 1)
    head = dataclasses.replace(
        batch,
        x=batch.x[first],
        y=batch.y[first],
        seg=torch.arange(batch.size, device=batch.x.device),
        n=torch.ones_like(batch.n),
        weight=None if batch.weight is None else batch.weight[first],
        reading_ratio=None if batch.reading_ratio is None else batch.reading_ratio[first],
    )
    # A fit of no points fits them all (the full look's answer too).
    if not bool(((batch.n == 0) | (model.residuals(head, start) == 0)).any()):
        return torch.zeros(batch.size, dtype=torch.bool, device=batch.x.device)
    missed = torch.zeros(batch.size, dtype=torch.int64, device=batch.x.device)
    missed.index_add_(0, batch.seg, (model.residuals(batch, start) != 0).to(torch.int64))
    return missed == 0


class GradientDescent:
    """Every epoch of every fit in closed form. With `validation` (the held-out points of each
    fit; none for some), the validation loss of each epoch too: the validation MSE at the
    parameters before that epoch's update. With `stopping`, each fit's last epoch is where its
    early-stopping rule stops it. `model`: the function fitted (services/worker/engine/models.py),
    the book's line unless said; `theta0` its starting parameters (B, p), by default the batch's
    (w0, b0) as Model.start extends them."""

    def __init__(
        self,
        batch: SeriesBatch,
        validation: SeriesBatch | None = None,
        stopping: StopRule | None = None,
        model: Model = LINE,
        theta0: torch.Tensor | None = None,
    ) -> None:
        self.batch, self.model = batch, model
        self.held_out = model.moments(validation) if validation is not None else None
        self.training = model.moments(batch)
        start = model.start(batch.w0, batch.b0) if theta0 is None else theta0
        self.spectrum = s = model.spectrum(self.training, start, batch.learning_rate)
        exact = exact_starts(model, batch, start)
        if bool(exact.any()):
            s.start_at_optimum(exact, start)
        self.unrepresentable = s.unrepresentable
        self.loss_opt = s.loss_opt

        self.last_epoch = batch.epochs if stopping is None else self._stop(stopping)
        self.stopped_early = self.last_epoch < batch.epochs
        diverged_at = self._divergence_epoch()
        epochs_done = torch.where(diverged_at > 0, diverged_at - 1, self.last_epoch)
        theta = s.params_after(epochs_done)
        # Readings so large that even float64 cannot hold their squares (|t_u| near 1e308) leave
        # no representable line: by API.md's rule (the sum of squared residuals overflows) such
        # a fit diverged at epoch 1, having run none.
        broken = (diverged_at == 0) & ~theta.isfinite().all(1)
        self.diverged_at = torch.where(broken, torch.ones_like(diverged_at), diverged_at)
        self.epochs_done = torch.where(broken, torch.zeros_like(epochs_done), epochs_done)
        self.theta = theta

    @property
    def w(self) -> torch.Tensor:
        """The line's slope (the first parameter of any model)."""
        return self.theta[:, 0]

    @property
    def b(self) -> torch.Tensor:
        """The line's intercept (the constant of any model)."""
        return self.theta[:, -1]

    def params_after(self, updates: torch.Tensor) -> torch.Tensor:
        """θ after the given number of updates: (B, p) per fit, or (B, L, p) for L counts per fit."""
        return self.spectrum.params_after(updates)

    def _stop(self, stopping: StopRule) -> torch.Tensor:
        """Each fit's last epoch under its rule, scanning the stored (float32) losses window by window."""
        window = max(1, _STOP_CELLS // self.batch.size)
        first = 1
        while first <= stopping.last_epoch_needed:
            last = min(first + window - 1, stopping.last_epoch_needed)
            wants_val = self.held_out is not None and bool(stopping.monitor_val.any())
            val = self._val_curve(first, last).T if wants_val else None
            stopping.update_from(self._curve(first, last, torch.float32).T, val, first)
            first = last + 1
        return stopping.epochs()

    def _log_loss(self, epoch: torch.Tensor) -> torch.Tensor:
        k = (epoch - 1).to(torch.float64)
        s = self.spectrum
        terms = torch.stack(
            [
                torch.log(s.loss_opt),
                *(torch.log(s.excess[:, i]) + k * torch.log(s.rho[:, i] * s.rho[:, i]) for i in range(s.z.shape[1])),
            ]
        )
        # 0 * (anything) is 0 even where log(r) is +inf or nan.
        terms = torch.nan_to_num(terms, nan=-math.inf)
        return torch.logsumexp(terms, 0)

    def _val_curve(self, first: int, last: int) -> torch.Tensor:
        """Validation losses of epochs first..last, (B, L) float32, not masked; NaN for fits without a split.

        The validation loss is quadratic in the parameters, and the parameters before epoch k are
        θ* + R·(z ρ^(k-1)) (R the Hessian's eigenvectors), so it is V* plus power series in ρ_i and
        ρ_i ρ_j (spectra.Spectrum.validation_terms), computed like the training loss. The linear
        terms may be negative, so the sum is formed in float64.
        """
        assert self.held_out is not None
        held_out, model, s = self.held_out, self.model, self.spectrum
        at_opt, bases, coefficients = s.validation_terms(
            lambda theta: model.loss_at(held_out, theta),
            model.gradient_at(held_out, s.theta_opt),
            model.hessian(held_out),
        )
        return _power_sums(at_opt, bases, coefficients, first, last, torch.float64).to(torch.float32)

    def val_losses(self, first: int, last: int) -> torch.Tensor | None:
        """Validation losses of epochs first..last (B, L) float32, NaN past epochs_done; None without a split."""
        if self.held_out is None:
            return None
        return self._past_done(self._val_curve(first, last), first, last)

    def _past_done(self, block: torch.Tensor, first: int, last: int) -> torch.Tensor:
        if int(self.epochs_done.min()) >= last:
            return block
        epoch = torch.arange(first, last + 1, device=block.device)
        return block.masked_fill(epoch[None, :] > self.epochs_done[:, None], math.nan)

    def _overflows(self, epoch: torch.Tensor) -> torch.Tensor:
        limit = math.log(FLOAT32_MAX) - torch.log(self.batch.n.to(torch.float64))
        return self._log_loss(epoch) > limit

    def _divergence_epoch(self) -> torch.Tensor:
        epochs = self.last_epoch
        ones = torch.ones_like(epochs)
        at_first = self._overflows(ones) | self.unrepresentable
        at_last = self._overflows(epochs)
        # Searched only where the loss overflows by the last epoch but not at the first: the
        # others' answer is known, and searching them too cost a converging fit ~13 halvings for
        # nothing: 1.3 ms of a one-fit chunk's 19 ms under cProfile (benchmarks/README.md,
        # twenty-first sitting).
        searched = at_last & ~at_first
        lo, hi = ones, torch.where(searched, epochs, ones)  # invariant where searched: lo does not overflow, hi does
        while bool(((hi - lo) > 1).any()):
            mid = (lo + hi) // 2
            over = self._overflows(mid)
            hi = torch.where(over, mid, hi)
            lo = torch.where(over, lo, mid)
        found = torch.where(at_first, ones, hi)
        return torch.where(at_first | at_last, found, torch.zeros_like(epochs))

    def losses(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor:
        """Losses of epochs first..last (inclusive) for every fit, (B, L), NaN past epochs_done; in
        `dtype` (the closed form is float64; stored losses are float32)."""
        return self._past_done(self._curve(first, last, dtype), first, last)

    def _curve(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor:
        """Losses of epochs first..last for every fit, (B, L), whatever each fit's last epoch:
        loss_k = L* + a1 r1^(k-1) + a2 r2^(k-1). Every term is non-negative, so nothing cancels
        and the sum may be formed in float32 (what is stored) at the cost of rounding only."""
        s = self.spectrum
        curve = _power_sums(s.loss_opt, s.rho * s.rho, s.excess, first, last, dtype)
        # A start so near the optimum that ½λz² underflows (data near 1e-160) has excess 0 while z is
        # not: under an unstable rate ρ^{2k} carries the term back into float64's range, as the loop's
        # loss shows. Those rare fits' terms are summed by their logarithms instead.
        lost = ((s.excess == 0) & (s.z != 0)).any(1)
        if bool(lost.any()):
            curve[lost] = _curve_by_logs(s, lost, first, last).to(dtype)
        return curve


def _curve_by_logs(s: Spectrum, rows: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """L* + Σ_t exp(log ½λ_t + 2 log|z_t| + (k−1)·2 log|ρ_t|) for k = first..last: (R, L) in float64,
    each term formed without its start's square underflowing."""
    f64 = torch.float64
    steps = torch.arange(first - 1, last, dtype=f64, device=s.z.device)  # k − 1
    with torch.no_grad():
        log_start = torch.log(0.5 * s.curvature[rows]) + 2 * torch.log(s.z[rows].abs())  # (R, T)
        log_rate = 2 * torch.log(s.rho[rows].abs())  # (R, T)
        # ρ = 0 moves to the optimum in one step: its power is 1 at k − 1 = 0, 0 after (never −inf · 0).
        grown = torch.where(steps == 0, torch.zeros((), dtype=f64), log_rate[:, :, None] * steps)
        terms = torch.exp(log_start[:, :, None] + grown)
        terms = torch.where(s.z[rows][:, :, None] == 0, torch.zeros((), dtype=f64), terms)
        return s.loss_opt[rows][:, None] + terms.sum(1)


def _power_sums(
    constant: torch.Tensor, bases: torch.Tensor, coefficients: torch.Tensor, first: int, last: int, dtype: torch.dtype
) -> torch.Tensor:
    """constant + Σ_t coefficients[:, t] · bases[:, t]^(k-1) for k = first..last: (B, L).

    base^(k-1) is split as base^(first-1+q*S) * base^j with k - first = q*S + j, so the
    (B, L) block is one batched matrix product of (B, Q, T) by (B, T, S) instead of
    T*B*L calls of exp. The powers are taken in float64; only the product is in `dtype`.
    """
    length = last - first + 1
    width = max(1, math.isqrt(length - 1) + 1)
    rows = -(-length // width)
    dev, f64 = constant.device, torch.float64
    row_exp = (first - 1) + width * torch.arange(rows, dtype=f64, device=dev)
    col_exp = torch.arange(width, dtype=f64, device=dev)
    heads = torch.pow(bases[:, :, None], row_exp) * coefficients[:, :, None]  # (B, T, Q)
    # 0 * (a power past float64's range) is 0, not NaN.
    heads = torch.where(coefficients[:, :, None] == 0, torch.zeros_like(heads), heads)
    steps = torch.pow(bases[:, :, None], col_exp)  # (B, T, S)
    block = torch.baddbmm(constant.to(dtype)[:, None, None], heads.transpose(1, 2).to(dtype), steps.to(dtype))
    return block.reshape(constant.shape[0], rows * width)[:, :length]
