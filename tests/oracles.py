"""Outside references the tests check the engine against, written out plainly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


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


def torch_optim(kind: str, params: torch.Tensor, lr: float, options: dict[str, Any]) -> torch.optim.Optimizer:
    """torch.optim's own optimizer for `kind`, with the options as the API stores them."""
    if kind == "adam":
        return torch.optim.Adam([params], lr=lr, betas=tuple(options["betas"]), eps=options["eps"])
    if kind == "rmsprop":
        return torch.optim.RMSprop([params], lr=lr, alpha=options["alpha"], eps=options["eps"])
    return torch.optim.SGD([params], lr=lr, momentum=options.get("momentum", 0.0))


def torch_optim_run(
    x: Sequence[float], y: Sequence[float], kind: str, lr: float, options: dict[str, Any], epochs: int
) -> tuple[list[float], list[float]]:
    """The book's training loop with torch.optim's `kind`, from (w, b) = (1, 0), in float64: each
    epoch's loss (before its step) and the final [w, b]."""
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    xt, yt = torch.as_tensor(np.asarray(x, dtype=np.float64)), torch.as_tensor(np.asarray(y, dtype=np.float64))
    opt = torch_optim(kind, params, lr, options)
    losses = []
    for _ in range(epochs):
        loss = ((params[0] * xt + params[1] - yt) ** 2).mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses, params.detach().tolist()
