"""Stored losses packed compactly (shared/domain/packing.py): every float32 comes back to the bit,
compressed only where that is shorter, and a blob says by its length alone which packing it has
(blocks written before compression are plain, and stay readable)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.domain.packing import pack_f32, pack_f32_compact, unpack_f32_block

THERMOMETER = Path(__file__).parent / "data" / "thermometer.json"


def _seed_losses(epochs: int = 5000) -> np.ndarray:
    """The losses of the book's final fit (thermometer data, input_scale 0.1, lr 1e-2), in float32."""
    data = json.loads(THERMOMETER.read_text())
    t_u, t_c = torch.tensor(data["t_u"]) * 0.1, torch.tensor(data["t_c"])
    w, b, losses = torch.ones(()), torch.zeros(()), []
    for _ in range(epochs):
        d = w * t_u + b - t_c
        losses.append(float((d * d).mean()))
        w, b = w - 1e-2 * (2 * d * t_u).mean(), b - 1e-2 * (2 * d).mean()
    return np.asarray(losses, dtype=np.float32)


def _noise(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**32, count, dtype=np.uint32).view(np.float32)


def _bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize(
    "values",
    [
        _seed_losses(),
        np.zeros(10, dtype=np.float32),
        _noise(5000, seed=0),  # random bits: nothing to compress
        np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38], dtype=np.float32),
        np.array([2.5], dtype=np.float32),
    ],
    ids=["seed fit", "zeros", "noise", "special values", "one value"],
)
def test_every_value_comes_back_to_the_bit(values: np.ndarray) -> None:
    blob = pack_f32_compact(values)
    assert len(blob) <= 4 * len(values)
    np.testing.assert_array_equal(_bits(unpack_f32_block(blob, len(values))), _bits(values))


def test_a_converging_curve_is_stored_in_less_than_half_its_plain_size() -> None:
    losses = _seed_losses()
    blob = pack_f32_compact(losses)
    assert len(blob) < 0.5 * 4 * len(losses)
    # The rule that tells the packings apart: a compressed blob is never 4 bytes a value.
    assert len(blob) != 4 * len(losses)


def test_noise_and_blocks_written_before_compression_are_read_as_plain() -> None:
    noise = _noise(1000, seed=1)
    assert pack_f32_compact(noise) == pack_f32(noise)
    earlier = pack_f32(_seed_losses(300))  # a block as every earlier version stored it
    np.testing.assert_array_equal(_bits(unpack_f32_block(earlier, 300)), _bits(_seed_losses(300)))
