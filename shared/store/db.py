"""Engines and sessions: one way to open the database for every process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.runtime import wakeups
from shared.runtime.settings import Settings
from shared.store.json_text import json_text, json_value
from shared.store.loss_store import loss_store_for


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        _pragmas(dbapi_connection, busy_timeout_ms)

    return on_connect


def _pragmas(dbapi_connection: Any, busy_timeout_ms: int) -> None:
    # WAL lets readers go on while a worker writes; the busy timeout turns lock
    # contention into a short wait instead of "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # A writing transaction takes the write lock at BEGIN (waiting under the busy
    # timeout), so it never fails half-way when it upgrades from reading to
    # writing; reading transactions stay deferred and never wait for writers.
    if conn.get_execution_options().get("calib_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


# The most connections one process holds, all kept once opened: an API process serves hundreds of
# requests at once (gevent), and with 10 kept and 20 more opened for each burst and closed after it,
# 50 waiting clients made it open and close about 30 connections a second (PostgreSQL forking a
# backend for each; pg_stat_database.sessions, benchmarks.load). Under that load an API process uses
# about 15 at once; past 20, a request waits for one. A process opens only as many as it has used at
# once, so a worker's stay at a few, and the test suite's many stacks stay inside PostgreSQL's 100
# connections (30 kept per process took it to 74).
POOL_SIZE = 20


def make_engine(url: str, busy_timeout: float = 60.0, pooled: bool = False) -> sa.Engine:
    if url.startswith("sqlite"):
        # isolation_level=None hands BEGIN to us (see _sqlite_begin).
        engine = sa.create_engine(
            url,
            connect_args={"timeout": busy_timeout, "isolation_level": None},
            json_serializer=json_text,
            json_deserializer=json_value,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas(int(busy_timeout * 1000)))
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    # Through a pooler in transaction mode nothing is prepared on the server: psycopg prepares a
    # statement run five times, and the next transaction may land on another server connection.
    connect_args = {"prepare_threshold": None} if pooled else {}
    engine = sa.create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=0,
        connect_args=connect_args,
        json_serializer=json_text,
        json_deserializer=json_value,
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection idle longer than this is pinged before use (one round trip), as
# pool_pre_ping would do on every checkout: a connection used again within it is taken as alive.
_PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: sa.Engine) -> None:
    """pool_pre_ping, but only for connections idle past _PING_AFTER_IDLE_SECONDS: under load every
    transaction paid a ping, one round trip in four of a token's lookup. A connection that died in
    use (the server restarted under load) fails its statement instead; SQLAlchemy then invalidates
    the whole pool, and the caller's retry (the worker's, a client's after a 503) gets a new one."""

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < _PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # pool_pre_ping's own ping, outside a transaction
        except Exception as exc:  # the pool connects anew and checks out that one instead
            raise sa.exc.DisconnectionError(str(exc)) from exc


# Where a session keeps the names of the fits and batches it ended (shared/store/ended.announce),
# told after its commit.
ENDED_NAMES = "calib_ended_names"


class Database:
    """The project's database: sessions that read, and sessions that write."""

    def __init__(
        self, url: str, busy_timeout: float = 60.0, broker: str = "", direct_url: str = "", losses: str = ""
    ) -> None:
        # Where the fits' losses are kept (shared/store/loss_store.py): an unknown scheme stops
        # the process here, at its start, naming the setting.
        self.losses = loss_store_for(losses)
        self.engine = make_engine(url, busy_timeout, pooled=bool(direct_url))
        # The database past any pooler (LISTEN needs a session of its own).
        self.direct_url = direct_url or url
        # Where the names of ended fits go after a commit (shared/store/ended.py).
        self.announcer = wakeups.announcer_for(broker, self.engine)
        write_engine = self.engine.execution_options(calib_write=True)
        self._reader = so.sessionmaker(self.engine, expire_on_commit=False)
        self._writer = so.sessionmaker(write_engine, expire_on_commit=False)
        # On PostgreSQL a read of one statement needs no transaction: BEGIN and COMMIT are two
        # round trips of its three. SQLite's are calls in this process, and its BEGIN is ours.
        autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._one_read = (
            so.sessionmaker(autocommit, expire_on_commit=False)
            if self.engine.dialect.name == "postgresql"
            else self._reader
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        if settings.embedded:
            settings.ensure_data_dir()
        return cls(
            settings.database,
            settings.sqlite_busy_timeout_seconds,
            settings.broker,
            settings.direct_database_url,
            settings.loss_store_url,
        )

    @contextmanager
    def session(self, write: bool = False) -> Iterator[so.Session]:
        """Commit on success, roll back on error, close always."""
        session = (self._writer if write else self._reader)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            session.info.pop(ENDED_NAMES, None)
            raise
        finally:
            session.close()
        wakeups.tell(self.announcer, session.info.pop(ENDED_NAMES, []))

    @contextmanager
    def reading(self) -> Iterator[so.Session]:
        """A session for a read whose statements need not see one snapshot (the request's token, a
        fit): on PostgreSQL each statement is its own transaction, no BEGIN and COMMIT."""
        session = self._one_read()
        try:
            yield session
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
