"""A dependency down: 503 problem+json with Retry-After, never a 500, nothing accepted and lost;
and the service recovers by itself when the dependency returns. PostgreSQL + a Redis of the
test's own (stopped and started), and a TCP proxy in front of PostgreSQL (closed and reopened)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from migrations.apply import upgrade
from services.api import create_app
from shared.runtime.settings import Settings
from tests.conftest import authorized
from tests.servers import RedisServer, TcpProxy

# A real Redis server and a TCP proxy run as processes for these tests.
pytestmark = pytest.mark.e2e

GOOD: dict[str, Any] = {"t_u": [35.7, 55.9, 58.2], "t_c": [0.5, 14.0, 15.0]}


def client_for(settings: Settings) -> FlaskClient:
    return authorized(create_app(settings), "tenant-a")


def unavailable(response: Any) -> dict[str, Any]:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    return dict(response.get_json())


def test_broker_down_refuses_before_storing_and_recovers(
    fresh_postgres: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=fresh_postgres, broker_url=own_redis.url)
    upgrade(settings)
    client = client_for(settings)
    assert client.post("/v1/fits", json=GOOD).status_code == 202
    own_redis.stop()
    assert "broker" in unavailable(client.get("/readyz"))["detail"]
    time.sleep(1.1)  # past the one second in which a broker that answered is trusted
    assert "broker" in unavailable(client.post("/v1/fits", json=GOOD))["detail"]
    unavailable(client.post("/v1/batches", json={"fits": [GOOD, GOOD]}))
    assert len(client.get("/v1/fits").get_json()["items"]) == 1  # nothing of the refused ones kept
    own_redis.start()
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/fits", json=GOOD).status_code == 202
    client.application.extensions["calib"].db.dispose()


# Connections the proxy cuts are garbage-collected unclosed by the driver: that is the
# fault being injected, not a leak of ours.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_database_down_is_503_everywhere_and_recovers(fresh_postgres: str, tmp_path: Path) -> None:
    url = sa.make_url(fresh_postgres)
    proxy = TcpProxy(url.port or 5432)
    proxy.up()
    settings = Settings(
        data_dir=tmp_path,
        broker_url="memory://",
        database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
    )
    upgrade(settings)
    client = client_for(settings)
    assert client.post("/v1/fits", json=GOOD).status_code == 202
    proxy.down()
    assert "database" in unavailable(client.get("/readyz"))["detail"]
    unavailable(client.get("/v1/fits"))
    unavailable(client.post("/v1/fits", json=GOOD))
    unavailable(client.post("/v1/batches", json={"fits": [GOOD]}))
    proxy.up()
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/fits", json=GOOD).status_code == 202
    assert len(client.get("/v1/fits").get_json()["items"]) == 2
    client.application.extensions["calib"].db.dispose()
    proxy.down()
