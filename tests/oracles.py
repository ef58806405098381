"""Outside references the tests check the engine against, written out plainly."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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


def mse_at_line(t_u: Sequence[float], t_c: Sequence[float], w_raw: float, b_raw: float) -> float:
    """The mean squared error of t_c ≈ w_raw·t_u + b_raw, in float64: the loss of a result (API.md)."""
    residual = w_raw * np.asarray(t_u, dtype=np.float64) + b_raw - np.asarray(t_c, dtype=np.float64)
    return float(np.mean(residual * residual))
