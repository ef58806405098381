"""The batch reader of earlier versions, kept as the reference of what the columnar readers
(services/api/csv_table.py, parquet.py, json_batch.py) must answer: every body parsed whole, row
by row into Python lists, then validated fit by fit with the service's own `_specs`.

read(kind, body, defaults) → ("stored", fits) with fits as (instrument, labels, t_u, t_c) in the
body's order, or ("refused", status, problem body without its type and title)."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from services.api.batches import _checked
from services.api.problems import Problem, from_validation, invalid_field
from shared.contract.schemas import BatchCreate, instrument_name
from shared.runtime.settings import Settings


def read(kind: str, body: bytes, defaults: dict[str, Any], settings: Settings) -> tuple[Any, ...]:
    try:
        fits, defaults = _json(body) if kind == "json" else (_long_table(kind, body), defaults)
        checked = _checked(defaults, lambda: iter(fits), len(fits), SimpleNamespace(settings=settings))  # type: ignore[arg-type]
        specs = list(checked.validated(settings))
    except Problem as refused:
        return ("refused", refused.status, json.loads(json.dumps({"detail": refused.detail, "errors": refused.errors})))
    return ("stored", [(s.instrument, s.labels, [float(v) for v in s.t_u], [float(v) for v in s.t_c]) for s in specs])


def _json(body: bytes) -> tuple[list[tuple[list[Any], dict[str, Any]]], dict[str, Any]]:
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}", slug="malformed") from exc
    try:
        batch = BatchCreate.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc) from exc
    return [(["fits", i], fit.model_dump()) for i, fit in enumerate(batch.fits)], batch.defaults


def _long_table(kind: str, body: bytes) -> list[tuple[list[Any], dict[str, Any]]]:
    if kind == "parquet":
        table = pq.read_table(pa.BufferReader(body))
        grouped = _group(table.to_pylist(), "instrument" in table.column_names)
    else:
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise Problem(400, f"the CSV is not UTF-8: {exc}", slug="malformed") from exc
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"series", "t_u", "t_c"} <= set(reader.fieldnames):
            raise Problem(400, "the CSV header must name the columns series,t_u,t_c", slug="malformed")
        grouped = _group(reader, "instrument" in reader.fieldnames)
    if not grouped:
        raise Problem(400, "the CSV has no data rows", slug="malformed")
    return [
        (["series", name], {"t_u": u, "t_c": c, "labels": {"series": name}, "instrument": instrument})
        for name, (instrument, u, c) in grouped.items()
    ]


def _group(rows: Any, with_instrument: bool) -> dict[str, tuple[str | None, list[float], list[float]]]:
    grouped: dict[str, tuple[str | None, list[float], list[float]]] = {}
    current = None
    for line, row in enumerate(rows, start=2):
        try:
            t_u, t_c = float(row["t_u"]), float(row["t_c"])
        except (TypeError, ValueError) as exc:
            raise Problem(
                400,
                f"line {line}: t_u and t_c must be numbers",
                slug="malformed",
                errors=[{"loc": ["line", line], "msg": "not a number"}],
            ) from exc
        name = str(row["series"])
        cell = row["instrument"] if with_instrument else None
        instrument = str(cell) if cell is not None else instrument_name(name)
        if name != current and name in grouped:
            raise invalid_field(
                ["series", name],
                f"line {line}: the rows of series {name!r} are not together",
                f"series {name!r}: its rows must be consecutive (line {line} starts it again)",
            )
        if name == current and instrument != grouped[name][0]:
            raise invalid_field(
                ["series", name],
                f"line {line}: series {name!r} names a second instrument",
                f"series {name!r}: one instrument per series (line {line} names {instrument!r})",
            )
        current = name
        series = grouped.setdefault(name, (instrument, [], []))
        series[1].append(t_u)
        series[2].append(t_c)
    return grouped
