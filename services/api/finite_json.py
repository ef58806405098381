"""The API's JSON: never NaN or Infinity, which Python's json module writes by default and
no JSON parser accepts (a client would fail on the whole body, not on one number)."""

from __future__ import annotations

import logging
import math
from typing import Any

from flask.json.provider import DefaultJSONProvider

log = logging.getLogger(__name__)


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


class FiniteJSONProvider(DefaultJSONProvider):
    """Fields that can be undetermined are already served as null; this is the guard behind
    them. The strict encoder costs nothing when every number is finite, and only a body that
    fails it is walked again, and logged, since it means a figure escaped its own check."""

    sort_keys = False  # fields in the order API.md lists them

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return super().dumps(obj, allow_nan=False, **kwargs)
        except ValueError:
            log.warning("a response held a non-finite number; it is served as null")
            return super().dumps(finite(obj), allow_nan=False, **kwargs)
