"""Reading a fit's losses back from its packed blocks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.models import LossBlock
from shared.packing import unpack_f32


def read_losses(session: so.Session, fit_id: str, start: int, stop: int) -> np.ndarray:
    """Losses of epochs start..stop-1 (as many as are recorded), one indexed range scan."""
    if stop <= start:
        return np.empty(0, dtype=np.float32)
    rows = session.execute(
        sa.select(LossBlock.first_epoch, LossBlock.count, LossBlock.loss)
        .where(
            LossBlock.fit_id == fit_id,
            LossBlock.first_epoch < stop,
            LossBlock.first_epoch + LossBlock.count > start,
        )
        .order_by(LossBlock.first_epoch)
    ).all()
    parts = []
    for first, count, blob in rows:
        values = unpack_f32(blob)[:count]
        lo, hi = max(start, first) - first, min(stop, first + count) - first
        parts.append(values[lo:hi])
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)


def csv_lines(losses: np.ndarray, first_epoch: int = 1) -> Iterator[str]:
    yield "epoch,loss\n"
    step = 10_000
    for offset in range(0, len(losses), step):
        part = losses[offset:offset + step]
        yield "".join(
            f"{first_epoch + offset + i},{float(value)!r}\n" for i, value in enumerate(part)
        )


def downsample(losses: np.ndarray, first_epoch: int, points: int) -> list[dict[str, float | int]]:
    """At most `points` consecutive buckets covering every epoch, each with its first and last
    epoch and the min, max and last loss: the envelope a chart needs, with spikes and the
    divergence kept, not sampled away. Deterministic: bucket i spans [i*m//k, (i+1)*m//k)."""
    m = len(losses)
    if m == 0:
        return []
    k = min(points, m)
    edges = (np.arange(k + 1, dtype=np.int64) * m) // k
    starts, ends = edges[:-1], edges[1:]
    values = losses.astype(np.float64)
    lows = np.minimum.reduceat(values, starts)
    highs = np.maximum.reduceat(values, starts)
    lasts = values[ends - 1]
    return [
        {"first_epoch": int(first_epoch + a), "last_epoch": int(first_epoch + b - 1),
         "min": float(lo), "max": float(hi), "last": float(la)}
        for a, b, lo, hi, la in zip(starts.tolist(), ends.tolist(), lows.tolist(), highs.tolist(),
                                    lasts.tolist(), strict=True)
    ]
