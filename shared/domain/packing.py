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


def pack_f32_compact(values: Sequence[float] | np.ndarray) -> bytes:
    """float32 values as stored losses: byte-shuffled (each float's first bytes together, then its
    second bytes...) and zstd-compressed, where that is shorter than the plain packing; else the
    plain packing. A stored loss curve changes slowly, so its high bytes repeat: the seed fit's
    5000 losses take 8,666 bytes instead of 20,000. Told apart by length: the plain packing is
    exactly 4 bytes a value, and a compressed one never is (unpack_f32_block)."""
    import pyarrow as pa  # the API's and the worker's dependency already; imported where used

    plain = pack_f32(values)
    shuffled = np.frombuffer(plain, dtype=np.uint8).reshape(-1, 4).T.tobytes()
    packed: bytes = pa.compress(shuffled, codec="zstd", asbytes=True)
    return packed if len(packed) < len(plain) else plain


def unpack_f32_block(blob: bytes, count: int) -> np.ndarray:
    """The `count` float32 values of a blob written by pack_f32_compact (or by pack_f32)."""
    if len(blob) == 4 * count:
        return unpack_f32(blob)
    import pyarrow as pa

    shuffled = pa.decompress(blob, decompressed_size=4 * count, codec="zstd", asbytes=True)
    return np.frombuffer(shuffled, dtype=np.uint8).reshape(4, count).T.copy().view(F32).reshape(count)
