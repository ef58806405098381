"""A batch's long table (`series,t_u,t_c[,instrument][,u_t_c][,u_t_u]`, from CSV or Parquet) read into
columns. The optional `u_t_c` and `u_t_u` columns are each point's stated standard uncertainties
(API.md, "Uncertainty of each point"); a table that has them holds one more float64 array each.

Rows arrive in blocks of Arrow arrays (pyarrow's CSV reader, Parquet record batches) and go
straight into two preallocated float64 arrays; each series is a range of them. Nothing of a row
becomes a Python object: a series is found where the `series` column changes value, and only its
name and instrument are Python strings. Every limit that a stream can check is checked block by
block, as the rows arrive: points per series (`max_points_per_fit`), the number of series
(`max_fits_per_batch`), and the rows in all. So an oversize body is refused at the block that
passes a limit, never parsed whole.

Errors that name a row (a value that is not a number, a series whose rows are apart, a series
that names two instruments) are found here only as "somewhere in this block"; `first_row_error`
then reads the rows up to that block one at a time, as the row-by-row reader of earlier versions
did, and names the first bad row exactly as that reader named it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.api.bodies import too_large, too_many_fits
from services.api.memory import holding
from services.api.problems import Problem, invalid_field
from shared.contract.schemas import instrument_name
from shared.runtime.settings import Settings


@dataclass(frozen=True)
class Series:
    """One series of the table: its points are views into the table's arrays (no copy)."""

    name: str
    instrument: str | None
    t_u: np.ndarray
    t_c: np.ndarray
    # Each point's stated standard uncertainties, where the table has those columns.
    uncertainties: dict[str, np.ndarray]


class RowError(Exception):
    """A block holds a row that `first_row_error` must name; `rows` rows have been read by then."""

    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.rows = rows


class LongTable:
    """Blocks of rows in, series out."""

    def __init__(self, settings: Settings, rows_at_most: int, uncertain: Iterable[str] = ()) -> None:
        self.settings = settings
        self.t_u = np.empty(rows_at_most, dtype=np.float64)
        self.t_c = np.empty(rows_at_most, dtype=np.float64)
        self.uncertainties = {name: np.empty(rows_at_most, dtype=np.float64) for name in uncertain}
        self.rows = 0
        self.starts: list[int] = []  # the row each series starts at
        self.names: list[str] = []
        self.instruments: list[str | None] = []
        self._seen: set[str] = set()
        self._last_instrument: Any = None  # the last row's instrument cell (null filled), for the next block

    def add(
        self,
        series: pa.Array,
        t_u: np.ndarray,
        t_c: np.ndarray,
        instrument: pa.Array | None,
        uncertainties: dict[str, np.ndarray] | None = None,
    ) -> None:
        """A block of rows: its columns as read (series and instrument as text or integers, nulls
        allowed in instrument); t_u, t_c and the uncertainty columns already float64, every value a number."""
        n = len(series)
        if not n:
            return
        if self.rows + n > len(self.t_u):
            raise too_large(["body"], f"more than {len(self.t_u):,} rows in one batch")
        series = _text(series)
        if series.null_count:
            raise RowError(self.rows + n)
        changes = _changes(series)
        # The block's first row starts a series unless it goes on with the last block's.
        continues = bool(self.names) and series[0].as_py() == self.names[-1]
        starts = changes if continues else np.concatenate([[0], changes])
        first_rows = pa.array(starts, type=pa.int64())
        names = series.take(first_rows).to_pylist()
        if instrument is None:
            # The series names its instrument; a name that cannot be one ("/" in it) names none.
            self.instruments += [instrument_name(name) for name in names]
        else:
            self._check_instruments(series, _text(instrument), changes, continues, first_rows, names)
        for start, name in zip(starts.tolist(), names, strict=True):
            if name in self._seen:
                raise RowError(self.rows + n)  # its rows are apart: first_row_error names the line
            self._seen.add(name)
            self.starts.append(self.rows + start)
            self.names.append(name)
            if len(self.names) > self.settings.max_fits_per_batch:
                limit = self.settings.max_fits_per_batch
                raise too_many_fits(f"fits: more than {limit} series, the limit is {limit}")
        self.t_u[self.rows : self.rows + n] = t_u
        self.t_c[self.rows : self.rows + n] = t_c
        for name, values in (uncertainties or {}).items():
            self.uncertainties[name][self.rows : self.rows + n] = values
        self.rows += n
        self._check_lengths(len(starts))
        # Each uncertainty column is one more float64 a row: half a point's two arrays.
        holding(self.rows + self.rows * len(self.uncertainties) // 2, len(self.names))

    def _check_instruments(
        self,
        series: pa.Array,
        instrument: pa.Array,
        changes: np.ndarray,
        continues: bool,
        first_rows: pa.Array,
        names: list[str],
    ) -> None:
        """One instrument per series; a null cell names the series' own (instrument_name), which is
        none where the series' name cannot be an instrument's ("/" in it, or empty)."""
        filled = pc.coalesce(instrument, _own_instruments(series))
        where = _changes(filled, null_is_a_value=True)
        if continues and filled[0].as_py() != self._last_instrument:
            where = np.concatenate([[0], where])
        if len(np.setdiff1d(where, changes, assume_unique=True)):
            raise RowError(self.rows + len(series))
        for value, named in zip(instrument.take(first_rows).to_pylist(), names, strict=True):
            self.instruments.append(str(value) if value is not None else instrument_name(named))
        self._last_instrument = filled[-1].as_py()

    def _check_lengths(self, new: int) -> None:
        """Points per series, for the series this block started and the one it went on with."""
        limit = self.settings.max_points_per_fit
        recent = slice(max(0, len(self.starts) - new - 1), None)
        ends = [*self.starts[recent][1:], self.rows]
        for name, start, end in zip(self.names[recent], self.starts[recent], ends, strict=True):
            if end - start > limit:
                raise too_large(["series", name, "t_u"], f"series {name!r}: more than {limit:,} points in one fit")

    def series(self) -> Iterator[Series]:
        ends = [*self.starts[1:], self.rows]
        for name, instrument, start, end in zip(self.names, self.instruments, self.starts, ends, strict=True):
            stated = {column: values[start:end] for column, values in self.uncertainties.items()}
            yield Series(name, instrument, self.t_u[start:end], self.t_c[start:end], stated)


def _text(column: pa.Array) -> pa.Array:
    """A column of names as plain text: dictionaries decoded, integers written as Python writes them."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return column


def _changes(column: pa.Array, null_is_a_value: bool = False) -> np.ndarray:
    """The rows (from 1) whose value differs from the row before. A null beside a value compares as
    null: a change; two nulls are a change too, unless `null_is_a_value` (no instrument, twice)."""
    if len(column) < 2:
        return np.empty(0, dtype=np.int64)
    after, before = column.slice(1), column.slice(0, len(column) - 1)
    differs = pc.not_equal(after, before)
    one_null = pc.xor(pc.is_null(after), pc.is_null(before)) if null_is_a_value else True
    differs = pc.fill_null(differs, one_null)
    return np.flatnonzero(differs.to_numpy(zero_copy_only=False)) + 1


def _own_instruments(series: pa.Array) -> pa.Array:
    """Each row's series as its instrument's name (instrument_name), null where it cannot be one:
    worked out once per distinct name."""
    encoded = pc.dictionary_encode(series)
    own = pa.array([instrument_name(name) for name in encoded.dictionary.to_pylist()], pa.string())
    return own.take(encoded.indices)


def numbers(column: pa.Array) -> np.ndarray | None:
    """A column of t_u or t_c as float64, or None where some cell is not a number as Python's
    float() reads it (the row-by-row reader's rule): text is read by Arrow, and where Arrow
    refuses (spaces, "1_000") or reads a NaN, by float() itself."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        return None
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        cast: np.ndarray = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return cast
    try:
        values: np.ndarray = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return _python_floats(column.to_pylist())
    nan = np.flatnonzero(np.isnan(values))
    if len(nan):
        # Arrow reads "nan(1)" as NaN where float() refuses it: the few NaNs are read again.
        again = _python_floats(column.take(pa.array(nan, type=pa.int64())).to_pylist())
        if again is None:
            return None
    return values


def _python_floats(texts: list[Any]) -> np.ndarray | None:
    try:
        return np.array([float(text) for text in texts], dtype=np.float64)
    except (TypeError, ValueError):
        return None


UNCERTAINTY_COLUMNS = ("u_t_c", "u_t_u")
# The columns calib reads from a long table; any other is never read.
READ_COLUMNS = ("series", "t_u", "t_c", "instrument", *UNCERTAINTY_COLUMNS)


def refuse_repeated_columns(names: Iterable[str], file: str, read: Iterable[str] = READ_COLUMNS) -> None:
    """400 naming the first column calib reads that the table names twice: which of the two is
    meant would be a guess (Arrow's CSV reader takes the first, the csv module the last, and a
    Parquet schema answers neither)."""
    names = list(names)
    for column in read:
        if names.count(column) > 1:
            raise Problem(
                400,
                f"the {file} names the column {column} more than once",
                slug="malformed",
                errors=[{"loc": ["columns", column], "msg": "named more than once"}],
            )


def first_row_error(
    rows: Iterable[dict[str, Any]],
    with_instrument: bool,
    stop_after: int,
    *,
    csv_cells: bool = False,
    uncertain: Iterable[str] = (),
) -> Problem | None:
    """The first bad row among the first `stop_after`, named as the row-by-row reader named it
    (line numbers count the header as line 1); None if those rows are fine. Holds the series'
    names only, never their points. `csv_cells`: csv.DictReader's rows, where a row with more or
    fewer cells than the header is an error (the columnar reader cannot tell which cell is which)."""
    seen: set[str] = set()
    current: str | None = None
    current_instrument: str | None = None
    for line, row in enumerate(rows, start=2):
        if line - 1 > stop_after:
            return None
        try:
            float(row["t_u"]), float(row["t_c"])
        except (TypeError, ValueError):
            return Problem(
                400,
                f"line {line}: t_u and t_c must be numbers",
                slug="malformed",
                errors=[{"loc": ["line", line], "msg": "not a number"}],
            )
        for column in uncertain:
            try:
                float(row[column])
            except (TypeError, ValueError):
                return Problem(
                    400,
                    f"line {line}: {column} must be a number",
                    slug="malformed",
                    errors=[{"loc": ["line", line, column], "msg": "not a number"}],
                )
        if csv_cells and (None in row or None in row.values()):  # DictReader's marks of extra and missing cells
            return Problem(
                400,
                f"line {line}: the row's cells do not match the header's columns",
                slug="malformed",
                errors=[{"loc": ["line", line], "msg": "cells do not match the header"}],
            )
        if row["series"] is None:
            return Problem(
                400,
                f"line {line}: the series is empty",
                slug="malformed",
                errors=[{"loc": ["line", line], "msg": "no series"}],
            )
        name = str(row["series"])
        # The series names its instrument unless a column does; a series name that cannot be an
        # instrument's ("/" in it, or over 200 characters) names none, and its fit runs all the same.
        cell = row.get("instrument") if with_instrument else None
        instrument = str(cell) if cell is not None else instrument_name(name)
        if name != current and name in seen:
            # Rows of one series apart: a file pasted together twice, or sorted by something
            # else. Merging them silently could fit two instruments' data as one.
            return invalid_field(
                ["series", name],
                f"line {line}: the rows of series {name!r} are not together",
                f"series {name!r}: its rows must be consecutive (line {line} starts it again)",
            )
        if name == current and instrument != current_instrument:
            return invalid_field(
                ["series", name],
                f"line {line}: series {name!r} names a second instrument",
                f"series {name!r}: one instrument per series (line {line} names {instrument!r})",
            )
        if name != current:
            seen.add(name)
            current, current_instrument = name, instrument
    return None
