"""Admission by memory: each API process lends the requests that parse large bodies (batches, apply)
a share of a budget (`CALIB_PARSE_MEMORY_BYTES`), estimated from what the request says of itself
before it is parsed. A request that would pass the budget waits a little for others to finish, then
gets 503 with Retry-After naming the budget: never the out-of-memory killer, which would take every
request the process serves.

A request larger than the whole budget is still admitted when it is alone: a legal batch must be
able to run, if only one at a time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import g, request

from services.api.bodies import drain_request
from services.api.problems import Problem
from shared.settings import Settings

# What parsing costs per byte of body, measured (benchmarks/README.md). A batch read into columns
# (services/api/long_table.py, json_batch.py) holds 16 bytes per point, and a point takes 4 bytes
# of CSV or JSON at the least ("1,1\n"), 12 to 20 as numbers are usually written: 3 is generous.
# A body parsed whole (a single fit, or a batch that is not strict JSON) becomes Python numbers,
# lists and validated models, about ten times the text. A Parquet row, once its known columns are
# decoded, costs its 16 bytes and a share of its series' name and model: 64 in all.
TEXT_EXPANSION_IN_COLUMNS = 3
TEXT_EXPANSION_PARSED_WHOLE = 10
PARQUET_ROW_BYTES = 64
# How long a request waits for room before its 503.
_WAIT_SECONDS = 2.0
_RETRY_AFTER_SECONDS = 5


class ParseBudget:
    """The bytes this process's requests may hold while their bodies are parsed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.refused = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, estimate: int) -> Iterator[Reservation]:
        reservation = Reservation(self)
        reservation.grow(estimate)
        try:
            yield reservation
        finally:
            with self._room:
                self.used -= reservation.held
                self._room.notify_all()

    def _take(self, more: int, holding: int) -> None:
        deadline = time.monotonic() + _WAIT_SECONDS
        with self._room:
            while self.used + more > self.total and self.used - holding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.refused += 1
                    raise Problem(
                        503,
                        f"this API process is parsing {self.used:,} bytes' worth of request bodies; this one needs "
                        f"about {more:,} more, past its budget of {self.total:,} (CALIB_PARSE_MEMORY_BYTES): retry",
                        slug="quota-exceeded",
                        retry_after=_RETRY_AFTER_SECONDS,
                        extra={
                            "quota": "parse_memory_bytes",
                            "limit": self.total,
                            "requested": more,
                            "remaining": max(0, self.total - self.used),
                        },
                    )
                self._room.wait(left)
            self.used += more


class Reservation:
    """One request's share, which may grow once it knows more (a Parquet file's row count)."""

    def __init__(self, budget: ParseBudget) -> None:
        self.budget = budget
        self.held = 0

    def grow(self, estimate: int) -> None:
        more = max(0, math.ceil(estimate) - self.held)
        if more:
            self.budget._take(more, self.held)
            self.held += more


@contextmanager
def parsing(budget: ParseBudget, settings: Settings, expansion: int, fixed: int = 0) -> Iterator[Reservation]:
    """This request's share while its body is parsed and stored: its length times `expansion`
    (a chunked body: the most a body may be; one over the limit: nothing, it is refused unparsed)
    and `fixed` more; `grown()` lets a reader say more once it knows it. Refused for room, the
    body is drained first, so that a client sending it whole reads the 503."""
    declared = request.content_length
    size = settings.max_body_bytes if declared is None else declared
    if size > settings.max_body_bytes:
        size = 0
    try:
        held = budget.hold(size * expansion + fixed)
        reservation = held.__enter__()
    except Problem:
        drain_request(settings)
        raise
    try:
        g.parse_reservation = reservation
        yield reservation
    finally:
        g.pop("parse_reservation", None)
        held.__exit__(None, None, None)


def grown(estimate: int) -> None:
    """The request now knows it needs about `estimate` bytes (a Parquet file's rows, say)."""
    reservation = g.get("parse_reservation")
    if isinstance(reservation, Reservation):
        reservation.grow(estimate)
