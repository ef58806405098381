"""What every engine answers, typed: how each fit ended (`Ends`), and the protocol the worker's
runner drives them by. Stored losses are float32 (shared.store.loss_blocks): an engine's `losses` takes
the dtype it is asked for, and the runner asks for float32."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from services.worker.engine.models import Model


@dataclass
class Ends:
    """Each fit's end as the engine knows it, one entry per fit (numpy). `diverged_at` is 0 for a
    fit that did not diverge; `done` is its last epoch with a finite loss."""

    done: np.ndarray
    diverged_at: np.ndarray
    w: np.ndarray
    b: np.ndarray
    stopped_early: np.ndarray
    theta: np.ndarray  # (B, p): the parameter vector; (w, b) for the line
    # The training loss at (w, b), the parameters the fit returns (API.md "The loss of a
    # result"), in float64: the stored per-epoch losses are each taken before that epoch's
    # update, so none of them is the loss of the returned line. NaN where there is no split.
    loss: np.ndarray
    val_loss: np.ndarray


class Engine(Protocol):
    """The closed form (GradientDescent) and torch.optim's loop (Iterative) alike."""

    epochs_done: torch.Tensor
    diverged_at: torch.Tensor
    stopped_early: torch.Tensor
    model: Model

    @property
    def w(self) -> torch.Tensor: ...

    @property
    def b(self) -> torch.Tensor: ...

    @property
    def theta(self) -> torch.Tensor: ...

    # The averages of each fit's training points its model's loss depends on, and of its held-out
    # points (None: no split): the five of series.Moments for the line.
    training: Any
    held_out: Any

    # No default: each caller says the dtype it wants (the runner: float32, as stored).
    def losses(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor: ...

    def val_losses(self, first: int, last: int) -> torch.Tensor | None: ...


def ends_of(engine: Engine) -> Ends:
    theta, model = engine.theta, engine.model
    loss = model.loss_at(engine.training, theta)
    val_loss = model.loss_at(engine.held_out, theta) if engine.held_out is not None else torch.full_like(loss, math.nan)
    return Ends(
        engine.epochs_done.cpu().numpy(),
        engine.diverged_at.cpu().numpy(),
        engine.w.cpu().numpy(),
        engine.b.cpu().numpy(),
        engine.stopped_early.cpu().numpy(),
        theta.cpu().numpy(),
        loss.cpu().numpy(),
        val_loss.cpu().numpy(),
    )
