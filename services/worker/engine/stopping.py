"""Early stopping for many fits at once: Keras's EarlyStopping rule, fed a window of epochs at a time.

The rule, per fit: an epoch improves when its monitored loss is below the best so far
minus min_delta (the first finite loss always improves); the fit stops at the first
epoch that comes `patience` epochs after its last improvement. It stops only before its
last epoch: stopping at the last one is just completing. A NaN or infinite loss never
improves. Both engines feed it the float32 losses they store, so a client re-running the
rule on the served losses finds the same epoch.

The walk over a window's epochs is the one sequential part (the best moves only on an
improvement, which depends on the epochs before), so it is kept to three vector operations
per epoch for all fits at once: is this an improvement, the new threshold, and the epoch
by which the next improvement must come (the deadline, last improvement + patience). A fit
stops at the first epoch that is its own deadline: no improvement came in time. That is
found after the walk, for the whole window at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


class StopRule:
    def __init__(self, rules: Sequence[Mapping[str, object] | None], epochs: torch.Tensor) -> None:
        dev, f64 = epochs.device, torch.float64
        self.active = torch.tensor([rule is not None for rule in rules], device=dev)
        self.monitor_val = torch.tensor(
            [rule is not None and rule["monitor"] == "val_loss" for rule in rules], device=dev
        )
        self.patience = torch.tensor(
            [int(str(rule["patience"])) if rule is not None else 1 for rule in rules], dtype=torch.int64, device=dev
        )
        self.min_delta = torch.tensor(
            [float(str(rule["min_delta"])) if rule is not None else 0.0 for rule in rules], dtype=f64, device=dev
        )
        self.limit = epochs
        # An epoch improves when its loss is below threshold = best - min_delta.
        self.threshold = torch.full_like(self.min_delta, math.inf)
        self.deadline = self.patience.clone()  # no improvement yet: the last one is "epoch 0"
        self.stopped_at = torch.zeros_like(self.patience)  # 0: not stopped (yet)

    @classmethod
    def of(cls, rules: Sequence[Mapping[str, object] | None], epochs: torch.Tensor) -> StopRule | None:
        return cls(rules, epochs) if any(rules) else None

    @property
    def last_epoch_needed(self) -> int:
        """Past this epoch, no fit with the rule has anything left to decide."""
        open_ = self._open()
        return int(self.limit[open_].max()) if bool(open_.any()) else 0

    def _open(self) -> torch.Tensor:
        """The fits with a rule that have not stopped yet."""
        return self.active & (self.stopped_at == 0)

    def epochs(self) -> torch.Tensor:
        """Each fit's last epoch: where it stopped, or its own epochs."""
        return torch.where(self.stopped_at > 0, self.stopped_at, self.limit)

    def update_from(self, loss: torch.Tensor, val_loss: torch.Tensor | None, first_epoch: int) -> torch.Tensor:
        """update() with each fit's own monitor: (L, B) training and validation losses of the same epochs."""
        if val_loss is None:
            return self.update(loss, first_epoch)
        return self.update(torch.where(self.monitor_val[None, :], val_loss, loss), first_epoch)

    def update(self, values: torch.Tensor, first_epoch: int) -> torch.Tensor:
        """Take the monitored losses of epochs first_epoch.. (L, B); returns the fits that stopped in them."""
        length = values.shape[0]
        v = values.to(torch.float64)
        deadlines = torch.empty((length, v.shape[1]), dtype=torch.int64, device=v.device)
        improved = torch.empty(v.shape[1], dtype=torch.bool, device=v.device)
        for i in range(length):
            torch.lt(v[i], self.threshold, out=improved)  # NaN is never below: never an improvement
            torch.where(improved, v[i] - self.min_delta, self.threshold, out=self.threshold)
            torch.where(improved, self.patience + (first_epoch + i), self.deadline, out=self.deadline)
            deadlines[i] = self.deadline
        epoch = torch.arange(first_epoch, first_epoch + length, device=v.device)[:, None]
        due = (deadlines == epoch) & (epoch < self.limit)
        newly = due.any(0) & self._open()
        self.stopped_at = torch.where(newly, due.to(torch.int8).argmax(0) + first_epoch, self.stopped_at)
        return newly
