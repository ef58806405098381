"""A PostgreSQL database of a benchmark's own, on the local server, dropped afterwards; and the
service started on fresh databases for the benchmarks that measure it through HTTP."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
import sqlalchemy as sa

from services.cli import pooler
from tests.backends import free_port
from tests.stack import Stack

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _admin(statement: str) -> None:
    engine = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


@contextmanager
def fresh_postgres(prefix: str = "calib_bench") -> Iterator[str]:
    """Yields the URL of a new, empty database."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _exit_on_term(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def started(
    embedded: bool, tmp: Path, workers: int, redis_db: int, name: str, pooled: bool = False, **env: str
) -> Iterator[Stack]:
    """The service as local processes (tests.stack: migrate, gunicorn, Celery workers) on fresh
    databases: a new PostgreSQL database and a flushed Redis database, or new SQLite files.
    `pooled`: the API and workers through a PgBouncer of their own (`calib stack --pooler`)."""
    settings = {"CALIB_DATA_DIR": str(tmp / "data"), **env}
    # A benchmark stopped by a signal (`pkill -f benchmarks.load`) stops its stack too: Python's
    # default for SIGTERM skips the cleanup below, and a stack left running on a Redis database
    # the test suite also uses took the suite's wake-up messages (benchmarks/README.md, twentieth
    # sitting).
    previous = signal.signal(signal.SIGTERM, _exit_on_term)
    with ExitStack() as cleanup:
        cleanup.callback(signal.signal, signal.SIGTERM, previous)
        if not embedded:
            broker = f"redis://127.0.0.1:6379/{redis_db}"
            redis.Redis.from_url(broker).flushdb()
            direct = cleanup.enter_context(fresh_postgres(name))
            settings |= {"CALIB_DATABASE_URL": direct, "CALIB_BROKER_URL": broker}
            if pooled:
                settings |= cleanup.enter_context(pooler.running(direct, tmp / "pooler", free_port()))
        stack = Stack(settings, tmp / "logs", workers=workers).start()
        try:
            yield stack
        finally:
            stack.stop()
