"""Request bodies read in bounded pieces: every limit is enforced while the bytes arrive.

A body is copied from the socket to a spool (memory up to 1 MiB, a temporary file past
it) in 1 MiB pieces, and a counter looks at each piece as it passes:
- `Content-Length` over `max_body_bytes` is refused before a byte is read, and a body
  without one (chunked) as soon as it passes the limit;
- a single fit's JSON (and the rest of the small JSON bodies) is followed by ijson's C
  parser, event by event (JsonCounter): the elements of every `t_u` and `t_c` array (per
  array: `max_points_per_fit`; all of them: twice `max_points_per_batch`, one per reading),
  the fits of `fits` (`max_fits_per_batch`), and every value of the body against a budget a
  request of the largest allowed size needs;
- a JSON batch's bytes are scanned in numpy as they pass (where each fit begins, the runs of
  numbers, the values: json_batch.py, fit_starts.py), its fits decoded one at a time after; and
  CSV and Parquet batches are read block by block into columns (long_table.py), every limit
  checked as the fits or rows arrive.
So an oversize body costs the API a 1 MiB buffer and the time to read up to the limit it
passes, never the memory of parsing it; the rest of it is then read and discarded (within a
bound) so that the client reads its 413. Only a body within every limit is parsed for real.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

import ijson
from flask import request
from ijson.utils import sendable_list
from werkzeug.wsgi import LimitedStream

from services.api.problems import Problem
from shared.runtime.settings import Settings

_PIECE = 1 << 20
_POINT_ARRAYS = ("t_u", "t_c")
# Values a fit may carry besides its readings (options, labels, indices...): generous.
_VALUES_PER_FIT = 256


def too_large(loc: list[Any], detail: str) -> Problem:
    return Problem(413, detail, slug="data-too-large", errors=[{"loc": loc, "msg": detail}])


def too_many_fits(detail: str) -> Problem:
    return Problem(413, detail, slug="data-too-large", errors=[{"loc": ["fits"], "msg": "too many fits"}])


class Spooling:
    """The request body as it is read: each piece seen by `check` and copied to a spool (memory up
    to 1 MiB, a temporary file past it); 413 past any limit. A reader pulls pieces with read() (a
    parser given it as its file), or spool() reads them all."""

    def __init__(self, check: Callable[[bytes], None], settings: Settings) -> None:
        self.check = check
        self.settings = settings
        self.limit = settings.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > self.limit:
            drain_request(settings)
            raise too_large(["body"], f"the body is {declared:,} bytes, the limit is {self.limit:,}")
        # Werkzeug's stream stops at Content-Length, and for a chunked body at max_content_length.
        self.stream = request.stream
        self.out = tempfile.SpooledTemporaryFile(max_size=_PIECE)  # noqa: SIM115  (handed to the caller)
        self.size = 0

    def read(self, size: int = _PIECE) -> bytes:
        if size == 0:  # a parser asking whether this is a binary file
            return b""
        piece = self.stream.read(_PIECE if size < 0 else min(size, _PIECE))
        if piece:
            self.size += len(piece)
            if self.size > self.limit:
                raise too_large(["body"], f"the body passes the limit of {self.limit:,} bytes")
            self.check(piece)
            self.out.write(piece)
        return piece

    def finish(self) -> IO[bytes]:
        """The rest read through the same checks; the spool, from its start."""
        while self.read():
            pass
        self.out.seek(0)
        return self.out

    def refused(self, problem: BaseException) -> None:
        """The body refused: the spool goes, and the rest is drained (see drain) so that the client
        reads the problem (a 413 past a limit, a 503 past the parse budget, a 4xx of a bad fit)."""
        self.out.close()
        if isinstance(problem, Problem):
            drain(self.stream, self.settings)


def spool(check: Callable[[bytes], None], settings: Settings) -> IO[bytes]:
    """The request body, copied to a spool while `check` sees each piece; 413 past any limit."""
    spooling = Spooling(check, settings)
    try:
        return spooling.finish()
    except BaseException as refused:
        spooling.refused(refused)
        raise


def drain_request(settings: Settings) -> None:
    """Drain the body of a request refused before it was read (see drain)."""
    declared = request.content_length
    if declared is not None and declared > settings.max_body_bytes:
        # Werkzeug refuses to open request.stream past max_content_length: the raw input, bounded.
        drain(LimitedStream(request.environ["wsgi.input"], declared), settings)
    else:
        drain(request.stream, settings)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def drain(stream: _Readable, settings: Settings) -> None:
    """Read and discard what is left of a refused body, a piece at a time, up to
    `drain_refused_bytes` or `drain_refused_seconds`. A client that sends its whole body before
    reading the answer (urllib, and most plain HTTP clients) then reads the 413 problem; closing
    with the body unread would reset its connection instead. Past either bound the connection is
    closed: a client that streams without end cannot hold a thread for longer."""
    left, ends = settings.drain_refused_bytes, time.monotonic() + settings.drain_refused_seconds
    while left > 0 and time.monotonic() < ends:
        piece = stream.read(min(_PIECE, left))
        if not piece:
            return
        left -= len(piece)


class JsonCounter:
    """Follows a JSON body's events and refuses it at the first count past a limit."""

    def __init__(self, settings: Settings) -> None:
        self.per_array = settings.max_points_per_fit
        self.points_left = 2 * settings.max_points_per_batch
        self.max_fits = settings.max_fits_per_batch
        self.values_left = 2 * settings.max_points_per_batch + _VALUES_PER_FIT * settings.max_fits_per_batch + 4096
        self.events = sendable_list()
        self.parser = ijson.basic_parse_coro(self.events, use_float=True)
        # One entry per open container: [the key it sits under, whether it is a map, elements so far].
        self.open: list[list[Any]] = []
        self.key: str | None = None
        self.fits = 0
        self.coarse = False

    def __call__(self, piece: bytes) -> None:
        if self.coarse:
            self._count_separators(piece)
            return
        try:
            self.parser.send(piece)
        except (ijson.JSONError, UnicodeDecodeError):
            # Not strict JSON: NaN and Infinity (which Python's parser takes, and validation then
            # names as a 422), a string that is not UTF-8 or holds a lone surrogate's escape (which
            # ijson refuses with a UnicodeDecodeError: the real parse names the first as a 400, the
            # field the second lands in as a 422), or a malformed body (a 400 from the real parse).
            # The rest is bounded by its separators, which are never fewer than its values less
            # its containers.
            self.coarse = True
            self._count_separators(piece)
            return
        events = self.events
        self.values_left -= len(events)
        if self.values_left < 0:
            raise too_large(["body"], "the body holds more values than a request of the largest allowed size")
        open_ = self.open
        for event, value in events:
            if event == "map_key":
                self.key = value
                continue
            if event in ("end_array", "end_map"):
                open_.pop()
                continue
            if open_ and not open_[-1][1]:  # an element of the array on top
                top = open_[-1]
                top[2] += 1
                if top[0] in _POINT_ARRAYS:
                    self._point(top)
                elif top[0] == "fits" and len(open_) == 2:
                    self.fits += 1
                    if self.fits > self.max_fits:
                        raise too_large(["fits"], f"more than {self.max_fits:,} fits in one batch")
            if event in ("start_array", "start_map"):
                in_map = bool(open_) and open_[-1][1]
                open_.append([self.key if in_map else None, event == "start_map", 0])
                self.key = None
        del events[:]

    def _point(self, array: list[Any]) -> None:
        if array[2] > self.per_array:
            raise too_large([array[0]], f"more than {self.per_array:,} points in one fit")
        self.points_left -= 1
        if self.points_left < 0:
            raise too_large(["fits"], "more points in all than one request may carry")

    def _count_separators(self, piece: bytes) -> None:
        self.values_left -= piece.count(b",")
        if self.values_left < 0:
            raise too_large(["body"], "the body holds more values than a request of the largest allowed size")

    def close(self) -> None:
        if not self.coarse:
            try:
                self.parser.close()
            except (ijson.JSONError, UnicodeDecodeError):
                self.coarse = True  # the real parse says what is wrong


def json_within_limits(settings: Settings) -> Any:
    """The JSON body, parsed only once it has passed every limit while it was read."""
    counter = JsonCounter(settings)
    with spool(counter, settings) as body:
        counter.close()
        raw = body.read()
    if not raw:
        raise Problem(400, "the request body is empty; send a JSON object", slug="malformed")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}", slug="malformed") from exc
