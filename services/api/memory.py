"""Admission by memory: each API process lends the requests that parse large bodies (batches, apply,
a fit) a share of a budget (`CALIB_PARSE_MEMORY_BYTES`). A batch's share grows as its reader reads
(what it holds: its readings and its fits); a fit's or an apply's is reserved before it is read. A
request that would pass the budget waits a little for older ones to finish, then gets 503 with
Retry-After naming the budget: never the out-of-memory killer, which would take every request the
process serves.

The oldest request parsing always goes on, whatever its size: a legal batch must be able to run,
if only one at a time, and shares that grow must not wait for each other.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pyarrow as pa
import pyarrow.compute as pc
from flask import g, request

from services.api.bodies import drain_request
from services.api.problems import Problem
from shared.runtime.settings import Settings

# What parsing costs, measured (benchmarks/README.md). A batch is read into columns
# (services/api/long_table.py, json_batch.py): each reading is 16 bytes (t_u and t_c as float64)
# and about as much again for a moment while its fit's rows are built and stored, each fit a
# validated model and its share of those rows, about 4 KiB (the 14M-reading CSV batch of 14,000
# fits took 360 MB: 24 bytes per reading and 4 KiB per fit reserve 393 MB for it); a batch
# reserves these as it reads them, so that a body refused for a limit while it is read (an
# oversize one) never held more than it had read. A body parsed whole (a single fit, or a batch
# that is not strict JSON) becomes Python numbers, lists and models, about ten times its text,
# reserved from its length before it is read.
POINT_BYTES = 24
FIT_BYTES = 4096
TEXT_EXPANSION_PARSED_WHOLE = 10
# How long a request waits for room before its 503.
_WAIT_SECONDS = 2.0
_RETRY_AFTER_SECONDS = 5


class ParseBudget:
    """The bytes this process's requests may hold while their bodies are parsed.

    A request past the budget waits for room only while an older request is still parsing: the
    oldest is always let through (as a request alone is, whatever its size). Requests whose shares
    grow as they read could otherwise each wait for the others, and all get their 503 together."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.refused = 0
        self._room = threading.Condition()
        self._arrivals = itertools.count()
        self._parsing: set[int] = set()  # the arrival numbers of the requests holding a share

    @contextmanager
    def hold(self, estimate: int) -> Iterator[Reservation]:
        with self._room:
            reservation = Reservation(self, next(self._arrivals))
            self._parsing.add(reservation.arrival)
        try:
            reservation.grow(estimate)
            yield reservation
        finally:
            with self._room:
                self._parsing.discard(reservation.arrival)
                self.used -= reservation.held
                self._room.notify_all()

    def _take(self, more: int, reservation: Reservation) -> None:
        deadline = time.monotonic() + _WAIT_SECONDS
        with self._room:
            while self.used + more > self.total and min(self._parsing) < reservation.arrival:
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
    """One request's share, which may grow once it knows more (what its reader has read)."""

    def __init__(self, budget: ParseBudget, arrival: int) -> None:
        self.budget = budget
        self.arrival = arrival
        self.held = 0

    def grow(self, estimate: int) -> None:
        more = max(0, math.ceil(estimate) - self.held)
        if more:
            self.budget._take(more, self)
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
    with ExitStack() as held:
        try:
            reservation = held.enter_context(budget.hold(size * expansion + fixed))
        except Problem:
            drain_request(settings)
            raise
        g.parse_reservation = reservation
        held.callback(g.pop, "parse_reservation", None)
        yield reservation


def grown(estimate: int) -> None:
    """The request now knows it needs about `estimate` bytes in all (the points and fits it has read)."""
    reservation = g.get("parse_reservation")
    if isinstance(reservation, Reservation):
        reservation.grow(estimate)


def holding(points: int, fits: int) -> None:
    """A batch reader has read `points` readings of `fits` fits: its share grows to hold them."""
    grown(points * POINT_BYTES + fits * FIT_BYTES)


# glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def prepare_for_large_bodies() -> None:
    """For a served API process, before its threads start. Large bodies are parsed by many threads
    at once, and each allocator would otherwise keep, per thread, the most any request took: Arrow
    allocates through the C library (its default, mimalloc, keeps freed pages per thread), and glibc
    keeps two arenas, not eight per core. Measured on eight oversize CSV bodies at once: about a
    fifth less peak growth, at the same speed (benchmarks/README.md)."""
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, 2)
    except OSError:  # not glibc (musl, macOS): its own policy stands
        pass
    # Arrow builds its registry of compute functions (casts, comparisons) at their first use: about
    # 45 MB of a process, paid by whichever batch came first. Built here, it is part of the idle
    # process; a body's memory is then the body's own, and the budget above measures only that.
    pc.cast(pa.array(["0.5"]), pa.float64())
