from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.conftest import PG_URL, REDIS_URL, _create_database, _drop_database
from tests.stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here starts real processes: marked e2e, which `make test-fast` leaves out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@contextmanager
def backend_env(kind: str, tmp: Path, redis_url: str = "") -> Iterator[dict[str, str]]:
    """CALIB_* variables for a fresh backend: SQLite files under tmp, or a new PostgreSQL
    database and a flushed Redis database (dropped afterwards)."""
    env = {"CALIB_DATA_DIR": str(tmp / "data")}
    if kind == "embedded":
        yield env
        return
    if not (PG_URL and REDIS_URL):
        pytest.skip("CALIB_TEST_POSTGRES_URL and CALIB_TEST_REDIS_URL are not set")
    name = f"calib_e2e_{uuid.uuid4().hex[:10]}"
    broker = redis_url or REDIS_URL
    redis.Redis.from_url(broker).flushdb()
    env.update(CALIB_DATABASE_URL=_create_database(PG_URL, name), CALIB_BROKER_URL=broker)
    try:
        yield env
    finally:
        _drop_database(PG_URL, name)


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running API and worker, once per backend for the module."""
    tmp: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
    with backend_env(request.param, tmp) as env:
        running = Stack(env, tmp / "logs").start()
        yield running
        running.stop()
