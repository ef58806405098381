"""The update rules of the iterative engine, one class per optimizer, stepping many fits at once.

Each follows its torch.optim namesake exactly (tests/engine/test_iterative_optimizers.py runs
torch.optim beside it), on parameters p of shape (parameters, fits):
- plain (gd, sgd):  p ← p − lr·g
- momentum:         buf ← g (first step), then buf ← μ·buf + g;  p ← p − lr·buf
- adam:             m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;
                    p ← p − (lr / (1 − β1^t))·m / (√v / √(1 − β2^t) + eps)
- rmsprop:          v ← α·v + (1 − α)·g²;  p ← p − lr·g / (√v + eps)

A rule is built from each fit's resolved options (the objects shared/contract/optimizers.py declares and
the API stores), and keeps its per-fit buffers by name, like torch's `state_dict`: the runner
saves them with each block, so a fit resumes with its optimizer's state (services/worker/runner.py).
A new optimizer is a class here and its entry in RULES, beside its declaration in shared/contract/optimizers.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

Options = Sequence[Mapping[str, Any]]


def _uniform(values: torch.Tensor) -> float | torch.Tensor:
    """A per-fit constant as a Python float when all fits share it: one tensor op fewer per use."""
    first = float(values[0])
    return first if bool((values == first).all()) else values


class Rule:
    """Steps every fit of one call; `buffers` names the per-fit state it keeps (each shaped like p)."""

    buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Options, p: torch.Tensor) -> None:
        self.p = p
        self.state = {name: torch.zeros_like(p) for name in self.buffers}

    def option(self, options: Options, name: str, index: int | None = None) -> torch.Tensor:
        values = [o[name] if index is None else o[name][index] for o in options]
        return torch.tensor(values, dtype=self.p.dtype, device=self.p.device)

    def resume(self, saved: Mapping[str, torch.Tensor], epoch: int) -> None:
        """Go on after `epoch` with the buffers saved then (a buffer not saved starts at zero)."""
        for name, value in saved.items():
            if name in self.state:
                self.state[name].copy_(value)

    def step(self, g: torch.Tensor, lr: float | torch.Tensor, epoch: int) -> None:
        raise NotImplementedError


class Plain(Rule):
    def step(self, g: torch.Tensor, lr: float | torch.Tensor, epoch: int) -> None:
        self.p.sub_(g * lr)


class Momentum(Rule):
    buffers = ("buf",)

    def __init__(self, options: Options, p: torch.Tensor) -> None:
        super().__init__(options, p)
        self.mu = _uniform(self.option(options, "momentum"))

    def step(self, g: torch.Tensor, lr: float | torch.Tensor, epoch: int) -> None:
        buf = self.state["buf"]
        if epoch == 1:  # torch.optim.SGD starts its momentum buffer at the first gradient
            buf.copy_(g)
        else:
            buf.mul_(self.mu).add_(g)
        self.p.sub_(buf * lr)


class Adam(Rule):
    buffers = ("m", "v")

    def __init__(self, options: Options, p: torch.Tensor) -> None:
        super().__init__(options, p)
        self.b1, self.b2 = self.option(options, "betas", 0), self.option(options, "betas", 1)
        self.b1_u, self.b2_u = _uniform(self.b1), _uniform(self.b2)
        self.eps = _uniform(self.option(options, "eps"))
        self.b1_pow, self.b2_pow = torch.ones_like(self.b1), torch.ones_like(self.b2)

    def resume(self, saved: Mapping[str, torch.Tensor], epoch: int) -> None:
        super().resume(saved, epoch)
        self.b1_pow, self.b2_pow = self.b1**epoch, self.b2**epoch

    def step(self, g: torch.Tensor, lr: float | torch.Tensor, epoch: int) -> None:
        m, v = self.state["m"], self.state["v"]
        m.lerp_(g, 1 - self.b1_u)
        v.lerp_(g * g, 1 - self.b2_u)
        if isinstance(self.b1_u, float) and isinstance(self.b2_u, float):
            step_size: float | torch.Tensor = 1 / (1 - self.b1_u**epoch)
            inv_sqrt_c2: float | torch.Tensor = (1 - self.b2_u**epoch) ** -0.5
        else:
            self.b1_pow.mul_(self.b1)
            self.b2_pow.mul_(self.b2)
            step_size, inv_sqrt_c2 = 1 / (1 - self.b1_pow), (1 - self.b2_pow).rsqrt()
        denom = v.sqrt().mul_(inv_sqrt_c2).add_(self.eps)
        self.p.sub_(m.div(denom).mul_(step_size).mul_(lr))


class RMSprop(Rule):
    buffers = ("square_avg",)

    def __init__(self, options: Options, p: torch.Tensor) -> None:
        super().__init__(options, p)
        self.alpha = _uniform(self.option(options, "alpha"))
        self.eps = _uniform(self.option(options, "eps"))

    def step(self, g: torch.Tensor, lr: float | torch.Tensor, epoch: int) -> None:
        square_avg = self.state["square_avg"]
        if isinstance(self.alpha, float):  # torch's own operations, so the two round alike
            square_avg.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
        else:
            square_avg.mul_(self.alpha).add_(g * g * (1 - self.alpha))
        self.p.sub_(g.div(square_avg.sqrt().add_(self.eps)).mul_(lr))


# Each optimizer's rule by the name a fit stores (shared/contract/optimizers.py declares the same names).
RULES: dict[str, type[Rule]] = {"gd": Plain, "sgd": Plain, "momentum": Momentum, "adam": Adam, "rmsprop": RMSprop}
