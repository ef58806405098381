"""Where the engine runs: the GPU when the worker has one, else the CPU."""

from __future__ import annotations

import torch


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
