"""Float arrays packed as little-endian bytes: one blob per series instead of one row per number."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

F64 = np.dtype("<f8")
F32 = np.dtype("<f4")


def pack_f64(values: Sequence[float] | np.ndarray) -> bytes:
    return np.asarray(values, dtype=F64).tobytes()


def unpack_f64(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=F64)


def pack_f32(values: Sequence[float] | np.ndarray) -> bytes:
    return np.asarray(values, dtype=F32).tobytes()


def unpack_f32(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=F32)
