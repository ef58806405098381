"""The book's training loop (chapter 5): model, loss, analytic gradient, one update per epoch.

Batched over fits with a padded (B, N) layout and a mask; each fit stops at its
own epoch count or at divergence and is frozen from then on. This is the
reference the fast path is tested against, and the baseline of the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.worker.engine.series import FLOAT32_MAX, SeriesBatch


@dataclass(frozen=True)
class FitOutcome:
    losses: torch.Tensor  # (B, max epochs) float64; NaN past each fit's epochs_done
    epochs_done: torch.Tensor  # (B,) int64
    w: torch.Tensor  # (B,) parameters after the last update
    b: torch.Tensor
    diverged_at: torch.Tensor  # (B,) int64, 0 where the fit did not diverge


def model(t_u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return w * t_u + b


def reference_fit(batch: SeriesBatch, dtype: torch.dtype = torch.float32) -> FitOutcome:
    x, y, mask = batch.padded(dtype)
    n = batch.n.to(dtype)
    lr = batch.learning_rate.to(dtype)
    w = batch.w0.to(dtype).clone()
    b = batch.b0.to(dtype).clone()
    max_epochs = int(batch.epochs.max())
    losses = torch.full((batch.size, max_epochs), float("nan"), dtype=torch.float64, device=x.device)
    diverged_at = torch.zeros(batch.size, dtype=torch.int64, device=x.device)
    running = torch.ones(batch.size, dtype=torch.bool, device=x.device)

    for epoch in range(1, max_epochs + 1):
        running &= batch.epochs >= epoch
        t_p = model(x, w[:, None], b[:, None])
        residual = (t_p - y) * mask
        loss = (residual**2).sum(1) / n
        # The book's grad_fn: d loss / dw and d loss / db of the mean squared error.
        grad_w = (2 * x * residual).sum(1) / n
        grad_b = (2 * residual).sum(1) / n

        overflowed = ~torch.isfinite(loss) | (n.double() * loss.double() > FLOAT32_MAX)
        diverging = running & overflowed
        diverged_at[diverging] = epoch
        running &= ~overflowed
        if not bool(running.any()):
            break
        losses[:, epoch - 1] = torch.where(running, loss.double(), losses[:, epoch - 1])
        w = torch.where(running, w - lr * grad_w, w)
        b = torch.where(running, b - lr * grad_b, b)

    epochs_done = torch.where(diverged_at > 0, diverged_at - 1, batch.epochs)
    return FitOutcome(losses, epochs_done, w.double(), b.double(), diverged_at)
