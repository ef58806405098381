"""`?wait=S` on a fit and a batch (both backends): the answer comes when it ends, or after S
seconds with its current state; another tenant's id is 404 at once. On PostgreSQL + Redis the end
is announced on Redis after the worker's transaction commits; on SQLite the waiter reads again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api import waiting as waiting_module
from shared.runtime import failpoints, wakeups
from shared.runtime.settings import Settings
from shared.store import calibrations, ended
from shared.store.db import Database
from tests.in_process import run_fit

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 500, "input_scale": 0.1}


class Waiting:
    """A GET ?wait= in a thread of its own (as the API's other requests go on), timed."""

    def __init__(self, client: FlaskClient, path: str) -> None:
        self.answer: Any = None
        self.seconds = float("nan")

        def get() -> None:
            started = time.monotonic()
            self.answer = client.get(path)
            self.seconds = time.monotonic() - started

        self.thread = threading.Thread(target=get)
        self.thread.start()

    def result(self) -> tuple[int, dict[str, Any], float]:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.answer.status_code, self.answer.get_json(), self.seconds


def test_a_fit_waited_for_answers_when_it_ends(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client()
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    waiting = Waiting(make_client(), f"/v1/fits/{fit_id}?wait=30")
    time.sleep(1.0)  # the waiter has read it queued and sleeps
    assert waiting.thread.is_alive()
    ended_at = time.monotonic()
    run_fit(client, fit_id)
    status, body, _ = waiting.result()
    woken_after = time.monotonic() - ended_at
    assert status == 200 and body["status"] == "succeeded" and body["epochs_done"] == 500
    assert body == client.get(f"/v1/fits/{fit_id}").get_json()  # the same body as without wait
    # Told at once (Redis pub/sub on PostgreSQL + Redis, a read at least every tenth of a second on SQLite), far
    # before the 30 s it offered to wait, and before the listener's 5 s safety read.
    assert woken_after < 3.0
    waits = client.application.extensions["calib"].waits
    assert waits.listening == (waits.db.engine.dialect.name == "postgresql")


def test_a_wait_that_times_out_answers_the_current_state(client: FlaskClient) -> None:
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]  # no worker runs: it stays queued
    started = time.monotonic()
    r = client.get(f"/v1/fits/{fit_id}?wait=0.7")
    took = time.monotonic() - started
    assert r.status_code == 200 and r.get_json()["status"] == "queued"
    assert 0.7 <= took < 3.0


def test_a_cancelled_fit_ends_the_wait(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client()
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    waiting = Waiting(make_client(), f"/v1/fits/{fit_id}?wait=30")
    time.sleep(0.5)
    assert client.post(f"/v1/fits/{fit_id}/cancel").status_code == 202
    status, body, seconds = waiting.result()
    assert status == 200 and body["status"] == "cancelled" and seconds < 5.0


def test_another_tenants_id_is_404_at_once(make_client: Callable[..., FlaskClient]) -> None:
    mine, theirs = make_client("tenant-a"), make_client("tenant-b")
    fit_id = mine.post("/v1/fits", json=FIT).get_json()["id"]
    batch_id = mine.post("/v1/batches", json={"fits": [FIT, FIT]}).get_json()["id"]
    for path in (f"/v1/fits/{fit_id}?wait=30", f"/v1/batches/{batch_id}?wait=30"):
        started = time.monotonic()
        assert theirs.get(path).status_code == 404
        assert time.monotonic() - started < 2.0


def test_a_batch_waited_for_answers_when_its_last_fit_ends(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client()
    batch = client.post("/v1/batches", json={"fits": [FIT, FIT | {"epochs": 300}]}).get_json()
    first = client.get(f"/v1/batches/{batch['id']}/fits").get_json()["items"][0]["id"]
    waiting = Waiting(make_client(), f"/v1/batches/{batch['id']}?wait=30")
    time.sleep(0.5)
    ended_at = time.monotonic()
    run_fit(client, first)  # the batch's one chunk: both fits
    status, body, _ = waiting.result()
    assert status == 200 and body["status"] == "completed" and body["counts"]["succeeded"] == 2
    assert time.monotonic() - ended_at < 3.0


def test_a_batch_wait_reads_the_drift_verdicts_once(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # A waiter reads the batch again every 10 to 100 ms on SQLite (on PostgreSQL when woken, and when
    # its time is up): its progress only; the drifted count (a join over the batch's verdicts) once.
    batch_id = client.post("/v1/batches", json={"fits": [FIT, FIT]}).get_json()["id"]
    verdicts = calibrations.drifted_count
    reads: list[str] = []

    def counted(*args: Any) -> int:
        reads.append(args[1])
        return verdicts(*args)

    monkeypatch.setattr(calibrations, "drifted_count", counted)
    r = client.get(f"/v1/batches/{batch_id}?wait=1")  # no worker runs: it waits the whole second
    assert r.status_code == 200 and r.get_json()["status"] == "queued"
    assert reads == [batch_id]


def test_wait_is_bounded(client: FlaskClient) -> None:
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    for bad in ("0", "-1", "61", "soon"):
        r = client.get(f"/v1/fits/{fit_id}?wait={bad}")
        assert r.status_code == 422 and r.get_json()["errors"][0]["loc"] == ["query", "wait"], bad


def test_a_lost_wake_up_still_ends_the_wait(
    make_client: Callable[..., FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The announcement after the commit is lost (a process that died between the two): the waiter
    # reads again within its safety interval (every 10–100 ms without notifications) and answers.
    client = make_client()
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    waiting = Waiting(make_client(), f"/v1/fits/{fit_id}?wait=30")
    time.sleep(0.5)
    monkeypatch.setenv("CALIB_FAILPOINTS", "skip_announce")
    failpoints._active.cache_clear()
    try:
        run_fit(client, fit_id)
    finally:
        monkeypatch.delenv("CALIB_FAILPOINTS")
        failpoints._active.cache_clear()
    status, body, seconds = waiting.result()
    assert status == 200 and body["status"] == "succeeded"
    assert seconds < waiting_module._SAFETY_SECONDS + 3.0


def test_postgres_without_redis_notifies_after_the_commit_never_inside_it(backend: Settings) -> None:
    # A PostgreSQL database with another broker: the names go by a NOTIFY of its own transaction.
    if not backend.database_url:
        pytest.skip("PostgreSQL only (the embedded default has no notifications)")
    db = Database(backend.database_url, broker="sqla+sqlite:////nonexistent/broker.db")
    assert isinstance(db.announcer, wakeups.PostgresAnnouncer)
    statements: list[str] = []
    try:
        with wakeups.subscribed("", db.direct_url, 0.3) as heard:
            with db.session(write=True) as session:
                sa.event.listen(session.connection(), "before_cursor_execute", lambda *args: statements.append(args[2]))
                ended.announce(session, ["fit-1"], ["batch-1"])
                session.execute(sa.text("SELECT 1"))
                assert heard() == []  # nothing told before the commit
            assert not any("notify" in statement.lower() for statement in statements)
            names = [name for payload in heard() for name in ended.names_in(payload)]
            assert names == ["f:fit-1", "b:batch-1"]
    finally:
        db.dispose()
