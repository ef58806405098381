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
import dataclasses
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from services.api import csv_table, spreadsheets
from services.api.long_table import numbers
from services.api.predictions import NO_COVARIANCE, WEIGHTED_NO_INTERVAL
from services.api.problems import Problem
from shared.domain import calibration
from shared.domain.functions import Forward
from shared.domain.predictions import forward_interval, forward_of, forward_uncertainty, standard_uncertainty
from shared.store.models import Fit

COLUMNS = ["instrument", "t_u", "t_c", "lower", "upper", "fit_id"]
UNCERTAIN = "u_t_u"  # the optional input column; the answer's column for it is u_t_c, after fit_id
_BLOCK_BYTES = 1 << 20
# What an apply holds while it runs, besides its spool: a block's arrays, and the survey's and the
# calibrations' figures per instrument (a few hundred bytes each, at most max_fits_per_batch).
HELD_BYTES = 64 << 20
# The columns an apply reads; any other is never read.
_READ = ("instrument", "t_u", UNCERTAIN)


@dataclass(frozen=True)
class Block:
    """A block of readings: the instruments' names as read, and the numbers as float64 (u_t_u where read)."""

    names: pa.Array
    t_u: np.ndarray
    u_t_u: np.ndarray | None


class _NotANumber(Exception):
    """Some t_u or u_t_u cell of a block is not a number as Python's float() reads it."""


def _blocks(body: IO[bytes], uncertain: bool) -> Iterator[Block]:
    """The body's readings a block at a time. Numbers are read as a batch's are (long_table.numbers:
    what Python's float() reads), so a reading that is a number in a batch is one here."""
    body.seek(0)
    columns = ["instrument", "t_u", UNCERTAIN] if uncertain else ["instrument", "t_u"]
    read = pa_csv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()), include_columns=columns)
    # A quoted cell may hold a line break, as the csv module (which names a bad row) reads it.
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    options = pa_csv.ReadOptions(block_size=_BLOCK_BYTES)
    for block in pa_csv.open_csv(body, read_options=options, parse_options=parse, convert_options=read):
        t_u = numbers(block.column(1))
        u_t_u = numbers(block.column(2)) if uncertain else None
        if t_u is None or (uncertain and u_t_u is None):
            raise _NotANumber
        yield Block(block.column(0), t_u, u_t_u)


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
        header = csv_table.columns(body, ("instrument", "t_u"), _READ)
        found.uncertain = UNCERTAIN in header
        if not csv_table.has_line_break(body):
            raise Problem(400, "the CSV has no readings", slug="malformed")  # the header alone
        for block in _blocks(body, found.uncertain):
            _survey_block(block, found)
            if len(found.first_row) > max_instruments:
                raise Problem(
                    413,
                    f"more than {max_instruments:,} instruments in one request (as many as a batch may calibrate)",
                    slug="data-too-large",
                    errors=[{"loc": ["instrument"], "msg": "too many instruments"}],
                )
    except (pa.ArrowInvalid, UnicodeDecodeError, _NotANumber) as exc:
        found_by_row = _first_unreadable(body, found.uncertain)
        raise found_by_row or Problem(
            400, f"not a readable CSV: {exc or 'a cell is not a number'}", slug="malformed"
        ) from exc
    if not found.rows:
        raise Problem(400, "the CSV has no readings", slug="malformed")
    return found


def _survey_block(block: Block, found: Readings) -> None:
    names, t_u = block.names, block.t_u
    valid = np.isfinite(t_u) & pc.is_valid(names).to_numpy(zero_copy_only=False)
    if not valid.all():
        row = found.rows + int(np.argmin(valid)) + 1
        raise _row_problem(422, row, "an instrument and a finite t_u are needed", "invalid-field")
    if block.u_t_u is not None:
        with np.errstate(invalid="ignore"):
            fine = np.isfinite(block.u_t_u) & (block.u_t_u >= 0.0)
        if not fine.all():
            row = found.rows + int(np.argmin(fine)) + 1
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


def _first_unreadable(body: IO[bytes], uncertain: bool) -> Problem | None:
    """The first row that could not be read, found the slow way (only when there is one): a number
    that is not one (422), or a row whose cells do not match the header (400: which is which would
    be a guess)."""
    body.seek(0)
    text = io.TextIOWrapper(body, encoding="utf-8-sig", errors="replace", newline="")
    try:
        for row, values in enumerate(csv.DictReader(text), start=1):
            for column in ("t_u", UNCERTAIN) if uncertain else ("t_u",):
                try:
                    float(values.get(column) or "")
                except ValueError:
                    return _row_problem(422, row, f"{column} {values.get(column)!r} is not a number", "invalid-field")
            if None in values or None in values.values():  # DictReader's marks of extra and missing cells
                return _row_problem(400, row, "the row's cells do not match the header's columns", "malformed")
    except csv.Error as exc:  # a stray quote: the client's CSV
        return Problem(400, f"not a readable CSV: {exc}", slug="malformed")
    finally:
        text.detach()
    return None


@dataclass(frozen=True)
class Function:
    """An instrument whose calibration is not a line: how it reads t_u (shared/domain/predictions.forward_of),
    its coefficients and their covariance, and for bounds its least-squares coefficients, residual SD and dof."""

    forward: Callable[[np.ndarray, np.ndarray], Forward]
    coefficients: np.ndarray
    covariance: np.ndarray | None
    opt: np.ndarray | None
    residual_sd: float | None
    dof: int

    @classmethod
    def of(cls, fit: Fit) -> Function:
        assert fit.model is not None and fit.parameters is not None
        opt = (fit.solution or {}).get("parameters_opt")
        values = np.asarray(fit.parameters["values"], dtype=np.float64)
        return cls(
            forward=forward_of(fit.model),
            coefficients=values,
            covariance=fit.model_covariance(),
            opt=np.asarray(opt, dtype=np.float64) if opt and None not in opt else None,
            residual_sd=fit.residual_sd,
            dof=fit.n_train - len(values),
        )

    def can_bound(self) -> bool:
        return self.covariance is not None and self.opt is not None and self.residual_sd is not None and self.dof > 0


@dataclass(frozen=True)
class Lines:
    """The calibrations applied, as arrays indexed alike: one per instrument (a line's w and b; 0 for an
    instrument whose calibration is another function, which `functions` holds by the same index)."""

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
    functions: dict[int, Function] = field(default_factory=dict)
    interval: float | None = None
    uncertain: bool = False


def lines_for(readings: Readings, current: dict[str, Fit], known: set[str], interval: float | None) -> Lines:
    """Each instrument's calibration, checked: known to this tenant, calibrated, able to give the bounds
    asked for, and finite over its whole range of readings (a 4xx naming a row otherwise)."""
    names = sorted(readings.first_row, key=readings.first_row.__getitem__)
    for name in names:
        row = readings.first_row[name]
        fit = current.get(name)
        if fit is None:
            why = "has no succeeded calibration yet" if name in known else "is not an instrument of yours"
            raise _row_problem(422, row, f"instrument {name!r} {why}", "unknown-instrument")
        _check(fit, name, row, readings, interval)
    fits = [current[name] for name in names]
    raws = [fit.raw_params() or (0.0, 0.0) for fit in fits]
    lines = Lines(
        index={name: i for i, name in enumerate(names)},
        w=np.array([raw[0] for raw in raws]),
        b=np.array([raw[1] for raw in raws]),
        fit_ids=pa.array([fit.id for fit in fits]),
        covariance=np.array([_line_covariance(fit) for fit in fits]) if readings.uncertain else None,
        functions={i: Function.of(fit) for i, fit in enumerate(fits) if fit.model is not None},
        interval=interval,
        uncertain=readings.uncertain,
    )
    if interval is None:
        return lines
    spreads = [fit.prediction_spread() if fit.model is None else None for fit in fits]
    ts = [
        calibration.student_t_quantile((1 + interval) / 2, s.n - 2) * s.residual_sd if s is not None else 0.0
        for s in spreads
    ]
    return dataclasses.replace(
        lines,
        ts=np.array(ts),
        n=np.array([s.n if s is not None else 1.0 for s in spreads], dtype=np.float64),
        mean=np.array([s.t_u_mean if s is not None else 0.0 for s in spreads]),
        sxx=np.array([s.t_u_sxx if s is not None else 1.0 for s in spreads]),
    )


def _line_covariance(fit: Fit) -> np.ndarray:
    found = fit.covariance() if fit.model is None else None
    return found if found is not None else np.zeros((2, 2))


def _check(fit: Fit, name: str, row: int, readings: Readings, interval: float | None) -> None:
    """One instrument's calibration can give what the request asks for, over its whole range of readings."""
    function = Function.of(fit) if fit.model is not None else None
    if interval is not None and fit.weighted:
        # As POST /v1/instruments/{id}/predict answers: bounds from the residual scatter would not
        # describe a new reading whose own uncertainty is what weighs it.
        raise _row_problem(
            409, row, f"the calibration of {name!r} (fit {fit.id}) {WEIGHTED_NO_INTERVAL}", "no-interval"
        )
    if function is not None and (interval is not None or readings.uncertain) and function.covariance is None:
        # Before the bounds' own check, as predict answers: the covariance is what both need.
        raise _row_problem(409, row, f"the calibration of {name!r} (fit {fit.id}) {NO_COVARIANCE}", "no-uncertainty")
    if interval is not None and (function.can_bound() if function else fit.prediction_spread() is not None) is False:
        raise _row_problem(
            409, row, f"the calibration of {name!r} (fit {fit.id}) cannot give prediction bounds", "no-interval"
        )
    if readings.uncertain and function is None and fit.covariance() is None:  # a function's: checked above
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
    ends = [readings.low[name], readings.high[name]]
    if function is not None:
        # A function may have no value inside the range (a Callendar–Van Dusen curve past its turning
        # point): every reading of the instrument is checked in the second pass; the ends here.
        with np.errstate(all="ignore"):
            finite = np.isfinite(function.forward(function.coefficients, np.asarray(ends)).t_c).all()
        if not finite:
            raise _row_problem(
                409,
                row,
                f"a reading of {name!r} has no value on its calibration (fit {fit.id}), or one past a 64-bit float",
                "prediction-out-of-range",
            )
        return
    raw = fit.raw_params()
    assert raw is not None
    try:
        calibration.predict(*raw, ends, interval=interval, spread=fit.prediction_spread() if interval else None)
    except calibration.PredictionOutOfRange:
        raise _row_problem(
            409,
            row,
            f"a reading of {name!r} is calibrated past the range of a 64-bit float",
            "prediction-out-of-range",
        ) from None


def calibrated(body: IO[bytes], lines: Lines) -> Iterator[bytes]:
    """The answer's CSV, block by block; closes the body at the end."""
    uncertain = lines.uncertain
    try:
        yield (",".join(COLUMNS + (["u_t_c"] if uncertain else [])) + "\n").encode()
        options = pa_csv.WriteOptions(include_header=False)
        for block in _blocks(body, uncertain):
            out = io.BytesIO()
            pa_csv.write_csv(_calibrate(block, lines), out, options)
            yield out.getvalue()
    finally:
        body.close()


def _calibrate(block: Block, lines: Lines) -> pa.Table:
    names, u = block.names, block.t_u
    encoded = pc.dictionary_encode(names)
    positions = np.array([lines.index[name] for name in encoded.dictionary.to_pylist()], dtype=np.int64)
    at = positions[encoded.indices.to_numpy()]
    t_c = lines.w[at] * u + lines.b[at]
    lower = upper = None
    if lines.ts is not None and lines.n is not None and lines.mean is not None and lines.sxx is not None:
        d = u - lines.mean[at]
        half = lines.ts[at] * np.sqrt(1 + 1 / lines.n[at] + d * d / lines.sxx[at])
        lower, upper = t_c - half, t_c + half
    u_t_c = None
    if lines.covariance is not None:
        assert block.u_t_u is not None  # a calibration's covariance is read only for readings that carry u_t_u
        u_t_c = forward_uncertainty(u, lines.w[at], lines.covariance[at], block.u_t_u)
    for position in np.unique(at) if lines.functions else ():
        function = lines.functions.get(int(position))
        if function is None:
            continue
        mine = at == position
        _apply_function(function, u[mine], mine, t_c, lower, upper, u_t_c, block, lines.interval)
    columns: dict[str, Any] = {"instrument": spreadsheets.text_column(names), "t_u": u, "t_c": t_c}
    empty = pa.nulls(len(u), pa.float64())
    columns |= {"lower": empty, "upper": empty} if lower is None else {"lower": lower, "upper": upper}
    columns["fit_id"] = lines.fit_ids.take(pa.array(at))
    if u_t_c is not None:
        columns["u_t_c"] = u_t_c
    return pa.table(columns)


def _apply_function(
    function: Function,
    readings: np.ndarray,
    mine: np.ndarray,
    t_c: np.ndarray,
    lower: np.ndarray | None,
    upper: np.ndarray | None,
    u_t_c: np.ndarray | None,
    block: Block,
    interval: float | None,
) -> None:
    """One instrument's rows of a block, on its calibration's function (in place): t_c, the bounds
    about its least-squares function and u_t_c, as POST /v1/fits/{id}/predict computes them."""
    with np.errstate(all="ignore"):
        own = function.forward(function.coefficients, readings)
        t_c[mine] = own.t_c
        if interval is not None and lower is not None and upper is not None:
            assert function.opt is not None and function.covariance is not None and function.residual_sd is not None
            at_opt = function.forward(function.opt, readings)
            low, high = forward_interval(at_opt, function.covariance, function.residual_sd, function.dof, interval)
            lower[mine], upper[mine] = low, high
        if u_t_c is not None and function.covariance is not None:
            assert block.u_t_u is not None
            given = block.u_t_u[mine]
            u_t_c[mine] = standard_uncertainty(own.d_coefficients, function.covariance, own.d_t_u, given)
