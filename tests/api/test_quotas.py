"""Quotas, checked before anything is stored (both backends, the real app on a real database;
no worker runs, so accepted fits stay queued and count as in flight)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from flask.testing import FlaskClient

from shared.store import quotas
from shared.store.models import Batch, Fit

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9], "t_c": [0.5, 14.0, 15.0, 28.0], "epochs": 5000}


def _quota_problem(r: Any, status: int, quota: str) -> dict[str, Any]:
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    body: dict[str, Any] = r.get_json()
    assert body["quota"] == quota
    assert {"limit", "requested", "remaining"} <= set(body)
    return body


def _stored(client: FlaskClient) -> tuple[int, int]:
    db = client.application.extensions["calib"].db
    with db.session() as session:
        return (
            session.scalar(sa.select(sa.func.count()).select_from(Fit)) or 0,
            session.scalar(sa.select(sa.func.count()).select_from(Batch)) or 0,
        )


def test_a_batch_of_100000_fits_of_a_million_epochs_is_refused_before_anything_is_stored(client: FlaskClient) -> None:
    body = {"defaults": {"epochs": 1_000_000}, "fits": [{"t_u": [1.0, 2.0], "t_c": [3.0, 5.0]}] * 100_000}
    err = _quota_problem(client.post("/v1/batches", json=body), 413, "fit_epochs_per_request")
    assert err["requested"] == 100_000 * 1_000_000
    assert err["limit"] == 500_000_000
    assert "fit-epochs" in err["detail"]
    csv = "series,t_u,t_c\n" + "".join(f"s{i},1,3\ns{i},2,5\n" for i in range(1000))
    err = _quota_problem(
        client.post("/v1/batches?epochs=1000000", data=csv, content_type="text/csv"), 413, "fit_epochs_per_request"
    )
    assert err["requested"] == 1000 * 1_000_000
    assert _stored(client) == (0, 0)


def test_a_tenant_at_its_in_flight_quota_gets_429_and_another_tenant_is_accepted(
    make_client: Callable[..., FlaskClient],
) -> None:
    a = make_client("tenant-a")
    db = a.application.extensions["calib"].db
    with db.session(write=True) as session:
        quotas.set_quotas(session, "tenant-a", in_flight_fit_epochs=12_000)
    assert a.post("/v1/fits", json=FIT).status_code == 202
    assert a.post("/v1/fits", json=FIT).status_code == 202
    r = a.post("/v1/fits", json=FIT)
    err = _quota_problem(r, 429, "in_flight_fit_epochs")
    assert int(r.headers["Retry-After"]) > 0
    assert (err["limit"], err["requested"], err["remaining"]) == (12_000, 5000, 2000)
    # A batch is counted whole, and so refused whole.
    batch = {"defaults": {"epochs": 1000}, "fits": [FIT | {"epochs": 1000}] * 3}
    _quota_problem(a.post("/v1/batches", json=batch), 429, "in_flight_fit_epochs")
    assert make_client("tenant-b").post("/v1/fits", json=FIT).status_code == 202
    usage = a.get("/v1/usage").get_json()
    assert usage == {
        "tenant": "tenant-a",
        "fits": 2,
        "stored_loss_bytes": 0,
        "in_flight_fit_epochs": 10_000,
        "quotas": {
            "fit_epochs_per_request": 500_000_000,
            "in_flight_fit_epochs": 12_000,
            "stored_loss_bytes": 50 * 1024**3,
        },
    }
    # Cancelling frees the quota.
    fit_id = a.get("/v1/fits?limit=1").get_json()["items"][0]["id"]
    assert a.post(f"/v1/fits/{fit_id}/cancel").status_code == 202
    assert a.post("/v1/fits", json=FIT).status_code == 202


def test_a_tenant_past_its_stored_bytes_gets_507(make_client: Callable[..., FlaskClient]) -> None:
    a = make_client("tenant-a")
    db = a.application.extensions["calib"].db
    with db.session(write=True) as session:
        quotas.set_quotas(session, "tenant-a", stored_loss_bytes=40_000)
        quotas.add_stored_bytes(session, {"tenant-a": 12_000})  # as a worker's writes would
    assert a.post("/v1/fits", json=FIT).status_code == 202  # 5000 epochs: 20,000 bytes fit in 28,000
    # With a validation split a fit writes two series: 40,000 bytes do not fit.
    err = _quota_problem(a.post("/v1/fits", json=FIT | {"validation": {"indices": [0]}}), 507, "stored_loss_bytes")
    assert (err["limit"], err["requested"], err["remaining"]) == (40_000, 40_000, 28_000)


def test_the_queue_past_its_threshold_gets_503(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("tenant-a", max_queued_fits=2, queue_snapshot_seconds=0)
    first = client.post("/v1/fits", json=FIT, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    assert client.post("/v1/fits", json=FIT).status_code == 202
    r = client.post("/v1/fits", json=FIT)
    err = _quota_problem(r, 503, "queued_fits")
    assert int(r.headers["Retry-After"]) > 0 and err["limit"] == 2
    # A replay under its key stores nothing, and is answered whatever the queue holds.
    again = client.post("/v1/fits", json=FIT, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    assert _stored(client) == (2, 0)


def test_a_submission_holds_one_connection_at_a_time(make_client: Callable[..., FlaskClient]) -> None:
    """A fit's and a batch's admission read the queue's snapshot when it is stale (here on every request)
    in their own transaction: a second connection taken while the first holds the write lock waited on
    the pool, and with the pool's other connections all waiting on that lock, a burst of submissions
    stalled for the pool's timeout (30 s)."""
    client = make_client("tenant-a", queue_snapshot_seconds=0.0)
    engine = client.application.extensions["calib"].db.engine
    held = [0, 0]  # now, most

    def out(*_: Any) -> None:
        held[0] += 1
        held[1] = max(held)

    def back(*_: Any) -> None:
        held[0] -= 1

    sa.event.listen(engine, "checkout", out)
    sa.event.listen(engine, "checkin", back)
    try:
        for path, body in (("/v1/fits", FIT), ("/v1/batches", {"fits": [FIT, FIT]})):
            # With a key the transaction has looked for the key's earlier request before it admits.
            for key in ({}, {"Idempotency-Key": f"{path}-1"}):
                assert client.post(path, json=body, headers=key).status_code == 202
    finally:
        sa.event.remove(engine, "checkout", out)
        sa.event.remove(engine, "checkin", back)
    assert held == [0, 1]


def test_submissions_at_the_same_moment_pass_the_quota_one_at_a_time(make_client: Callable[..., FlaskClient]) -> None:
    """16 submissions racing for a quota of 3 fits' epochs: exactly 3 are accepted (on PostgreSQL, READ
    COMMITTED let each see the others' fits as absent and all pass, before the per-tenant lock); more
    submissions, each under its own Idempotency-Key, than the pool has connections, each refreshing the
    queue's snapshot as it is admitted."""
    a = make_client("tenant-a", rate_limit="100000/second", queue_snapshot_seconds=0.0)
    db = a.application.extensions["calib"].db
    with db.session(write=True) as session:
        quotas.set_quotas(session, "tenant-a", in_flight_fit_epochs=15_000)
    clients = [make_client("tenant-a", rate_limit="100000/second", queue_snapshot_seconds=0.0) for _ in range(16)]
    start = threading.Barrier(len(clients))
    statuses: list[int] = []

    def submit(client: FlaskClient, key: str) -> None:
        start.wait()
        statuses.append(client.post("/v1/fits", json=FIT, headers={"Idempotency-Key": key}).status_code)

    threads = [threading.Thread(target=submit, args=(client, f"key-{i}")) for i, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * 3 + [429] * 13, statuses
    assert _stored(a)[0] == 3


def test_requests_at_the_same_moment_read_the_queue_once(make_client: Callable[..., FlaskClient]) -> None:
    """The queue's snapshot (fits by status, the broker's depth) is read by one request when stale;
    the others answer from it. Every request that came while a read was on its way read again: under
    50 clients, about 20 reads a refresh per API process."""
    client = make_client("tenant-a", queue_snapshot_seconds=60.0)
    svc = client.application.extensions["calib"]
    # The process's first snapshot, read in the fit's admission before its insert: no fits.
    assert client.post("/v1/fits", json=FIT).status_code == 202
    svc.snapshot = replace(svc.snapshot, read_at=time.monotonic() - 3600)  # stale, with a value to answer from
    reads: list[str] = []

    def counted(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "GROUP BY fits.status" in statement:
            reads.append(statement)

    sa.event.listen(svc.db.engine, "before_cursor_execute", counted)
    start = threading.Barrier(8)
    answers: list[dict[str, int]] = []

    def ask() -> None:
        start.wait()
        answers.append(svc.queue_snapshot()[0])

    try:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sa.event.remove(svc.db.engine, "before_cursor_execute", counted)
    assert len(reads) == 1
    # The reader answers what it read; each other request the last snapshot, or the new one if it
    # came after the read.
    assert len(answers) == 8 and {"queued": 1} in answers
    assert all(answer in ({}, {"queued": 1}) for answer in answers), answers
