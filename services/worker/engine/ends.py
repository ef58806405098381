"""What every engine answers, typed: how each fit ended (`Ends`), and the protocol the worker's
runner drives them by. Stored losses are float32 (shared.loss_blocks): an engine's `losses` takes
the dtype it is asked for, and the runner asks for float32."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass
class Ends:
    """Each fit's end as the engine knows it, one entry per fit (numpy). `diverged_at` is 0 for a
    fit that did not diverge; `done` is its last epoch with a finite loss."""

    done: np.ndarray
    diverged_at: np.ndarray
    w: np.ndarray
    b: np.ndarray
    stopped_early: np.ndarray


class Engine(Protocol):
    """The closed form (GradientDescent) and torch.optim's loop (Iterative) alike."""

    epochs_done: torch.Tensor
    diverged_at: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    stopped_early: torch.Tensor

    # No default: each caller says the dtype it wants (the runner: float32, as stored).
    def losses(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor: ...

    def val_losses(self, first: int, last: int) -> torch.Tensor | None: ...


def ends_of(engine: Engine) -> Ends:
    return Ends(
        engine.epochs_done.cpu().numpy(),
        engine.diverged_at.cpu().numpy(),
        engine.w.cpu().numpy(),
        engine.b.cpu().numpy(),
        engine.stopped_early.cpu().numpy(),
    )
