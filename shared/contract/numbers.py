"""Numbers as JSON Schema reads them, shared by the contract's modules."""

from __future__ import annotations

from typing import Any


def whole(value: Any) -> Any:
    """241.0 as 241: JSON Schema counts it as an integer, and so does this API; "241" and true stay errors."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
