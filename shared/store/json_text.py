"""The text a JSON column stores, in both dialects: msgspec's encoder, set as the engines'
json_serializer (shared/store/db.py) and used by COPY as it is (shared/store/bulk.py); and the
values read back, by msgspec's decoder, the engines' json_deserializer.

Python's json module took a 10,000-fit batch's POST about 0.1 s for its five JSON columns a fit,
behind psycopg's Json wrapper and its dumper, called per value. msgspec writes the same values
compactly (no spaces, UTF-8 rather than \\u escapes): the same JSON to every reader. A
non-finite float is written as null, where the json module wrote NaN, which PostgreSQL refused
and SQLite kept as a text no JSON parser but Python's reads.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec


def _builtin(value: Any) -> Any:
    """What Python's json module also wrote: subclasses of float, int and str (numpy's float64, a
    str-based name), as the type they extend."""
    for kind in (float, int, str):
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = msgspec.json.Encoder(enc_hook=_builtin)


def json_text(value: Any) -> str:
    return _ENCODER.encode(value).decode()


_DECODER = msgspec.json.Decoder()


def json_value(text: str | bytes) -> Any:
    """The value of a stored JSON text, as Python's json module reads it. msgspec reads every valid
    JSON text to the same value, about 25 times faster for a `null` (a claim decodes three JSON
    columns of each line it takes, five of any other model: 30,000 values or more for a 10,000-fit
    batch). What it refuses, the json module reads as it always did: in rows an earlier version wrote,
    NaN (on SQLite) and a lone surrogate's escape."""
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)
