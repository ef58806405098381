"""Parquet for batches (API.md "Parquet"): the long table `series,t_u,t_c[,instrument][,u_t_c][,u_t_u]` in, and the
batch's result columns out, typed (numbers as float64 and int64, verdicts as booleans)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.api.bodies import spool, too_large
from services.api.long_table import (
    UNCERTAINTY_COLUMNS,
    LongTable,
    RowError,
    first_row_error,
    numbers,
    refuse_repeated_columns,
)
from services.api.memory import holding
from services.api.problems import Problem, invalid_field
from shared.runtime.settings import Settings
from shared.store.presenters import RESULT_COLUMNS

MEDIA_TYPE = "application/vnd.apache.parquet"

_TYPES = {
    "fit_id": pa.string(),
    "series": pa.string(),
    "status": pa.string(),
    "epochs_done": pa.int64(),
    "diverged_at_epoch": pa.int64(),
    "converged": pa.bool_(),
    "instrument": pa.string(),
    "drift_flagged": pa.bool_(),
    "consistent": pa.bool_(),
}


def result_schema(columns: Sequence[str]) -> pa.Schema:
    """RESULT_COLUMNS and a batch's parameter columns (float64) as a Parquet schema."""
    return pa.schema([(name, _TYPES.get(name, pa.float64())) for name in columns])


# The long table's columns, and the Arrow types each may have; any other column is never read.
_TEXT = ("series", "instrument")
_NUMBERS = ("t_u", "t_c", *UNCERTAINTY_COLUMNS)
# Rows decoded at a time: with the byte budget below, what one request holds while it is read.
_BATCH_ROWS = 65_536


def _kind_problem(name: str, kind: pa.DataType) -> str | None:
    """Why a known column's type cannot be read, or None."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if name in _NUMBERS:
        ok = pa.types.is_floating(kind) or pa.types.is_integer(kind)
        want = "numbers (float or integer)"
    else:
        ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
        want = "text or integers"
    return None if ok else f"column {name!r} is {kind}; it must hold {want} (nested and other types are refused)"


def read(settings: Settings) -> LongTable:
    """The body's series, as columns.

    Everything that bounds the work is read from the file's footer before anything is decoded: the
    row count, the known columns' types (any other column is never read), and the known columns'
    uncompressed size against `max_parquet_decoded_bytes`. Text columns are decoded as dictionaries
    (a value repeated on every row is held once), in batches of rows, against the same budget."""
    with spool(lambda piece: None, settings) as body:
        return _read(body, settings)


def _read(body: IO[bytes], settings: Settings) -> LongTable:
    # The file is read where it lies, in the spool (a temporary file past 1 MiB), never copied whole.
    try:
        file = pq.ParquetFile(body)
        meta, schema = file.metadata, file.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise Problem(400, f"not a readable Parquet file: {exc}", slug="malformed") from exc
    rows = meta.num_rows
    if rows > settings.max_points_per_batch:
        raise too_large(["body"], f"{rows:,} rows; at most {settings.max_points_per_batch:,} in one batch")
    holding(rows, 0)  # from the footer: its readings are decoded next, whatever its series
    names = set(schema.names)
    if not {"series", "t_u", "t_c"} <= names:
        raise Problem(400, "the Parquet file must have the columns series,t_u,t_c", slug="malformed")
    refuse_repeated_columns(schema.names, "Parquet file")
    if not rows:
        raise Problem(400, "the Parquet file has no rows", slug="malformed")
    with_instrument = "instrument" in names
    uncertain = tuple(column for column in UNCERTAINTY_COLUMNS if column in names)
    wanted = ["series", "t_u", "t_c"] + (["instrument"] if with_instrument else []) + list(uncertain)
    for name in wanted:
        problem = _kind_problem(name, schema.field(name).type)
        if problem is not None:
            raise invalid_field([name], problem)
    budget = settings.max_parquet_decoded_bytes
    indices = [schema.get_field_index(name) for name in wanted]
    declared = sum(
        meta.row_group(group).column(index).total_uncompressed_size
        for group in range(meta.num_row_groups)
        for index in indices
    )
    if declared > budget:
        raise too_large(["body"], f"its columns {','.join(wanted)} decode to {declared:,} bytes; at most {budget:,}")
    text = [name for name in wanted if name in _TEXT and not pa.types.is_integer(schema.field(name).type)]
    table = LongTable(settings, rows, uncertain)
    try:
        for batch in _decoded(body, wanted, text, budget):
            t_u, t_c = numbers(batch.column("t_u")), numbers(batch.column("t_c"))
            stated = {column: numbers(batch.column(column)) for column in uncertain}
            if t_u is None or t_c is None or any(values is None for values in stated.values()):
                raise RowError(table.rows + batch.num_rows)
            instrument = batch.column("instrument") if with_instrument else None
            table.add(batch.column("series"), t_u, t_c, instrument, stated)  # type: ignore[arg-type]
    except RowError as found:
        rows_read = (row for batch in _decoded(body, wanted, text, budget) for row in batch.to_pylist())
        raise first_row_error(rows_read, with_instrument, found.rows, uncertain=uncertain) or Problem(
            400, "not a readable long table", slug="malformed"
        ) from None
    return table


def _decoded(body: IO[bytes], wanted: list[str], text: list[str], budget: int) -> Iterator[pa.RecordBatch]:
    spent = 0
    try:
        file = pq.ParquetFile(body, read_dictionary=text)
        for batch in file.iter_batches(batch_size=_BATCH_ROWS, columns=wanted):
            spent += batch.nbytes
            if spent > budget:
                raise too_large(["body"], f"its columns decode to more than {budget:,} bytes")
            yield batch
    except (pa.ArrowException, OSError) as exc:
        raise Problem(400, f"not a readable Parquet file: {exc}", slug="malformed") from exc


def results_file(pages: Iterable[list[list[Any]]], columns: Sequence[str] = RESULT_COLUMNS) -> bytes:
    """The batch's result rows (pages of `columns` rows) as one Parquet file, a row group per page."""
    out = io.BytesIO()
    schema = result_schema(columns)
    with pq.ParquetWriter(out, schema) as writer:
        for page in pages:
            writer.write_table(pa.table(list(zip(*page, strict=True)), schema=schema))
    return out.getvalue()
