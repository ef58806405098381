"""What the app holds for its requests: settings, the database, the queue publisher."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import sqlalchemy as sa
import sqlalchemy.orm as so
from celery import Celery
from flask import current_app

from services.api.memory import ParseBudget
from services.api.waiting import Waits
from shared.runtime import failpoints
from shared.runtime.queue import RUN_CHUNK, queue_depth
from shared.runtime.settings import Settings
from shared.runtime.wakeups import PendingMark
from shared.store import outbox
from shared.store.db import Database
from shared.store.models import Fit

log = logging.getLogger("calib.api")

# A broker that answered this recently is taken to be up without asking again.
_BROKER_FRESH_SECONDS = 1.0


@dataclass
class QueueSnapshot:
    read_at: float = float("-inf")
    counts: dict[str, int] = field(default_factory=dict)
    depth: int | None = None


@dataclass
class Services:
    settings: Settings
    db: Database
    celery: Celery
    waits: Waits
    parse_budget: ParseBudget
    # Whether a wake-up message is already on its way to the workers (Redis brokers).
    pending: PendingMark
    broker_seen_at: float = float("-inf")  # monotonic time the broker last answered
    snapshot: QueueSnapshot = field(default_factory=QueueSnapshot)
    _reading: threading.Lock = field(default_factory=threading.Lock)  # gevent's, where gunicorn patched it

    def queue_snapshot(self, session: so.Session | None = None) -> tuple[dict[str, int], int | None]:
        """(fits by status, messages in the chunk queue), read at most every queue_snapshot_seconds
        per process: the admission threshold and /metrics share it, so neither scans the fits per request.
        Admission passes its own transaction's `session`: a second connection taken while that one
        holds the write lock waited for the pool's last free one, and with every other connection
        waiting on the lock none came back (a 30 s stall, the pool's timeout, before a retry)."""
        # One request of the process reads; the others meanwhile answer from the last snapshot (the
        # first, none yet, waits for it). Before, every request that came while a read was on its way
        # read again: under 50 clients a gevent process read the counts and the broker's depth about
        # 20 times a refresh, an eighth of the API's CPU (py-spy, benchmarks.load).
        if self._stale() and self._reading.acquire(blocking=self.snapshot.read_at == float("-inf")):
            try:
                if self._stale():  # not read by the request this one waited for
                    with nullcontext(session) if session is not None else self.db.session() as reading:
                        rows = reading.execute(sa.select(Fit.status, sa.func.count()).group_by(Fit.status)).all()
                    counts = {str(status): int(count) for status, count in rows}
                    self.snapshot = QueueSnapshot(time.monotonic(), counts, queue_depth(self.celery))
            finally:
                self._reading.release()
        return self.snapshot.counts, self.snapshot.depth

    def _stale(self) -> bool:
        return time.monotonic() - self.snapshot.read_at >= self.settings.queue_snapshot_seconds

    def broker_fresh(self) -> bool:
        """Whether the broker answered within the last second: then it is taken to be up unasked."""
        return time.monotonic() - self.broker_seen_at < _BROKER_FRESH_SECONDS

    def broker_failure(self) -> str | None:
        """None if the broker answers now (and remember when), else the error's name."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=1)
        except Exception as exc:
            return type(exc).__name__
        self.broker_seen_at = time.monotonic()
        return None

    def wake(self, chunk_id: str) -> None:
        """Wake a worker for a single fit, unless a wake-up is already on its way: the worker that
        takes it clears the mark before it claims, and claims queued single fits until none are
        left (services/worker/celery_app.py), so this fit is taken by that claim. A burst of
        submissions costs a message per worker that wakes, not one per fit."""
        if self.pending.take() and self.dispatch([chunk_id]):
            self.pending.clear()  # its publish failed: no message is on its way after all

    def dispatch(self, chunk_ids: Sequence[str]) -> list[str]:
        """Publish after the commit (the fits were stamped as published in it). A publish that
        fails clears its chunk's stamp, so the reconciler publishes it within seconds; if even
        that fails (or the process dies first), the reconciler still publishes what stays queued
        unclaimed (shared/store/outbox.py), and any worker's claim may take a single fit along.
        Returns the chunks whose publish failed."""
        failed = []
        for chunk_id in chunk_ids:
            try:
                if failpoints.on("skip_publish"):
                    raise ConnectionError("failpoint skip_publish")
                self.celery.send_task(RUN_CHUNK, args=[chunk_id])
            except Exception as exc:
                log.warning("publish of chunk %s failed, left to the reconciler: %s", chunk_id, exc)
                failed.append(chunk_id)
                continue
            self.broker_seen_at = time.monotonic()
        if not failed:
            return failed
        try:
            with self.db.session(write=True) as session:
                outbox.mark_unpublished(session, failed)
        except Exception as exc:
            # The fits are committed, so the answer is still the 202 (a 503 would make a client
            # without a key submit again).
            log.warning("chunks %s left stamped as published: %s", failed, exc)
        return failed


def current_services() -> Services:
    found = current_app.extensions["calib"]
    assert isinstance(found, Services)
    return found
