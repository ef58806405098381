"""The worker's store keeps each tenant's stored loss bytes exact, and retention prunes losses
but keeps results (both backends; the runner and the engine in this process, no Celery)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa
from flask.testing import FlaskClient

from shared.store import loss_blocks, retention
from shared.store.models import Fit
from tests.in_process import run_fit, stored_bytes

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 3000, "input_scale": 0.1}


def test_stored_bytes_follow_writes_retries_and_prunes(make_client: Callable[..., FlaskClient]) -> None:
    a, b = make_client("tenant-a"), make_client("tenant-b")
    plain = a.post("/v1/fits", json=FIT).get_json()["id"]
    split = a.post("/v1/fits", json=FIT | {"validation": {"indices": [1]}}).get_json()["id"]
    other = b.post("/v1/fits", json=FIT | {"epochs": 100}).get_json()["id"]
    # One message runs all three, of both tenants, coalesced in one chunk; each tenant's count is its own.
    assert run_fit(a, plain) == 3
    plain_bytes, split_bytes, other_bytes = (stored_bytes(a, fit) for fit in (plain, split, other))
    # Compressed where that is shorter: a converging curve takes less than 4 bytes an epoch.
    assert 0 < plain_bytes < 3000 * 4 and 0 < split_bytes < 3000 * 8 and 0 < other_bytes <= 100 * 4
    assert a.get("/v1/usage").get_json()["stored_loss_bytes"] == plain_bytes + split_bytes
    assert b.get("/v1/usage").get_json()["stored_loss_bytes"] == other_bytes
    assert stored_bytes(a) == plain_bytes + split_bytes + other_bytes

    # A retry replaces the losses of its first attempt: the count does not double.
    db = a.application.extensions["calib"].db
    with db.session(write=True) as session:
        session.execute(
            sa.update(Fit)
            .where(Fit.id == plain)
            .values(status="running", lease_expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        )
    _run_one(a, plain)
    assert stored_bytes(a, plain) == plain_bytes  # the same losses again, in place of the first
    assert a.get("/v1/usage").get_json()["stored_loss_bytes"] == plain_bytes + split_bytes

    # Retention: only fits finished before the cut-off lose their losses, and say so.
    with db.session(write=True) as session:
        session.execute(
            sa.update(Fit)
            .where(Fit.id.in_([plain, other]))
            .values(finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
        )
    before = a.get(f"/v1/fits/{plain}").get_json()
    done = retention.prune(db, retention.parse_age("30d"))
    assert (done.fits, done.bytes) == (2, plain_bytes + other_bytes)
    after = a.get(f"/v1/fits/{plain}").get_json()
    assert after["losses_pruned"] is True and after["result"] == before["result"]
    for path in ("losses", "losses?format=csv", "losses?points=10"):
        r = a.get(f"/v1/fits/{plain}/{path}")
        assert r.status_code == 410 and r.mimetype == "application/problem+json", path
    assert a.get(f"/v1/fits/{split}/losses").status_code == 200
    assert a.get(f"/v1/fits/{split}").get_json()["losses_pruned"] is False
    assert a.get("/v1/usage").get_json()["stored_loss_bytes"] == split_bytes
    assert b.get("/v1/usage").get_json()["stored_loss_bytes"] == 0
    assert stored_bytes(a) == split_bytes
    assert retention.prune(db, dt.timedelta(days=30)).fits == 0  # nothing twice


def test_ages() -> None:
    assert retention.parse_age("30d") == dt.timedelta(days=30)
    assert retention.parse_age("12h") == dt.timedelta(hours=12)
    assert retention.parse_age(" 2w ") == dt.timedelta(weeks=2)
    for bad in ("30", "d", "-1d", "1y"):
        try:
            retention.parse_age(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_a_retried_write_whose_commit_landed_replaces_its_blocks(make_client: Callable[..., FlaskClient]) -> None:
    """A connection lost after the commit of a checkpoint: the retry writes the same blocks again."""
    from services.worker import store

    client = make_client("tenant-a")
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    svc = client.application.extensions["calib"]
    with svc.db.session() as session:
        chunk_id = session.scalar(sa.select(Fit.chunk_id).where(Fit.id == fit_id))
    fits = store.claim(svc.db, svc.settings, chunk_id).fits
    checkpoint = store.Checkpoint(
        blocks=[loss_blocks.encode(fit_id, 1, np.zeros(2))],
        progress={fit_id: 2},
    )
    assert store.write(svc.db, svc.settings, fits, checkpoint) == {fit_id}
    assert store.write(svc.db, svc.settings, fits, checkpoint, again=True) == {fit_id}
    assert client.get("/v1/usage").get_json()["stored_loss_bytes"] == 8
    assert stored_bytes(client) == 8


def _run_one(client: FlaskClient, fit_id: str) -> None:
    assert run_fit(client, fit_id) == 1
