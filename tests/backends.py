"""Fresh backends for a test: databases created and dropped on the test PostgreSQL server, and the
CALIB_* variables of a fresh embedded or PostgreSQL + Redis backend for processes."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import sqlalchemy as sa

from services.cli import pooler
from shared.runtime.settings import Settings

PG_URL = os.environ.get("CALIB_TEST_POSTGRES_URL", "")


def _redis_of_this_process(url: str, shared: bool = False) -> str:
    """CALIB_TEST_REDIS_URL, or under pytest-xdist (`make test` runs several processes) two
    databases below it per process, its own and its shared stacks' (gw0: the URL's and one less,
    gw1: two and three less, ...): each stack flushes its Redis database when it starts, which must
    not empty another process's queue nor this process's shared stack's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not url or not (worker.startswith("gw") or shared):
        return url
    parts = urlsplit(url)
    database = int(parts.path.lstrip("/") or 0) - 2 * int(worker[2:] or 0) - int(shared)
    if database < 0:
        raise RuntimeError(f"{url}: too few Redis databases below it for pytest process {worker}")
    return urlunsplit(parts._replace(path=f"/{database}"))


REDIS_URL = _redis_of_this_process(os.environ.get("CALIB_TEST_REDIS_URL", ""))
# The database of this process's shared e2e stacks (tests/e2e/conftest.py).
SHARED_REDIS_URL = _redis_of_this_process(os.environ.get("CALIB_TEST_REDIS_URL", ""), shared=True)


def settings_of(env: Mapping[str, str]) -> Settings:
    """The Settings a process started with these CALIB_* variables reads its backend from."""
    return Settings(
        data_dir=env["CALIB_DATA_DIR"],
        database_url=env.get("CALIB_DATABASE_URL", ""),
        broker_url=env.get("CALIB_BROKER_URL", ""),
        direct_database_url=env.get("CALIB_DIRECT_DATABASE_URL", ""),
    )


def create_database(server_url: str, name: str, template: str = "") -> str:
    """A new database on the server, empty or a copy of `template` (which nothing may be connected to)."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    engine.dispose()
    return _url_of(name, server_url)


def drop_database(server_url: str, name: str) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


class EmptiedDatabases:
    """Test databases on the test PostgreSQL server, copies of a migrated template, each used again
    once emptied: CREATE DATABASE from the template and DROP after took about 0.3 s a test (a
    quarter of `make test-fast`'s PostgreSQL half), TRUNCATE of every table about 0.03 s. A
    database is used again only if the test left it as the template is but for rows: the same
    relations (no partition made or dropped, no migration run) and nothing still connected to it
    (an engine not disposed, a thread still running); otherwise it is dropped and the next test
    gets a new copy."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.idle: list[str] = []
        self.server = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        engine = sa.create_engine(_url_of(template), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            self.shape = self._shape(conn)
        engine.dispose()

    def take(self) -> str:
        """A database equal to the template; its URL."""
        if self.idle:
            return _url_of(self.idle.pop())
        return create_database(PG_URL, f"calib_test_{uuid.uuid4().hex[:10]}", self.template)

    def give_back(self, url: str) -> None:
        name = sa.make_url(url).database or ""
        with self.server.connect() as conn:
            others = conn.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"), {"name": name})
        if others == 0 and self._emptied(name):
            self.idle.append(name)
        else:
            drop_database(PG_URL, name)

    def close(self) -> None:
        for name in self.idle:
            drop_database(PG_URL, name)
        self.server.dispose()

    def _shape(self, conn: sa.Connection) -> str:
        """The database's relations and schema version: what TRUNCATE does not restore."""
        return str(
            conn.scalar(
                sa.text(
                    "SELECT string_agg(relname || ':' || relkind::text, ',' ORDER BY relname)"
                    " || (SELECT string_agg(version_num, ',') FROM alembic_version)"
                    " FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                )
            )
        )

    def _emptied(self, name: str) -> bool:
        """Whether the database was as the template but for rows, and is now emptied (every table
        but the schema's version, sequences restarted); False if not, or if a lock held elsewhere
        made TRUNCATE wait (then the database is dropped instead)."""
        engine = sa.create_engine(_url_of(name), poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                if self._shape(conn) != self.shape:
                    return False
                conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                tables = conn.scalars(
                    sa.text(
                        "SELECT quote_ident(tablename) FROM pg_tables"
                        " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                    )
                ).all()
                conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()


def _url_of(name: str, server_url: str = PG_URL) -> str:
    """The URL of the database `name` on the server of `server_url`."""
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def backend_env(kind: str, tmp: Path, redis_url: str = "") -> Iterator[dict[str, str]]:
    """CALIB_* variables for a fresh backend: SQLite files under tmp, or a new PostgreSQL
    database and a flushed Redis database (dropped afterwards). "pooled": the same PostgreSQL
    reached through a PgBouncer of its own in transaction mode (`calib stack --pooler`); with
    CALIB_TEST_POOLER=1 every "postgres" backend is pooled (the e2e suite once through it)."""
    env = {"CALIB_DATA_DIR": str(tmp / "data")}
    if kind == "embedded":
        yield env
        return
    if not (PG_URL and REDIS_URL):
        pytest.skip("CALIB_TEST_POSTGRES_URL and CALIB_TEST_REDIS_URL are not set")
    name = f"calib_e2e_{uuid.uuid4().hex[:10]}"
    broker = redis_url or REDIS_URL
    redis.Redis.from_url(broker).flushdb()
    direct = create_database(PG_URL, name)
    env.update(CALIB_DATABASE_URL=direct, CALIB_BROKER_URL=broker)
    try:
        with ExitStack() as through:
            if kind == "pooled" or os.environ.get("CALIB_TEST_POOLER") == "1":
                if not Path("/usr/sbin/pgbouncer").exists():
                    pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
                env.update(through.enter_context(pooler.running(direct, tmp / "pooler", free_port())))
            yield env
    finally:
        drop_database(PG_URL, name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
