"""Text in the CSV files calib writes is shown by a spreadsheet, never run: a cell starting with
one of these (OWASP's CSV injection) is written with a leading ' that makes it text."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA = "^[=+\\-@\t\r]"


def cell(value: Any) -> Any:
    """One cell of a CSV row written by Python's csv module."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def text_column(column: pa.Array) -> pa.Array:
    """A column of text written by pyarrow's CSV writer."""
    runs = pc.match_substring_regex(column, _FORMULA)
    return pc.if_else(runs, pc.binary_join_element_wise("'", column, ""), column)
