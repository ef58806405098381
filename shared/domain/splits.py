"""The train/validation split of a fit's points, as the book's chapter makes it.

The book shuffles the indices (torch.randperm) and keeps the last int(0.2·n) for
validation. Here a seeded permutation (numpy's PCG64, the seed the request gives) picks
them, so the same request picks the same points; and the chosen indices are stored
with the fit, so what was held out is on record whatever a later numpy does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def validation_count(n_points: int, fraction: float) -> int:
    """How many points a fraction holds out: int(fraction·n), as the book rounds."""
    return int(fraction * n_points)


def choose_indices(n_points: int, fraction: float, seed: int) -> list[int]:
    """The held-out indices for a fraction and a seed, sorted."""
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n_points)
    return sorted(int(i) for i in order[n_points - validation_count(n_points, fraction) :])


def held_out_indices(validation: dict[str, object] | None) -> list[int]:
    """The held-out indices of a fit's stored `validation` column; empty without a split."""
    indices = (validation or {}).get("indices") or []
    assert isinstance(indices, list)
    return [int(i) for i in indices]


def split(values: Sequence[float] | np.ndarray, held_out: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) values, in their original order; no validation → all training."""
    array = np.asarray(values, dtype=np.float64)
    if not held_out:
        return array, array[:0]
    mask = np.zeros(len(array), dtype=bool)
    mask[list(held_out)] = True
    return array[~mask], array[mask]
