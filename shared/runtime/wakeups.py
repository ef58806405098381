"""Wake-ups that carry no data and ride outside the transactions that write fits.

Two kinds:
- *ended*: the names of fits and batches that changed (shared/store/ended.py), told to the API's
  waiting requests after the transaction that changed them committed;
- *pending*: whether a worker wake-up message is already on its way, so a burst of single-fit
  submissions publishes one message per idle worker, not one per fit (services/api/extensions.py).

Where they travel, by configuration:
- a Redis broker: Redis pub/sub on `calib:ended`, and the `calib:wake-pending` key;
- PostgreSQL without Redis: a NOTIFY of its own, in a transaction of its own with
  `synchronous_commit=off`, after the fits' transaction committed. Never inside it: PostgreSQL
  serializes every committing transaction that notified on one lock held across the WAL flush
  (issue 26 measured 2,605 → 535 inserts/s at one client), so a NOTIFY in the data's transaction
  would make every fit's end wait on every other's;
- the embedded default: nothing (the API's waiters read the database every 10–100 ms).

A wake-up may be lost (a process dying between the commit and the publish, a listener that
reconnects): every reader of them looks at the database again within seconds regardless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import redis
import sqlalchemy as sa

from shared.runtime import failpoints

log = logging.getLogger("calib.wakeups")

CHANNEL = "calib_ended"  # PostgreSQL's LISTEN channel
REDIS_CHANNEL = "calib:ended"
PENDING_KEY = "calib:wake-pending"
# How long a pending mark outlives a message nobody consumed (a broker that lost it): past this,
# the next submission publishes again. The reconciler covers the rest.
PENDING_MS = 2000
# One notice's names at most (PostgreSQL refuses payloads of 8000 bytes; ids are 36 characters).
_NAMES_PER_NOTICE = 150


def redis_url(broker: str) -> str | None:
    """The Redis behind the broker URL, or None for any other broker."""
    return broker if broker.startswith(("redis://", "rediss://")) else None


class Announcer(Protocol):
    def __call__(self, names: list[str]) -> None: ...


def _notices(names: list[str]) -> Iterator[str]:
    for start in range(0, len(names), _NAMES_PER_NOTICE):
        yield ",".join(names[start : start + _NAMES_PER_NOTICE])


class RedisAnnouncer:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def __call__(self, names: list[str]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for payload in _notices(names):
                pipe.publish(REDIS_CHANNEL, payload)
            pipe.execute()


class PostgresAnnouncer:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def __call__(self, names: list[str]) -> None:
        with self.engine.begin() as conn:
            # Nothing of this transaction needs to survive a crash: a lost notice is read again.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            for payload in _notices(names):
                conn.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


def announcer_for(broker: str, engine: sa.Engine) -> Announcer | None:
    url = redis_url(broker)
    if url:
        return RedisAnnouncer(url)
    if engine.dialect.name == "postgresql":
        return PostgresAnnouncer(engine)
    return None


def tell(announcer: Announcer | None, names: list[str]) -> None:
    """Announce after a commit; a failure is logged, never raised (the data is committed)."""
    if announcer is None or not names or failpoints.on("skip_announce"):
        return
    try:
        announcer(names)
    except Exception as exc:
        log.warning("announcing %d ended names failed; their waiters read again within seconds: %s", len(names), exc)


@contextmanager
def subscribed(broker: str, direct_url: str, timeout: float) -> Iterator[Callable[[], list[str]]]:
    """A subscription to the ended names: yields a function that waits up to `timeout` seconds
    and returns the payloads heard meanwhile (empty if none). `direct_url`: the database past any
    pooler (LISTEN needs a session of its own), used without a Redis broker."""
    url = redis_url(broker)
    if url:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(REDIS_CHANNEL)

            def heard_redis() -> list[str]:
                message = pubsub.get_message(timeout=timeout)
                payloads = []
                while message is not None:
                    if message["type"] == "message":
                        data = message["data"]
                        payloads.append(data.decode() if isinstance(data, bytes) else str(data))
                    message = pubsub.get_message(timeout=0)
                return payloads

            yield heard_redis
        finally:
            pubsub.close()
            client.close()
        return
    import psycopg

    dsn = sa.make_url(direct_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")

        def heard_postgres() -> list[str]:
            return [notice.payload for notice in conn.notifies(timeout=timeout, stop_after=None)]

        yield heard_postgres


def can_subscribe(broker: str, direct_url: str) -> bool:
    return redis_url(broker) is not None or direct_url.startswith("postgresql")


class PendingMark:
    """Whether a wake-up message is on its way to the workers (Redis brokers only).

    The API publishes a single fit's wake-up only if it sets the mark; a worker clears it when it
    takes a message, before it claims. A fit committed while the mark is set is therefore seen by
    the claim, or the drain, of the worker that will clear it: none is stranded."""

    def __init__(self, broker: str) -> None:
        url = redis_url(broker)
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) if url else None

    def take(self) -> bool:
        """True if this caller should publish (no message pending, or no Redis to tell)."""
        if self.client is None:
            return True
        try:
            return bool(self.client.set(PENDING_KEY, b"1", nx=True, px=PENDING_MS))
        except redis.RedisError:
            return True  # unsure: publish (a message too many costs a claim that finds nothing)

    def clear(self) -> None:
        if self.client is None:
            return
        try:
            self.client.delete(PENDING_KEY)
        except redis.RedisError as exc:
            # The mark expires by itself within PENDING_MS; meanwhile the reconciler republishes.
            log.warning("clearing the pending wake-up failed: %s", exc)
