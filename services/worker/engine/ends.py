"""What every engine answers, typed: how each fit ended (`Ends`), and the protocol the worker's
runner drives them by. Stored losses are float32 (shared.store.loss_blocks): an engine's `losses` takes
the dtype it is asked for, and the runner asks for float32."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from services.worker.engine.series import Moments, loss_at


@dataclass
class Ends:
    """Each fit's end as the engine knows it, one entry per fit (numpy). `diverged_at` is 0 for a
    fit that did not diverge; `done` is its last epoch with a finite loss."""

    done: np.ndarray
    diverged_at: np.ndarray
    w: np.ndarray
    b: np.ndarray
    stopped_early: np.ndarray
    # The training loss at (w, b), the parameters the fit returns (API.md "The loss of a
    # result"), in float64: the stored per-epoch losses are each taken before that epoch's
    # update, so none of them is the loss of the returned line. NaN where there is no split.
    loss: np.ndarray
    val_loss: np.ndarray


class Engine(Protocol):
    """The closed form (GradientDescent) and torch.optim's loop (Iterative) alike."""

    epochs_done: torch.Tensor
    diverged_at: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    stopped_early: torch.Tensor
    # The five averages of each fit's training points, and of its held-out points (None: no split).
    training: Moments
    held_out: Moments | None

    # No default: each caller says the dtype it wants (the runner: float32, as stored).
    def losses(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor: ...

    def val_losses(self, first: int, last: int) -> torch.Tensor | None: ...


def ends_of(engine: Engine) -> Ends:
    w, b = engine.w, engine.b
    loss = loss_at(engine.training, w, b)
    val_loss = loss_at(engine.held_out, w, b) if engine.held_out is not None else torch.full_like(loss, math.nan)
    return Ends(
        engine.epochs_done.cpu().numpy(),
        engine.diverged_at.cpu().numpy(),
        w.cpu().numpy(),
        b.cpu().numpy(),
        engine.stopped_early.cpu().numpy(),
        loss.cpu().numpy(),
        val_loss.cpu().numpy(),
    )
