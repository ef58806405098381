"""A fit's losses as served: CSV lines, downsampled envelopes, and JSON's nulls for what is not finite
(the blocks themselves are read by shared.store.loss_blocks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import numpy as np

from shared.domain.finite import finite_or_none
from shared.store.loss_blocks import Curves


def json_floats(values: np.ndarray) -> list[float | None]:
    """The array as JSON's numbers: a loss past float32's range is served as null. The check per
    value runs only where some value is not finite."""
    listed: list[float] = values.tolist()
    if np.isfinite(values).all():
        return cast("list[float | None]", listed)  # no copy: a list of floats is one of floats or None
    return [finite_or_none(v) for v in listed]


def csv_lines(curves: Curves, first_epoch: int = 1) -> Iterator[str]:
    val = curves.val_loss
    yield "epoch,loss,val_loss\n" if val is not None else "epoch,loss\n"
    step = 10_000
    for offset in range(0, len(curves), step):
        part = curves.loss[offset : offset + step].tolist()
        epochs = range(first_epoch + offset, first_epoch + offset + len(part))
        if val is None:
            yield "".join(f"{e},{v!r}\n" for e, v in zip(epochs, part, strict=True))
        else:
            vals = val[offset : offset + step].tolist()
            yield "".join(f"{e},{v!r},{u!r}\n" for e, v, u in zip(epochs, part, vals, strict=True))


def downsample(curves: Curves, first_epoch: int, points: int) -> list[dict[str, float | int | None]]:
    """At most `points` consecutive buckets covering every epoch, each with its first and last
    epoch and the min, max and last loss (and validation loss): the envelope a chart needs,
    with spikes and the divergence kept, not sampled away. Deterministic: bucket i spans
    [i*m//k, (i+1)*m//k)."""
    m = len(curves)
    if m == 0:
        return []
    k = min(points, m)
    edges = (np.arange(k + 1, dtype=np.int64) * m) // k
    starts, ends = edges[:-1], edges[1:]
    columns: dict[str, list[float | int | None]] = {
        "first_epoch": (first_epoch + starts).tolist(),
        "last_epoch": (first_epoch + ends - 1).tolist(),
    }
    for prefix, values in (("", curves.loss), ("val_", curves.val_loss)):
        if values is None:
            continue
        values = values.astype(np.float64)
        columns[prefix + "min"] = json_floats(np.minimum.reduceat(values, starts))
        columns[prefix + "max"] = json_floats(np.maximum.reduceat(values, starts))
        columns[prefix + "last"] = json_floats(values[ends - 1])
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
