"""Many fits' data and settings as flat tensors: points of all fits end to end, with a segment index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# The book's float32 loop prints `inf` once the sum of squared residuals
# overflows float32; API.md makes that the divergence rule at any precision.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


Moments = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def loss_at(moments: Moments, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean squared error of t_p = w·x + b from the five averages (SeriesBatch.moments):
    w² vxx − 2 w vxy + vyy + r², r = w mx + b − my. w and b are (B,), or (B, L) for L
    parameter pairs of each fit."""
    mx, my, vxx, vxy, vyy = (m if w.dim() == 1 else m[:, None] for m in moments)
    r = w * mx + b - my
    return (w * vxx - 2 * vxy) * w + vyy + r * r


@dataclass(frozen=True)
class SeriesBatch:
    """B fits. x, y, seg: all points (x = (t_u - input_shift) * input_scale); the rest: one per fit."""

    x: torch.Tensor  # (P,) float64
    y: torch.Tensor  # (P,) float64
    seg: torch.Tensor  # (P,) int64, the fit each point belongs to
    n: torch.Tensor  # (B,) int64, points per fit
    learning_rate: torch.Tensor  # (B,) float64
    w0: torch.Tensor  # (B,) float64
    b0: torch.Tensor  # (B,) float64
    epochs: torch.Tensor  # (B,) int64
    # Each point's weight in its fit's loss, scaled to average 1 over the fit's points, or None: all
    # equal. With stated uncertainties u(t_c) the weights are 1/u² (ISO/TS 28037 clause 6), so the
    # loss is the weighted mean square Σ w r² / Σ w and every average below is weighted the same way.
    weight: torch.Tensor | None = None  # (P,) float64
    # Each fit's x = (v − shift)·scale, (B,): a transformed function's features depend on them
    # (services/worker/engine/models.Transformed).
    input_scale: torch.Tensor | None = None
    input_shift: torch.Tensor | None = None
    # With u(t_u) too (generalized distance regression, services/worker/engine/models.DistanceLine):
    # each point's (u(x)/u(t_c))², u(x) = u(t_u)·input_scale its reading's uncertainty in model space.
    reading_ratio: torch.Tensor | None = None  # (P,) float64

    @property
    def size(self) -> int:
        return int(self.n.shape[0])

    @classmethod
    def build(
        cls,
        t_u: Sequence[Sequence[float] | np.ndarray],
        t_c: Sequence[Sequence[float] | np.ndarray],
        *,
        epochs: Sequence[int],
        learning_rate: Sequence[float],
        input_scale: Sequence[float],
        w0: Sequence[float],
        b0: Sequence[float],
        input_shift: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
        u_t_c: Sequence[Sequence[float] | np.ndarray | None] | None = None,
        u_t_u: Sequence[Sequence[float] | np.ndarray | None] | None = None,
    ) -> SeriesBatch:
        """`u_t_c`: per fit, the standard uncertainty of each t_c (weights 1/u²), or None for equal weights."""
        f64 = torch.float64
        counts = [len(u) for u in t_u]
        scale = np.repeat(np.asarray(input_scale, dtype=np.float64), counts)
        x = np.concatenate([np.asarray(u, dtype=np.float64) for u in t_u])
        if input_shift is not None:
            x = x - np.repeat(np.asarray(input_shift, dtype=np.float64), counts)
        x = x * scale
        y = np.concatenate([np.asarray(c, dtype=np.float64) for c in t_c])
        n = torch.tensor(counts, dtype=torch.int64)
        weight = None
        if u_t_c is not None and any(u is not None for u in u_t_c):
            parts = []
            for count, u in zip(counts, u_t_c, strict=True):
                inverse = np.ones(count) if u is None else 1 / np.square(np.asarray(u, dtype=np.float64))
                parts.append(inverse * (count / inverse.sum()) if count else inverse)
            weight = torch.from_numpy(np.concatenate(parts)).to(device)
        ratio = None
        if u_t_u is not None and u_t_c is not None and any(u is not None for u in u_t_u):
            parts = []
            for count, ux, uy in zip(counts, u_t_u, u_t_c, strict=True):
                if ux is None or uy is None:
                    parts.append(np.zeros(count))
                else:
                    parts.append(np.square(np.asarray(ux, dtype=np.float64) / np.asarray(uy, dtype=np.float64)))
            ratio = torch.from_numpy(np.concatenate(parts) * np.square(scale)).to(device)
        return cls(
            x=torch.from_numpy(x).to(device),
            y=torch.from_numpy(y).to(device),
            seg=torch.repeat_interleave(torch.arange(len(counts)), n).to(device),
            n=n.to(device),
            learning_rate=torch.tensor(learning_rate, dtype=f64, device=device),
            w0=torch.tensor(w0, dtype=f64, device=device),
            b0=torch.tensor(b0, dtype=f64, device=device),
            epochs=torch.tensor(epochs, dtype=torch.int64, device=device),
            weight=weight,
            reading_ratio=ratio,
            input_scale=torch.tensor(input_scale, dtype=f64, device=device),
            input_shift=torch.tensor(
                input_shift if input_shift is not None else [0.0] * len(counts), dtype=f64, device=device
            ),
        )

    def segment_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Each fit's (weighted) mean of per-point values (P, ...) → (B, ...)."""
        total = torch.zeros((self.size, *values.shape[1:]), dtype=values.dtype, device=values.device)
        if self.weight is not None:
            values = values * self.weight.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
        total.index_add_(0, self.seg, values)
        return total / self.n.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))

    def moments(self) -> Moments:
        """The five averages every epoch's loss and gradient depend on, per fit: mean x, mean y,
        and the variances and covariance about those means (centred, so nothing cancels when
        x is large against its spread)."""
        mx, my = self.segment_mean(self.x), self.segment_mean(self.y)
        dx, dy = self.x - mx[self.seg], self.y - my[self.seg]
        return mx, my, self.segment_mean(dx * dx), self.segment_mean(dx * dy), self.segment_mean(dy * dy)

    def padded(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N) x, y and a 0/1 mask, for the book's loop, which works on rectangular tensors."""
        width = int(self.n.max())
        starts = torch.cumsum(self.n, 0) - self.n
        col = torch.arange(self.x.shape[0], device=self.x.device) - starts[self.seg]
        x = torch.zeros(self.size, width, dtype=dtype, device=self.x.device)
        y = torch.zeros_like(x)
        mask = torch.zeros_like(x)
        x[self.seg, col] = self.x.to(dtype)
        y[self.seg, col] = self.y.to(dtype)
        mask[self.seg, col] = 1
        return x, y, mask
