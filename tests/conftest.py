"""Fixtures: the book's reference figures, and databases and brokers on both backends.

The embedded backend (SQLite files, kombu's SQLAlchemy transport) always runs.
The production backend runs when CALIB_TEST_POSTGRES_URL (a server URL, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and CALIB_TEST_REDIS_URL
are set, as .ci/run sets them; each test session gets a database of its own.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.api import create_app
from shared.runtime.settings import Settings
from shared.store import tokens
from tests.backends import PG_URL, REDIS_URL, EmptiedDatabases, create_database, drop_database

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
BACKENDS = ["embedded", "postgres"]


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    return json.loads((DATA / "thermometer.json").read_text())


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """An empty PostgreSQL database, dropped afterwards."""
    if not PG_URL:
        pytest.skip("CALIB_TEST_POSTGRES_URL is not set")
    name = f"calib_test_{uuid.uuid4().hex[:10]}"
    url = create_database(PG_URL, name)
    yield url
    drop_database(PG_URL, name)


def backend_settings(backend: str, tmp: Path, database_url: str = "") -> Settings:
    if backend == "embedded":
        return Settings(data_dir=tmp)
    if not (PG_URL and REDIS_URL):
        pytest.skip("CALIB_TEST_POSTGRES_URL and CALIB_TEST_REDIS_URL are not set")
    return Settings(data_dir=tmp, database_url=database_url, broker_url=REDIS_URL)


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as CALIB_* variables, for processes the tests start."""
    env = {"CALIB_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["CALIB_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["CALIB_BROKER_URL"] = settings.broker_url
    return env


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A database migrated to the head once per pytest process, for each backend, that every test's
    own database is copied from: an SQLite file, and a PostgreSQL template database. The copy is what
    `upgrade` would have made (tests/test_migrations.py checks the upgrade itself), in a fraction of
    the time."""
    from migrations.apply import upgrade

    found: dict[str, Any] = {}
    embedded = backend_settings("embedded", tmp_path_factory.mktemp("migrated"))
    upgrade(embedded)
    found["embedded"] = embedded.data_dir / "calib.db"
    name = ""
    if PG_URL and REDIS_URL:
        name = f"calib_template_{uuid.uuid4().hex[:10]}"
        template = create_database(PG_URL, name)
        upgrade(backend_settings("postgres", tmp_path_factory.mktemp("template"), template))
        found["postgres"] = EmptiedDatabases(name)
    yield found
    if name:
        found["postgres"].close()
        drop_database(PG_URL, name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, migrated: dict[str, Any]) -> Iterator[Settings]:
    """Migrated settings on each backend, with a database of the test's own (a copy of `migrated`;
    on PostgreSQL one that an earlier test of this process used and left emptied, where one is)."""
    if request.param == "postgres":
        if not (PG_URL and REDIS_URL):
            pytest.skip("CALIB_TEST_POSTGRES_URL and CALIB_TEST_REDIS_URL are not set")
        databases: EmptiedDatabases = migrated["postgres"]
        settings = backend_settings("postgres", tmp_path, databases.take())
        yield settings
        databases.give_back(settings.database_url)
    else:
        settings = backend_settings("embedded", tmp_path)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated["embedded"], settings.data_dir / "calib.db")
        yield settings


def authorized(app: Flask, tenant: str) -> FlaskClient:
    """A test client of `app` carrying a fresh token of `tenant`."""
    client = app.test_client()
    token = tokens.create(app.extensions["calib"].db, tenant).token
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def make_client(backend: Settings) -> Iterator[Callable[..., FlaskClient]]:
    """Clients of the real app on a real database and broker (no worker runs: fits stay
    queued), each with a fresh token of `tenant`; settings overrides make a separate app."""
    apps: dict[str, Flask] = {}

    def make(tenant: str = "tenant-a", **overrides: Any) -> FlaskClient:
        key = repr(sorted(overrides.items()))
        if key not in apps:
            apps[key] = create_app(backend.model_copy(update=overrides))
        return authorized(apps[key], tenant)

    yield make
    for app in apps.values():
        app.extensions["calib"].waits.close()
        app.extensions["calib"].db.dispose()


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    return make_client()


from tests.servers import own_redis  # noqa: E402,F401  (a fixture, shared by api and e2e tests)
