"""Outside references the tests check the engine against, written out plainly."""

from __future__ import annotations

import math


def keras_stop(values: list[float], patience: int, min_delta: float, epochs: int) -> int:
    """Keras's EarlyStopping, written out as a loop: the epoch a fit stops at (or its last epoch)."""
    best, wait = math.inf, 0
    for epoch, value in enumerate(values, start=1):
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
        if wait >= patience and epoch < epochs:
            return epoch
    return epochs
