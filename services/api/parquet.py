"""Parquet for batches (API.md "Parquet"): the long table `series,t_u,t_c[,instrument]` in, and the
batch's result columns out, typed (numbers as float64 and int64, verdicts as booleans)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.api.bodies import spool, too_large
from services.api.problems import Problem
from shared.presenters import RESULT_COLUMNS
from shared.settings import Settings

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
}
RESULT_SCHEMA = pa.schema([(name, _TYPES.get(name, pa.float64())) for name in RESULT_COLUMNS])


def long_rows(settings: Settings) -> tuple[Iterator[dict[str, Any]], bool]:
    """The body's rows as dicts (for batches.group_series), and whether it has an instrument column.
    Its row count is checked from the file's footer before anything is decompressed."""
    with spool(lambda piece: None, settings) as body:
        raw = body.read()
    try:
        file = pq.ParquetFile(pa.BufferReader(raw))
        rows = file.metadata.num_rows
        if rows > settings.max_points_per_batch:
            raise too_large(["body"], f"{rows:,} rows; at most {settings.max_points_per_batch:,} in one batch")
        table = file.read()
    except (pa.ArrowException, OSError) as exc:
        raise Problem(400, f"not a readable Parquet file: {exc}", slug="malformed") from exc
    names = set(table.column_names)
    if not {"series", "t_u", "t_c"} <= names:
        raise Problem(400, "the Parquet file must have the columns series,t_u,t_c", slug="malformed")
    if not rows:
        raise Problem(400, "the Parquet file has no rows", slug="malformed")
    with_instrument = "instrument" in names
    wanted = ["series", "t_u", "t_c"] + (["instrument"] if with_instrument else [])
    columns = [table.column(name).to_pylist() for name in wanted]
    return (dict(zip(wanted, values, strict=True)) for values in zip(*columns, strict=True)), with_instrument


def results_file(pages: Iterable[list[list[Any]]]) -> bytes:
    """The batch's result rows (pages of RESULT_COLUMNS rows) as one Parquet file, a row group per page."""
    out = io.BytesIO()
    with pq.ParquetWriter(out, RESULT_SCHEMA) as writer:
        for page in pages:
            columns = list(zip(*page, strict=True))
            writer.write_table(pa.table(columns, schema=RESULT_SCHEMA))
    return out.getvalue()
