"""JSON has no NaN or infinity: a figure that is not finite is reported as null, in every result."""

from __future__ import annotations

import math


def finite_or_none(value: float) -> float | None:
    """`value` as a Python float, or None where it is NaN or infinite (numpy scalars included)."""
    return float(value) if math.isfinite(value) else None
