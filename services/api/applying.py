"""POST /v1/apply: readings `instrument,t_u` calibrated with each instrument's current calibration.

With a third column `u_t_u` (each reading's standard uncertainty), each row's answer adds `u_t_c`,
its standard uncertainty on the calibration (shared/domain/predictions.py, forward evaluation).

Millions of rows in constant memory. The body is spooled (to disk past a few MB) and read twice in
blocks with pyarrow: once to check every row and find the instruments named, with the lowest and
highest reading of each; then, every calibration found and every answer known to be finite, once
more to stream the calibrated rows out. So a bad row is a 4xx before the first byte of the answer,
never a truncated 200.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from services.api import spreadsheets
from services.api.problems import Problem
from shared.domain import calibration
from shared.domain.predictions import forward_uncertainty
from shared.store.models import Fit

COLUMNS = ["instrument", "t_u", "t_c", "lower", "upper", "fit_id"]
UNCERTAIN = "u_t_u"  # the optional input column; the answer's column for it is u_t_c, after fit_id
_BLOCK_BYTES = 1 << 20
# What an apply holds while it runs, besides its spool: a block's arrays, and the survey's and the
# calibrations' figures per instrument (a few hundred bytes each, at most max_fits_per_batch).
HELD_BYTES = 64 << 20
_TYPES = {"instrument": pa.string(), "t_u": pa.float64(), UNCERTAIN: pa.float64()}


def _blocks(body: IO[bytes], uncertain: bool) -> Iterator[pa.RecordBatch]:
    body.seek(0)
    columns = ["instrument", "t_u", UNCERTAIN] if uncertain else ["instrument", "t_u"]
    read = pa_csv.ConvertOptions(column_types={c: _TYPES[c] for c in columns}, include_columns=columns)
    yield from pa_csv.open_csv(body, read_options=pa_csv.ReadOptions(block_size=_BLOCK_BYTES), convert_options=read)


def _row_problem(status: int, row: int, detail: str, slug: str) -> Problem:
    # Rows count the readings: row 1 is the line after the header.
    return Problem(
        status, f"row {row} (line {row + 1}): {detail}", slug=slug, errors=[{"loc": ["row", row], "msg": detail}]
    )


@dataclass
class Readings:
    """What the first pass learned: each instrument's lowest and highest reading, and its first row."""

    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)
    first_row: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    uncertain: bool = False  # the readings carry their u_t_u


def survey(body: IO[bytes], max_instruments: int) -> Readings:
    """Check every row (an instrument, a finite t_u) and gather each instrument's range: at most
    `max_instruments` of them (what the survey holds grows with them, not with the rows)."""
    found = Readings()
    try:
        header = body.readline().decode("utf-8", "replace").strip().split(",")
        if "instrument" not in header or "t_u" not in header:
            raise Problem(400, "the CSV header must name the columns instrument,t_u", slug="malformed")
        found.uncertain = UNCERTAIN in header
        for block in _blocks(body, found.uncertain):
            _survey_block(block, found)
            if len(found.first_row) > max_instruments:
                raise Problem(
                    413,
                    f"more than {max_instruments:,} instruments in one request (as many as a batch may calibrate)",
                    slug="data-too-large",
                    errors=[{"loc": ["instrument"], "msg": "too many instruments"}],
                )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _first_unreadable(body) or Problem(400, f"not a readable CSV: {exc}", slug="malformed") from exc
    if not found.rows:
        raise Problem(400, "the CSV has no readings", slug="malformed")
    return found


def _survey_block(block: pa.RecordBatch, found: Readings) -> None:
    names, t_u = block.column(0), block.column(1)
    valid = pc.and_(pc.is_valid(names), pc.is_finite(t_u).fill_null(False))
    if not pc.all(valid).as_py():
        row = found.rows + int(pc.index(valid, False).as_py()) + 1
        raise _row_problem(422, row, "an instrument and a finite t_u are needed", "invalid-field")
    if found.uncertain:
        u = block.column(2)
        fine = pc.and_(pc.is_finite(u), pc.greater_equal(u, 0.0)).fill_null(False)
        if not pc.all(fine).as_py():
            row = found.rows + int(pc.index(fine, False).as_py()) + 1
            raise _row_problem(422, row, "u_t_u must be a finite number ≥ 0", "invalid-field")
    grouped = pa.table({"instrument": names, "t_u": t_u, "row": pa.array(np.arange(len(t_u)) + found.rows + 1)})
    stats = grouped.group_by("instrument").aggregate([("t_u", "min"), ("t_u", "max"), ("row", "min")])
    for name, low, high, row in zip(
        *(stats.column(c).to_pylist() for c in ("instrument", "t_u_min", "t_u_max", "row_min")), strict=True
    ):
        found.low[name] = min(low, found.low.get(name, low))
        found.high[name] = max(high, found.high.get(name, high))
        found.first_row.setdefault(name, row)
    found.rows += len(t_u)


def _first_unreadable(body: IO[bytes]) -> Problem | None:
    """The first row pyarrow could not read, found the slow way (only when there is one)."""
    body.seek(0)
    reader = csv.DictReader(io.TextIOWrapper(body, encoding="utf-8", errors="replace", newline=""))
    for row, values in enumerate(reader, start=1):
        try:
            float(values.get("t_u") or "")
        except ValueError:
            return _row_problem(422, row, f"t_u {values.get('t_u')!r} is not a number", "invalid-field")
    return None


@dataclass(frozen=True)
class Lines:
    """The calibrations applied, as arrays indexed alike: one per instrument."""

    index: dict[str, int]
    w: np.ndarray
    b: np.ndarray
    fit_ids: pa.Array
    # For bounds: t-quantile × residual SD, n, mean and Sxx of each calibration's training points.
    ts: np.ndarray | None = None
    n: np.ndarray | None = None
    mean: np.ndarray | None = None
    sxx: np.ndarray | None = None
    # For u_t_c: each calibration's covariance of (w, b), (instruments, 2, 2).
    covariance: np.ndarray | None = None


def lines_for(readings: Readings, current: dict[str, Fit], known: set[str], interval: float | None) -> Lines:
    """Each instrument's line, checked: known to this tenant, calibrated, able to give the bounds
    asked for, and finite over its whole range of readings (a 4xx naming a row otherwise)."""
    names = sorted(readings.first_row, key=readings.first_row.__getitem__)
    for name in names:
        row = readings.first_row[name]
        fit = current.get(name)
        if fit is None:
            why = "has no succeeded calibration yet" if name in known else "is not an instrument of yours"
            raise _row_problem(422, row, f"instrument {name!r} {why}", "unknown-instrument")
        spread = fit.prediction_spread() if interval is not None else None
        if interval is not None and spread is None:
            raise _row_problem(
                409, row, f"the calibration of {name!r} (fit {fit.id}) cannot give prediction bounds", "no-interval"
            )
        if readings.uncertain and fit.covariance() is None:
            raise _row_problem(
                409,
                row,
                f"the calibration of {name!r} (fit {fit.id}) has no covariance of its parameters: it cannot give u_t_c",
                "no-uncertainty",
            )
        if (interval is not None or readings.uncertain) and fit.converged is False:
            raise _row_problem(
                409,
                row,
                f"the calibration of {name!r} (fit {fit.id}) has not converged: its bounds would not describe its line",
                "not-converged",
            )
        raw = fit.raw_params()
        assert raw is not None
        try:
            calibration.predict(*raw, [readings.low[name], readings.high[name]], interval=interval, spread=spread)
        except calibration.PredictionOutOfRange:
            raise _row_problem(
                409,
                row,
                f"a reading of {name!r} is calibrated past the range of a 64-bit float",
                "prediction-out-of-range",
            ) from None
    fits = [current[name] for name in names]
    raws = [fit.raw_params() or (0.0, 0.0) for fit in fits]
    lines = Lines(
        index={name: i for i, name in enumerate(names)},
        w=np.array([raw[0] for raw in raws]),
        b=np.array([raw[1] for raw in raws]),
        fit_ids=pa.array([fit.id for fit in fits]),
        covariance=np.array([fit.covariance() for fit in fits]) if readings.uncertain else None,
    )
    if interval is None:
        return lines
    spreads = [fit.prediction_spread() for fit in fits]
    assert all(spreads)
    ts = [calibration.student_t_quantile((1 + interval) / 2, s.n - 2) * s.residual_sd for s in spreads if s is not None]
    return Lines(
        lines.index,
        lines.w,
        lines.b,
        lines.fit_ids,
        ts=np.array(ts),
        n=np.array([s.n for s in spreads if s is not None], dtype=np.float64),
        mean=np.array([s.t_u_mean for s in spreads if s is not None]),
        sxx=np.array([s.t_u_sxx for s in spreads if s is not None]),
        covariance=lines.covariance,
    )


def calibrated(body: IO[bytes], lines: Lines) -> Iterator[bytes]:
    """The answer's CSV, block by block; closes the body at the end."""
    uncertain = lines.covariance is not None
    try:
        yield (",".join(COLUMNS + (["u_t_c"] if uncertain else [])) + "\n").encode()
        options = pa_csv.WriteOptions(include_header=False)
        for block in _blocks(body, uncertain):
            out = io.BytesIO()
            pa_csv.write_csv(_calibrate(block, lines), out, options)
            yield out.getvalue()
    finally:
        body.close()


def _calibrate(block: pa.RecordBatch, lines: Lines) -> pa.Table:
    names, t_u = block.column(0), block.column(1)
    encoded = pc.dictionary_encode(names)
    positions = np.array([lines.index[name] for name in encoded.dictionary.to_pylist()], dtype=np.int64)
    at = positions[encoded.indices.to_numpy()]
    u = t_u.to_numpy()
    t_c = lines.w[at] * u + lines.b[at]
    columns: dict[str, Any] = {"instrument": spreadsheets.text_column(names), "t_u": t_u, "t_c": t_c}
    if lines.ts is not None and lines.n is not None and lines.mean is not None and lines.sxx is not None:
        d = u - lines.mean[at]
        half = lines.ts[at] * np.sqrt(1 + 1 / lines.n[at] + d * d / lines.sxx[at])
        columns |= {"lower": t_c - half, "upper": t_c + half}
    else:
        empty = pa.nulls(len(u), pa.float64())
        columns |= {"lower": empty, "upper": empty}
    columns["fit_id"] = lines.fit_ids.take(pa.array(at))
    if lines.covariance is not None:
        columns["u_t_c"] = forward_uncertainty(u, lines.w[at], lines.covariance[at], block.column(2).to_numpy())
    return pa.table(columns)
