"""A CSV batch (`series,t_u,t_c[,instrument][,u_t_c][,u_t_u]`) read by pyarrow's CSV reader, a block at a time,
into a LongTable: the body waits in its spool (a temporary file past 1 MiB), and only the known
columns of one block are ever text in memory."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Sequence
from typing import IO

import pyarrow as pa
import pyarrow.csv as pacsv

from services.api.bodies import spool, too_large
from services.api.long_table import (
    READ_COLUMNS,
    UNCERTAINTY_COLUMNS,
    LongTable,
    RowError,
    first_row_error,
    numbers,
    refuse_repeated_columns,
)
from services.api.problems import Problem
from shared.runtime.settings import Settings

_REQUIRED = ("series", "t_u", "t_c")
# Bytes of CSV parsed at a time: the text of one block is what a request holds beside its arrays.
# Larger blocks are no faster, and Arrow's allocator keeps what they took: 4 MiB blocks left a
# process 200 MB larger after one 14M-row batch, 256 KiB ones 37 MB (the same 0.4 s).
_BLOCK_BYTES = 256 << 10
_HEADER_BYTES = 64 << 10


def read(settings: Settings) -> LongTable:
    """The body's series, every limit checked while it was received (rows) and read (per series)."""
    lines = received = 0
    text = codecs.getincrementaldecoder("utf-8")()
    after_cr = False  # the last piece ended with a carriage return: a line feed first is its CRLF

    def check(piece: bytes) -> None:
        nonlocal lines, received, after_cr
        lines += _line_breaks(piece, after_cr)
        after_cr = piece.endswith(b"\r")
        if lines > settings.max_points_per_batch + 1:  # and the header
            raise too_large(["body"], f"more than {settings.max_points_per_batch:,} rows in one batch")
        _utf8(text, piece, received)
        received += len(piece)

    with spool(check, settings) as body:
        _utf8(text, b"", received, final=True)
        names = columns(body, _REQUIRED, READ_COLUMNS)
        with_instrument = "instrument" in names
        uncertain = tuple(column for column in UNCERTAINTY_COLUMNS if column in names)
        table = LongTable(settings, lines + 1, uncertain)
        if not lines:
            return table  # the header alone, without a line break: no rows (Arrow cannot read it)
        try:
            _fill(table, body, with_instrument, uncertain)
        except RowError as found:
            raise _named(body, with_instrument, found.rows, uncertain=uncertain) from None
        except pa.ArrowInvalid as exc:
            # A row the reader cannot split (more or fewer cells than the header): named by the
            # row-by-row reader where it can, else Arrow's own words.
            problem = _named(
                body, with_instrument, lines + 1, fallback=f"not a readable CSV: {exc}", uncertain=uncertain
            )
            raise problem from exc
    return table


def _line_breaks(piece: bytes, after_cr: bool) -> int:
    """Line breaks as the csv module and Arrow count them: LF, CRLF and a carriage return alone
    (classic Mac files, still written by some spreadsheets); a quoted one counts too (a bound)."""
    lone_crs = piece.count(b"\r") - piece.count(b"\r\n")
    return piece.count(b"\n") + lone_crs - (after_cr and piece.startswith(b"\n"))


def _utf8(decoder: codecs.IncrementalDecoder, piece: bytes, offset: int, final: bool = False) -> None:
    """Every byte of the body is UTF-8, or a 400 saying where, in Python's words for the whole body."""
    try:
        decoder.decode(piece, final)
    except UnicodeDecodeError as exc:
        start, end = offset + exc.start, offset + exc.end
        where = (
            f"byte 0x{piece[exc.start]:02x} in position {start}"
            if end - start == 1
            else f"bytes in position {start}-{end - 1}"
        )
        raise Problem(
            400, f"the CSV is not UTF-8: 'utf-8' codec can't decode {where}: {exc.reason}", slug="malformed"
        ) from exc


def has_line_break(body: IO[bytes]) -> bool:
    """Whether the body holds a line break (else it is a header alone, which Arrow cannot read)."""
    body.seek(0)
    try:
        while piece := body.read(_HEADER_BYTES):
            if b"\n" in piece or b"\r" in piece:
                return True
        return False
    finally:
        body.seek(0)


def columns(body: IO[bytes], required: Sequence[str], read: Sequence[str]) -> list[str]:
    """The header's names, checked: every `required` column named, and none of those calib `read`s
    named twice (400 either way, naming them)."""
    names = header(body)
    if not set(required) <= set(names):
        raise Problem(400, f"the CSV header must name the columns {','.join(required)}", slug="malformed")
    refuse_repeated_columns(names, "CSV header", read=read)
    return names


def header(body: IO[bytes]) -> list[str]:
    """The header's names, read by the csv module (whichever line break ends it, quotes and a
    spreadsheet's byte-order mark as it reads them); the body is left at its start."""
    first = body.read(_HEADER_BYTES)
    body.seek(0)
    # The body is UTF-8 (checked as it arrived); a piece may end inside a character, which waits.
    # A spreadsheet's byte-order mark is not part of the header.
    text = codecs.getincrementaldecoder("utf-8-sig")().decode(first)
    try:
        # The csv module finds the header's end, whichever line break ends it.
        return next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:  # a carriage return alone inside the header line, a broken quote
        raise Problem(400, f"the CSV's header line cannot be read: {exc}", slug="malformed") from exc


def _fill(table: LongTable, body: IO[bytes], with_instrument: bool, uncertain: tuple[str, ...]) -> None:
    wanted = [*_REQUIRED, *(["instrument"] if with_instrument else []), *uncertain]
    reader = pacsv.open_csv(
        body,
        read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
        # A quoted cell may hold a line break, as Python's csv module reads it.
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted,
            column_types=dict.fromkeys(wanted, pa.string()),
            strings_can_be_null=False,
        ),
    )
    for block in reader:
        t_u, t_c = numbers(block.column("t_u")), numbers(block.column("t_c"))
        if t_u is None or t_c is None:
            raise RowError(table.rows + block.num_rows)
        instrument = block.column("instrument") if with_instrument else None
        stated = {column: numbers(block.column(column)) for column in uncertain}
        if any(values is None for values in stated.values()):
            raise RowError(table.rows + block.num_rows)
        table.add(block.column("series"), t_u, t_c, instrument, stated)  # type: ignore[arg-type]


def _named(
    body: IO[bytes], with_instrument: bool, rows: int, fallback: str = "", uncertain: tuple[str, ...] = ()
) -> Problem:
    """The first bad row among the first `rows`, as the row-by-row reader names it."""
    body.seek(0)
    text = io.TextIOWrapper(body, encoding="utf-8-sig", newline="")
    try:
        problem = first_row_error(csv.DictReader(text), with_instrument, rows, csv_cells=True, uncertain=uncertain)
    except (csv.Error, UnicodeDecodeError) as exc:  # stray quotes or line breaks: the client's CSV
        problem = Problem(400, f"not a readable CSV: {exc}", slug="malformed")
    finally:
        text.detach()
    return problem or Problem(400, fallback or "not a readable CSV", slug="malformed")
