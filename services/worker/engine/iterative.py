"""sgd, momentum and adam as torch.optim runs them in the book's later sections, for many fits at once.

These have no closed form, so they iterate; but every epoch of every fit costs O(1)
whatever its number of points, because the loss of the linear model and its gradient
depend on the data only through five averages (taken about each fit's means, as the
closed form does, so nothing cancels when t_u is large against its spread):

    L(w, b)  = w² vxx − 2 w vxy + vyy + r²,   r = w mx + b − my
    dL/dw    = 2 (w vxx − vxy + r mx)
    dL/db    = 2 r

One pass over the points, then one small vector program per epoch for the whole
group. The updates follow torch.optim exactly:
- sgd:      p ← p − lr g                      (momentum with μ = 0)
- momentum: buf ← g (first step), then buf ← μ buf + g;  p ← p − lr buf
- adam:     m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;
            p ← p − (lr / (1 − β1^t)) m / (√v / √(1 − β2^t) + eps)
- gd with `gradient` "autograd" (loss.backward() on the loss above) or
  "finite_difference" (the book's central difference with step delta): p ← p − lr g.
  The exact closed form serves gd with the analytic gradient; these two exist to
  show, as the book does, that the three gradients agree.
The loss of epoch k is taken before the k-th update (API.md), and a fit diverges at
the first epoch whose sum of squared residuals overflows float32.

Speed: an epoch is about twenty tensor operations on (2, fits) tensors, so the
per-operation overhead, not arithmetic, is the cost. Divergence is therefore found
after the loop, from the recorded losses (a diverged fit's parameters are not
reported, so letting them run on is harmless: its later losses are masked), and a
fit's parameters are taken when it reaches its own last epoch.

A validation split adds the held-out points' loss at the same parameters, five more
averages and a few operations per epoch. Early stopping is decided every _STOP_WINDOW
epochs on the window's stored losses (services/worker/engine/stopping.py); the last
_STOP_WINDOW parameter pairs are kept in a ring, so a fit that stopped inside the window
gets the parameters of its own stop epoch. A stopped fit runs on with the others (that
costs nothing extra in a vector program), but nothing of it past its stop is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from services.worker.engine.series import FLOAT32_MAX, SeriesBatch, loss_at
from services.worker.engine.stopping import StopRule

# Epochs of recorded losses checked for divergence at once (bounds the check's memory).
_CHECK_WINDOW = 1024
# Epochs between two early-stopping decisions (and parameter pairs kept for them).
_STOP_WINDOW = 64


def _uniform(values: torch.Tensor) -> float | torch.Tensor:
    """A per-fit constant as a Python float when all fits share it: one tensor op fewer per use."""
    first = float(values[0])
    return first if bool((values == first).all()) else values


class Iterative:
    def __init__(self, batch: SeriesBatch, optimizer: Sequence[str], momentum: Sequence[float],
                 beta1: Sequence[float], beta2: Sequence[float], eps: Sequence[float],
                 gradient: str = "analytic", delta: float = 0.1, validation: SeriesBatch | None = None,
                 stopping: StopRule | None = None) -> None:
        kinds = {kind if kind in ("adam", "gd") else "momentum" for kind in optimizer}
        if len(kinds) != 1:
            raise ValueError("one call runs one update rule (services/worker/runner.py)")
        self.batch = batch
        dev, f64 = batch.x.device, torch.float64
        mx, my, vxx, vxy, vyy = batch.moments()
        two_vxy = 2 * vxy

        size, epochs = batch.size, batch.epochs
        max_epochs = int(epochs.max())
        ends = {int(e) for e in epochs.unique()}
        lr = batch.learning_rate
        p = torch.stack([batch.w0, batch.b0]).clone()  # (2, fits): w and b
        w, b = p[0], p[1]
        g = torch.empty_like(p)
        final = p.clone()
        # Epoch-major, so each epoch writes one contiguous row; float32, as stored.
        losses = torch.empty((max_epochs, size), dtype=torch.float32, device=dev)
        loss = torch.empty(size, dtype=f64, device=dev)
        r = torch.empty(size, dtype=f64, device=dev)
        training = (mx, my, vxx, vxy, vyy)
        held_out = validation.moments() if validation is not None else None
        val_losses = torch.empty_like(losses) if held_out is not None else None
        ring = torch.empty((_STOP_WINDOW, 2, size), dtype=f64, device=dev) if stopping is not None else None

        adam, plain = kinds == {"adam"}, kinds == {"gd"}

        if adam:
            b1 = torch.tensor(beta1, dtype=f64, device=dev)
            b2 = torch.tensor(beta2, dtype=f64, device=dev)
            eps_u, b1_u, b2_u = (_uniform(torch.tensor(eps, dtype=f64, device=dev)), _uniform(b1), _uniform(b2))
            m, v = torch.zeros_like(p), torch.zeros_like(p)
            b1_pow, b2_pow = torch.ones_like(b1), torch.ones_like(b2)
        else:
            mu = _uniform(torch.tensor(momentum, dtype=f64, device=dev))
            buf = torch.zeros_like(p)

        for epoch in range(1, max_epochs + 1):
            torch.addcmul(b - my, w, mx, out=r)
            torch.mul(w, vxx, out=loss).sub_(two_vxy).mul_(w).add_(vyy).addcmul_(r, r)
            losses[epoch - 1].copy_(loss)
            if val_losses is not None and held_out is not None:
                val_losses[epoch - 1].copy_(loss_at(held_out, w, b))
            if gradient == "autograd":
                with torch.enable_grad():
                    q = p.detach().clone().requires_grad_(True)
                    loss_at(training, q[0], q[1]).sum().backward()  # fits are independent: sum, then per-fit grads
                assert q.grad is not None
                g.copy_(q.grad)
            elif gradient == "finite_difference":
                g[0] = (loss_at(training, w + delta, b) - loss_at(training, w - delta, b)) / (2 * delta)
                g[1] = (loss_at(training, w, b + delta) - loss_at(training, w, b - delta)) / (2 * delta)
            else:
                torch.addcmul(torch.mul(w, vxx).sub_(vxy), r, mx, out=g[0])
                g[1].copy_(r)
                g.mul_(2)
            if plain:
                p.sub_(g * lr)
            elif adam:
                m.lerp_(g, 1 - b1_u)
                v.lerp_(g * g, 1 - b2_u)
                if isinstance(b1_u, float) and isinstance(b2_u, float):
                    step_size: float | torch.Tensor = 1 / (1 - b1_u**epoch)
                    inv_sqrt_c2: float | torch.Tensor = (1 - b2_u**epoch) ** -0.5
                else:
                    b1_pow.mul_(b1)
                    b2_pow.mul_(b2)
                    step_size, inv_sqrt_c2 = 1 / (1 - b1_pow), (1 - b2_pow).rsqrt()
                denom = v.sqrt().mul_(inv_sqrt_c2).add_(eps_u)
                p.sub_(m.div(denom).mul_(step_size).mul_(lr))
            else:
                if epoch == 1:  # torch.optim.SGD starts its momentum buffer at the first gradient
                    buf.copy_(g)
                else:
                    buf.mul_(mu).add_(g)
                p.sub_(buf * lr)
            if epoch in ends:  # the parameters after each fit's last update
                last = epochs == epoch
                if stopping is not None:
                    last &= stopping.stopped_at == 0
                final[:, last] = p[:, last]
            if stopping is not None and ring is not None:
                ring[(epoch - 1) % _STOP_WINDOW].copy_(p)
                if epoch % _STOP_WINDOW == 0 or epoch == max_epochs:
                    self._decide_stops(stopping, losses, val_losses, ring, final, epoch)
                    if epoch >= int(stopping.epochs().max()):
                        break  # every fit has reached its last epoch

        # Divergence from the recorded losses, in windows (see the module's note). In
        # float32 a sum of squares past FLOAT32_MAX is inf, and a NaN fails the test too.
        limit = stopping.epochs() if stopping is not None else epochs
        self.stopped_early = limit < epochs
        n = batch.n.to(torch.float32)
        diverged_at = torch.zeros(size, dtype=torch.int64, device=dev)
        undecided = torch.ones(size, dtype=torch.bool, device=dev)
        for start in range(0, max_epochs, _CHECK_WINDOW):
            window = losses[start:start + _CHECK_WINDOW]
            within = torch.arange(start + 1, start + 1 + window.shape[0], device=dev)[:, None] <= limit[None, :]
            bad = ~(window * n <= FLOAT32_MAX) & within
            hit = bad.any(0) & undecided
            if bool(hit.any()):
                first = bad.to(torch.int8).argmax(0) + start + 1
                diverged_at = torch.where(hit, first, diverged_at)
                undecided &= ~hit
        self.diverged_at = diverged_at
        self.epochs_done = torch.where(diverged_at > 0, diverged_at - 1, limit)
        # Past each fit's last recorded epoch the row holds nothing of that fit.
        past = torch.arange(1, max_epochs + 1, device=dev)[:, None] > self.epochs_done[None, :]
        losses.masked_fill_(past, float("nan"))
        if val_losses is not None:
            val_losses.masked_fill_(past, float("nan"))
        self._losses, self._val_losses = losses, val_losses
        self.w, self.b = final[0], final[1]

    @staticmethod
    def _decide_stops(stopping: StopRule, losses: torch.Tensor, val_losses: torch.Tensor | None,
                      ring: torch.Tensor, final: torch.Tensor, epoch: int) -> None:
        """Feed the window ending at `epoch` to the rule; fits that stopped in it take the
        parameters after their stop epoch's update from the ring."""
        first = epoch - (epoch - 1) % _STOP_WINDOW
        val = val_losses[first - 1:epoch] if val_losses is not None else None
        stopped = stopping.update_from(losses[first - 1:epoch], val, first).nonzero()[:, 0]
        if len(stopped):
            slots = (stopping.stopped_at[stopped] - 1) % _STOP_WINDOW
            final[:, stopped] = ring[slots, :, stopped].T

    def losses(self, first: int, last: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Epochs first..last (1-based, inclusive) of every fit, kept in float32; NaN past a fit's last epoch."""
        return self._losses[first - 1:last].T.to(dtype)

    def val_losses(self, first: int, last: int) -> torch.Tensor | None:
        """The validation losses of the same epochs (float32), or None without a split."""
        return None if self._val_losses is None else self._val_losses[first - 1:last].T
