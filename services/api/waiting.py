"""Requests that wait for a fit or a batch to end (`?wait=S`), and what wakes them.

A waiting request holds no database connection: it reads the object, and if it has not ended,
sleeps on an event of its own until a notification names it (or S seconds pass), then reads
again. One listener per API process (shared/runtime/wakeups.py: a Redis pub/sub subscription with
a Redis broker, else `LISTEN calib_ended` on PostgreSQL) sets the events; the API runs under gevent
there, so hundreds of waits cost a greenlet each, not a thread. The embedded default has no
notifications: its waiters read again, from every 10 ms up to every tenth of a second, which
SQLite answers from its page cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Gauge

from shared.runtime import wakeups
from shared.store import ended
from shared.store.db import Database

log = logging.getLogger("calib.api")

T = TypeVar("T")

# Requests waiting now, summed over the API's processes at scrape time ("livesum": a process that
# exited counts no more): how full the wait slots are, for operators and the tests that open many.
WAITING = Gauge(
    "calib_waiting_requests", "Requests waiting for a fit or a batch to end (?wait=)", multiprocess_mode="livesum"
)

# Without notifications (SQLite, or while the listener reconnects) a waiter reads again after
# 10 ms, then half as often again each time up to every 0.1 s: a fit that ends within tens of
# milliseconds is answered within a few of its end.
_FIRST_POLL_SECONDS = 0.01
_POLL_SECONDS = 0.1
# With them: a waiter still reads now and then, in case a notice is lost (a listener that reconnected).
_SAFETY_SECONDS = 5.0
_RECONNECT_SECONDS = 1.0
# How often the listener looks up from its connection to see whether it should stop.
_CLOSE_CHECK_SECONDS = 1.0


class Waits:
    """This process's waiting requests, by the key of what they wait for (`f:<id>`, `b:<id>`)."""

    def __init__(self, db: Database, per_tenant: int = 1_000_000, total: int = 1_000_000, broker: str = "") -> None:
        self.db = db
        self.broker = broker
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}
        # Slots: a tenant may hold `per_tenant` waiting requests in this process, and all tenants
        # together `total`, below the process's connections, so one tenant's waits never take
        # every slot. Past either, a wait answers at once with the state now.
        self.per_tenant, self.total = per_tenant, total
        self._held: dict[str, int] = {}
        self.skipped = 0
        self._notified = wakeups.can_subscribe(broker, db.direct_url)
        self._listening = False
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def listening(self) -> bool:
        """Whether notifications wake this process's waiters now (else they read again every 10 to 100 ms)."""
        return self._listening

    def answer(self, key: str, read: Callable[[], tuple[T, bool]], seconds: float | None, tenant: str = "") -> T:
        """A GET's answer: `read()`'s value now, or with `?wait=seconds`, once it has ended (if
        `tenant` has a slot to wait in; else now)."""
        if seconds is None or not self._take(tenant):
            return read()[0]
        WAITING.inc()
        try:
            return self.until(key, read, seconds)
        finally:
            WAITING.dec()
            self._give(tenant)

    def _take(self, tenant: str) -> bool:
        with self._lock:
            held = self._held.get(tenant, 0)
            if held >= self.per_tenant or sum(self._held.values()) >= self.total:
                self.skipped += 1
                return False
            self._held[tenant] = held + 1
            return True

    def _give(self, tenant: str) -> None:
        with self._lock:
            left = self._held[tenant] - 1
            if left:
                self._held[tenant] = left
            else:
                del self._held[tenant]

    def until(self, key: str, read: Callable[[], tuple[T, bool]], seconds: float) -> T:
        """`read()` → (value, ended): again whenever `key` is announced, until ended or `seconds` pass."""
        self._listen()
        wake = threading.Event()
        with self._lock:  # registered before the first read: a notice in between is not missed
            self._waiting.setdefault(key, set()).add(wake)
        try:
            deadline = time.monotonic() + seconds
            poll = _FIRST_POLL_SECONDS
            while True:
                value, done = read()
                remaining = deadline - time.monotonic()
                if done or remaining <= 0:
                    return value
                wake.wait(min(remaining, _SAFETY_SECONDS if self._listening else poll))
                wake.clear()
                poll = min(poll * 1.5, _POLL_SECONDS)
        finally:
            with self._lock:
                events = self._waiting.get(key, set())
                events.discard(wake)
                if not events:
                    self._waiting.pop(key, None)

    def wake(self, names: list[str]) -> None:
        with self._lock:
            if ended.EVERYONE in names:
                woken = [event for events in self._waiting.values() for event in events]
            else:
                woken = [event for name in names for event in self._waiting.get(name, ())]
        for event in woken:
            event.set()

    def _listen(self) -> None:
        """Start this process's listener on first use (after gunicorn forked it)."""
        if not self._notified or self._listener is not None:
            return
        with self._lock:
            if self._listener is None:
                self._listener = threading.Thread(target=self._run_listener, name="ended-listener", daemon=True)
                self._listener.start()

    def close(self) -> None:
        """Stop listening (the app is going away: its database may be dropped next)."""
        self._closed.set()
        if self._listener is not None:
            self._listener.join(timeout=2 * _CLOSE_CHECK_SECONDS)

    def _run_listener(self) -> None:
        while not self._closed.is_set():
            try:
                with wakeups.subscribed(self.broker, self.db.direct_url, _CLOSE_CHECK_SECONDS) as heard:
                    self._listening = True
                    self.wake([ended.EVERYONE])  # whatever ended while this was not listening
                    while not self._closed.is_set():
                        for payload in heard():
                            self.wake(ended.names_in(payload))
            except Exception as exc:
                log.warning("listening for ended fits failed, waiters poll meanwhile: %s", exc)
            self._listening = False
            self._closed.wait(_RECONNECT_SECONDS)
