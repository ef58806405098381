"""sgd, momentum, adam and rmsprop as torch.optim runs them (the book's later sections), for many fits at once.

These have no closed form, so they iterate; but every epoch of every fit costs O(1)
whatever its number of points, because the loss of the linear model and its gradient
depend on the data only through five averages (taken about each fit's means, as the
closed form does, so nothing cancels when t_u is large against its spread):

    L(w, b)  = w² vxx − 2 w vxy + vyy + r²,   r = w mx + b − my
    dL/dw    = 2 (w vxx − vxy + r mx)
    dL/db    = 2 r

One pass over the points, then one small vector program per epoch for the whole
group. The updates follow torch.optim exactly, each optimizer's rule one class of
services/worker/engine/rules.py (sgd, momentum, adam, rmsprop; gd is the plain step). gd's
gradient is taken as its options say: "autograd" (loss.backward() on the loss above) or
"finite_difference" (the book's central difference with step delta). The exact closed form
serves gd with the analytic gradient; these two exist to show, as the book does, that the
three gradients agree.
The loss of epoch k is taken before the k-th update (API.md), and a fit diverges at
the first epoch whose sum of squared residuals overflows float32.

Speed: an epoch is about twenty tensor operations on (2, fits) tensors, so the
per-operation overhead, not arithmetic, is the cost. Divergence is therefore found
after each block of epochs, from its recorded losses (a diverged fit's parameters are
not reported, so letting it run on is harmless: its later losses are masked), and a
fit's parameters are taken when it reaches its own last epoch.

Blocks: `run(n)` advances every fit n epochs (a multiple of _STOP_WINDOW) and returns
that block's losses and the fits that ended in it, so the runner writes, renews the
lease and sees cancellations every block (services/worker/runner.py). `states()` is what
a fit needs to go on later from the end of the block (its parameters, the optimizer's
buffers, its stopping rule's best and deadline): the runner stores it with the block, so
a fit that yields its worker, or whose worker is lost, resumes there instead of epoch 1.

A validation split adds the held-out points' loss at the same parameters, five more
averages and a few operations per epoch. Early stopping is decided every _STOP_WINDOW
epochs on the window's stored losses (services/worker/engine/stopping.py); the last
_STOP_WINDOW parameter pairs are kept in a ring, so a fit that stopped inside the window
gets the parameters of its own stop epoch. A stopped fit runs on with the others (that
costs nothing extra in a vector program), but nothing of it past its stop is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from services.worker.engine.models import LINE, Model
from services.worker.engine.rules import RULES, Options
from services.worker.engine.series import FLOAT32_MAX, SeriesBatch, loss_at
from services.worker.engine.stopping import StopRule

# Epochs between two early-stopping decisions (and parameter pairs kept for them).
_STOP_WINDOW = 64


@dataclass(frozen=True)
class Block:
    """Epochs first..last of every fit: losses (B, L) float32, NaN past a fit's last epoch;
    `ended`: the fits whose last epoch is in this block."""

    first: int
    last: int
    losses: torch.Tensor
    val_losses: torch.Tensor | None
    ended: torch.Tensor


class Iterative:
    def __init__(
        self,
        batch: SeriesBatch,
        optimizer: str,
        options: Options,
        validation: SeriesBatch | None = None,
        stopping: StopRule | None = None,
        resume: Sequence[Mapping[str, Any]] | None = None,
        model: Model = LINE,
        theta0: torch.Tensor | None = None,
    ) -> None:
        """`options`: each fit's resolved options of `optimizer` (shared/contract/optimizers.py); gd's gradient
        and delta are the same for every fit of a call (services/worker/runner.py groups them so).
        `model`: the function fitted (services/worker/engine/models.py), the book's line unless said;
        `theta0` its start (B, p), by default the batch's (w0, b0) as Model.start extends them."""
        self.batch, self.stopping, self.model = batch, stopping, model
        # Resolved options carry gd's gradient, and its delta with "finite_difference" (the only
        # use of delta); other optimizers carry neither and step on the analytic gradient.
        first = options[0] if options else {}
        self.gradient = str(first.get("gradient", "analytic"))
        self.delta = float(first["delta"]) if self.gradient == "finite_difference" else math.nan
        dev, f64 = batch.x.device, torch.float64
        self.training = model.moments(batch)
        self.line = model is LINE
        self.two_vxy = 2 * self.training[3] if self.line else None
        self.held_out = model.moments(validation) if validation is not None else None
        size = batch.size
        start = model.start(batch.w0, batch.b0) if theta0 is None else theta0
        self.p = start.T.contiguous()  # (parameters, fits): for the line, w and b
        self.g = torch.empty_like(self.p)
        self.final = self.p.clone()
        self.loss = torch.empty(size, dtype=f64, device=dev)
        self.r = torch.empty(size, dtype=f64, device=dev)
        self.ring = (
            torch.empty((_STOP_WINDOW, model.size, size), dtype=f64, device=dev) if stopping is not None else None
        )
        self.rule = RULES[optimizer](options, self.p)
        self.epoch = 0  # epochs every fit has run
        if resume:
            self._resume(resume)
        self.ends = {int(e) for e in torch.unique(batch.epochs)}
        self.ended = torch.zeros(size, dtype=torch.bool, device=dev)
        self.diverged_at = torch.zeros(size, dtype=torch.int64, device=dev)
        self.epochs_done = torch.zeros(size, dtype=torch.int64, device=dev)
        self.stopped_early = torch.zeros(size, dtype=torch.bool, device=dev)
        self.w, self.b = self.final[0], self.final[-1]

    @property
    def theta(self) -> torch.Tensor:
        """Each fit's parameters after its last update, (B, p)."""
        return self.final.T

    def _resume(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Go on from a block's end: every fit of a call was saved at the same epoch."""
        epochs = {int(state["epoch"]) for state in states}
        if len(epochs) != 1:
            raise ValueError("one call resumes fits saved at one epoch")
        self.epoch = epochs.pop()
        dev, f64 = self.p.device, torch.float64

        def column(name: str) -> torch.Tensor:
            zeros = [0.0] * self.model.size
            return torch.tensor([state.get(name) or zeros for state in states], dtype=f64, device=dev).T

        self.p.copy_(column("p"))
        self.rule.resume({name: column(name) for name in self.rule.buffers}, self.epoch)
        if self.stopping is not None:
            self.stopping.threshold = torch.tensor(
                [math.inf if state.get("threshold") is None else state["threshold"] for state in states],
                dtype=f64,
                device=dev,
            )
            self.stopping.deadline = torch.tensor(
                [
                    int(state.get("deadline") or 0) or int(p)
                    for state, p in zip(states, self.stopping.patience.tolist(), strict=True)
                ],
                dtype=torch.int64,
                device=dev,
            )

    def states(self) -> list[dict[str, Any]]:
        """What each fit needs to go on from `self.epoch` (JSON-ready; None for an infinite best)."""
        p = self.p.T.tolist()
        buffers = {name: value.T.tolist() for name, value in self.rule.state.items()}
        found: list[dict[str, Any]] = []
        for i in range(self.batch.size):
            state: dict[str, Any] = {"epoch": self.epoch, "p": p[i]}
            state |= {name: value[i] for name, value in buffers.items()}
            if self.stopping is not None:
                threshold = float(self.stopping.threshold[i])
                state |= {
                    "threshold": threshold if math.isfinite(threshold) else None,
                    "deadline": int(self.stopping.deadline[i]),
                }
            found.append(state)
        return found

    def limits(self) -> torch.Tensor:
        """Each fit's last epoch as known now: where its rule stopped it, or its own epochs."""
        return self.stopping.epochs() if self.stopping is not None else self.batch.epochs

    @property
    def done(self) -> bool:
        return bool(self.ended.all())

    def run(self, epochs: int, seconds: float | None = None) -> Block:
        """Advance up to `epochs` epochs (a multiple of _STOP_WINDOW, so blocks and the stopping rule's
        windows line up) or until every fit has reached its last epoch; returns the block.
        `seconds`: end the block at the first window boundary past this much wall time, so a block
        sized on a quiet machine still ends on time when the machine gets busy (cancellation and
        progress are seen between blocks)."""
        if epochs % _STOP_WINDOW:
            raise ValueError(f"blocks are a multiple of {_STOP_WINDOW} epochs")
        deadline = None if seconds is None else time.perf_counter() + seconds
        first = self.epoch + 1
        last = min(self.epoch + epochs, self._needed())
        size, dev = self.batch.size, self.p.device
        # Epoch-major, so each epoch writes one contiguous row; float32, as stored.
        losses = torch.empty((max(0, last - first + 1), size), dtype=torch.float32, device=dev)
        val_losses = torch.empty_like(losses) if self.held_out is not None else None
        epoch = self.epoch
        for epoch in range(first, last + 1):
            row = epoch - first
            self._epoch(epoch, losses[row], None if val_losses is None else val_losses[row])
            if self.stopping is not None and (epoch % _STOP_WINDOW == 0 or epoch == last):
                start = epoch - (epoch - 1) % _STOP_WINDOW - first
                self._decide_stops(
                    losses[start : row + 1], None if val_losses is None else val_losses[start : row + 1], start + first
                )
                if epoch >= self._needed():
                    break  # every fit still open has reached its last epoch
            if deadline is not None and epoch % _STOP_WINDOW == 0 and time.perf_counter() > deadline:
                break
        last = epoch
        losses = losses[: last - first + 1]
        val_losses = None if val_losses is None else val_losses[: last - first + 1]
        ended = self._close(losses, val_losses, first, last)
        self.epoch = last
        return Block(first, last, losses.T, None if val_losses is None else val_losses.T, ended)

    def _needed(self) -> int:
        """The last epoch any fit still open needs."""
        open_ = ~self.ended
        return int(self.limits()[open_].max()) if bool(open_.any()) else self.epoch

    def _epoch(self, epoch: int, loss_row: torch.Tensor, val_row: torch.Tensor | None) -> None:
        """Record epoch `epoch`'s losses (before its update), then update every fit."""
        if self.line:
            self._line_loss_and_gradient(loss_row, val_row)
        else:
            self._loss_and_gradient(loss_row, val_row)
        self.rule.step(self.g, self.batch.learning_rate, epoch)
        p = self.p
        if epoch in self.ends:  # the parameters after each fit's last update
            last = self.batch.epochs == epoch
            if self.stopping is not None:
                last &= self.stopping.stopped_at == 0
            self.final[:, last] = p[:, last]
        if self.ring is not None:
            self.ring[(epoch - 1) % _STOP_WINDOW].copy_(p)

    def _line_loss_and_gradient(self, loss_row: torch.Tensor, val_row: torch.Tensor | None) -> None:
        """The book's line, its loss and gradient written out in place: a few operations on (fits,)
        tensors per epoch, which is what an epoch of the iterative engine costs."""
        mx, my, vxx, vxy, vyy = self.training
        p, g, r, loss = self.p, self.g, self.r, self.loss
        assert self.two_vxy is not None
        w, b = p[0], p[1]
        torch.addcmul(b - my, w, mx, out=r)
        torch.mul(w, vxx, out=loss).sub_(self.two_vxy).mul_(w).add_(vyy).addcmul_(r, r)
        loss_row.copy_(loss)
        if val_row is not None and self.held_out is not None:
            val_row.copy_(loss_at(self.held_out, w, b))
        if self.gradient == "autograd":
            with torch.enable_grad():
                q = p.detach().clone().requires_grad_(True)
                # The fits are independent: one backward of the sum gives every fit's own gradient.
                torch.autograd.backward(loss_at(self.training, q[0], q[1]).sum())
            assert q.grad is not None
            g.copy_(q.grad)
        elif self.gradient == "finite_difference":
            delta = self.delta
            g[0] = (loss_at(self.training, w + delta, b) - loss_at(self.training, w - delta, b)) / (2 * delta)
            g[1] = (loss_at(self.training, w, b + delta) - loss_at(self.training, w, b - delta)) / (2 * delta)
        else:
            torch.addcmul(torch.mul(w, vxx).sub_(vxy), r, mx, out=g[0])
            g[1].copy_(r)
            g.mul_(2)

    def _loss_and_gradient(self, loss_row: torch.Tensor, val_row: torch.Tensor | None) -> None:
        """Any other model, through its loss and gradient on parameter vectors (models.py)."""
        model, theta = self.model, self.p.T
        loss_row.copy_(model.loss_at(self.training, theta))
        if val_row is not None and self.held_out is not None:
            val_row.copy_(model.loss_at(self.held_out, theta))
        if self.gradient == "autograd":
            with torch.enable_grad():
                q = theta.detach().clone().requires_grad_(True)
                torch.autograd.backward(model.loss_at(self.training, q).sum())
            assert q.grad is not None
            self.g.copy_(q.grad.T)
        elif self.gradient == "finite_difference":
            for i in range(model.size):
                step = torch.zeros_like(theta)
                step[:, i] = self.delta
                ahead, behind = model.loss_at(self.training, theta + step), model.loss_at(self.training, theta - step)
                self.g[i] = (ahead - behind) / (2 * self.delta)
        else:
            self.g.copy_(model.gradient_at(self.training, theta).T)

    def _decide_stops(self, losses: torch.Tensor, val_losses: torch.Tensor | None, first: int) -> None:
        """Feed the window of epochs first.. to the rule; fits that stopped in it take the
        parameters after their stop epoch's update from the ring."""
        assert self.stopping is not None and self.ring is not None
        stopped = self.stopping.update_from(losses, val_losses, first).nonzero()[:, 0]
        if len(stopped):
            slots = (self.stopping.stopped_at[stopped] - 1) % _STOP_WINDOW
            self.final[:, stopped] = self.ring[slots, :, stopped].T

    def _close(self, losses: torch.Tensor, val_losses: torch.Tensor | None, first: int, last: int) -> torch.Tensor:
        """Divergence in this block (in float32 a sum of squares past FLOAT32_MAX is inf, and a NaN
        fails the test too), the fits that ended in it, and NaN past each ended fit's last epoch."""
        dev = losses.device
        limit = self.limits()
        epoch = torch.arange(first, last + 1, device=dev)[:, None]
        open_ = ~self.ended
        bad = ~(losses * self.batch.n.to(torch.float32) <= FLOAT32_MAX) & (epoch <= limit[None, :]) & open_[None, :]
        hit = bad.any(0)
        # Most blocks have no divergence at all: the first bad epoch is looked for only when one has.
        first_bad = bad.to(torch.int8).argmax(0) + first if bool(hit.any()) else torch.zeros_like(self.diverged_at)
        self.diverged_at = torch.where(hit, first_bad, self.diverged_at)
        ended = open_ & (hit | (limit <= last))
        self.epochs_done = torch.where(ended, torch.where(hit, first_bad - 1, limit), self.epochs_done)
        self.stopped_early = torch.where(ended, ~hit & (limit < self.batch.epochs), self.stopped_early)
        self.ended |= ended
        past = (epoch > self.epochs_done[None, :]) & self.ended[None, :]
        losses.masked_fill_(past, float("nan"))
        if val_losses is not None:
            val_losses.masked_fill_(past, float("nan"))
        return ended

    def finish(self, fits: torch.Tensor) -> None:
        """End these fits at the current epoch (epochs "auto": they have converged), with their
        parameters as they are now."""
        fits = fits & ~self.ended
        self.final[:, fits] = self.p[:, fits]
        self.epochs_done = torch.where(fits, self.epoch, self.epochs_done)
        self.ended |= fits

    def complete(self, block_epochs: int = 4096) -> Iterative:
        """Run every fit to its end, keeping every epoch's losses (for tests and benchmarks; the
        runner writes block by block instead)."""
        blocks = []
        while not self.done:
            blocks.append(self.run(block_epochs))

        def joined(parts: list[torch.Tensor]) -> torch.Tensor:
            # One block (the common case here) is kept as it is: concatenating copies it.
            return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

        self._losses = (
            joined([block.losses for block in blocks])
            if blocks
            else torch.empty((self.batch.size, 0), dtype=torch.float32, device=self.p.device)
        )
        val_parts = [block.val_losses for block in blocks if block.val_losses is not None]
        self._val_losses = joined(val_parts) if val_parts and self.held_out is not None else None
        return self

    def losses(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor:
        """After complete(): epochs first..last (1-based, inclusive) of every fit; NaN past a fit's last epoch."""
        return self._losses[:, first - 1 : last].to(dtype)

    def val_losses(self, first: int, last: int) -> torch.Tensor | None:
        """After complete(): the validation losses of the same epochs (float32), or None without a split."""
        return None if self._val_losses is None else self._val_losses[:, first - 1 : last]
