"""The worker's store and the reconciler, called directly on both backends (no Celery, no
subprocess): claims, fencing by attempt, lease expiry and the halving of a lost chunk (and of
one whose run raised), the reconciler's choice of chunks to publish again, and fair turns between tenants."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from flask.testing import FlaskClient

from migrations.apply import upgrade
from services.api import create_app
from services.worker import fairness, reconciler, runner, store
from shared.runtime import failpoints
from shared.runtime.settings import Settings
from shared.store import loss_blocks, loss_store, quotas
from shared.store.db import Database
from shared.store.models import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Fit, LossBlock
from tests.in_process import run_fit

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 100, "input_scale": 0.1}
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _services(client: FlaskClient) -> tuple[Database, Settings]:
    svc = client.application.extensions["calib"]
    return svc.db, svc.settings


def _chunk_of(db: Database, fit_id: str) -> str:
    with db.session() as session:
        return str(session.scalar(sa.select(Fit.chunk_id).where(Fit.id == fit_id)))


def _fit(db: Database, fit_id: str) -> Fit:
    with db.session() as session:
        fit = session.get(Fit, fit_id)
        assert fit is not None
        session.expunge(fit)
        return fit


def _set(db: Database, where: sa.ColumnElement[bool], **values: object) -> None:
    with db.session(write=True) as session:
        session.execute(sa.update(Fit).where(where).values(**values))


def _batch(client: FlaskClient, fits: int) -> list[str]:
    body = client.post("/v1/batches", json={"defaults": {"epochs": 100}, "fits": [FIT] * fits}).get_json()
    items = client.get(f"/v1/batches/{body['id']}/fits?limit=1000").get_json()["items"]
    return sorted(item["id"] for item in items)


def _block(fit_id: str, first: int = 1, count: int = 10) -> loss_blocks.Block:
    return loss_blocks.encode(fit_id, first, np.zeros(count))


def test_a_claim_runs_a_queued_fit_once(client: FlaskClient) -> None:
    db, settings = _services(client)
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    chunk = _chunk_of(db, fit_id)
    first = store.claim(db, settings, chunk)
    assert [(f.id, f.attempt) for f in first.fits] == [(fit_id, 1)]
    assert list(first.fits[0].t_u) == FIT["t_u"] and first.fits[0].input_scale == 0.1
    running = _fit(db, fit_id)
    assert running.status == RUNNING and running.lease_expires_at is not None
    # A second message for the same chunk (a duplicate delivery) finds nothing to claim.
    assert store.claim(db, settings, chunk).fits == []


def test_a_stale_attempt_neither_writes_nor_renews(client: FlaskClient) -> None:
    db, settings = _services(client)
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    chunk = _chunk_of(db, fit_id)
    stale = store.claim(db, settings, chunk).fits
    # Its worker is presumed lost: the lease runs out and another worker takes the fit.
    _set(db, Fit.id == fit_id, lease_expires_at=LONG_AGO)
    fresh = store.claim(db, settings, chunk).fits
    assert [f.attempt for f in fresh] == [2]
    assert store.write(db, settings, stale, store.Checkpoint(blocks=[_block(fit_id)], progress={fit_id: 10})) == set()
    # Nor does it end the fit: a write that ends fits fences them by a lock, not a renewed lease.
    ends = store.Checkpoint(blocks=[_block(fit_id)], progress={fit_id: 10}, finished={fit_id: {"status": SUCCEEDED}})
    assert store.write(db, settings, stale, ends) == set()
    assert _fit(db, fit_id).status == RUNNING
    assert store.renew(db, settings, stale) == 0
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LossBlock)) == 0
    assert _fit(db, fit_id).epochs_done == 0
    # The new attempt writes.
    checkpoint = store.Checkpoint(blocks=[_block(fit_id)], progress={fit_id: 10})
    assert store.write(db, settings, fresh, checkpoint) == {fit_id}
    assert _fit(db, fit_id).epochs_done == 10
    last = store.Checkpoint(
        blocks=[_block(fit_id, 11)], progress={fit_id: 20}, finished={fit_id: {"status": SUCCEEDED}}
    )
    assert store.write(db, settings, fresh, last) == {fit_id}
    ended_fit = _fit(db, fit_id)
    assert (ended_fit.status, ended_fit.epochs_done, ended_fit.lease_expires_at) == (SUCCEEDED, 20, None)


def test_a_cancelled_fit_is_never_written_or_revived(client: FlaskClient) -> None:
    db, settings = _services(client)
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    claimed = store.claim(db, settings, _chunk_of(db, fit_id)).fits
    assert client.post(f"/v1/fits/{fit_id}/cancel").status_code == 202
    done = store.Checkpoint(
        blocks=[_block(fit_id, count=100)], progress={fit_id: 100}, finished={fit_id: {"status": SUCCEEDED}}
    )
    assert store.write(db, settings, claimed, done) == set()
    assert store.give_back(db, claimed) == set()
    store.fail(db, claimed, "engine_error", "too late")
    assert _fit(db, fit_id).status == CANCELLED


def test_a_lost_chunk_is_halved_and_a_fit_lost_alone_fails_after_max_attempts(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(max_attempts=2)
    db, settings = _services(client)
    ids = _batch(client, 4)
    chunk = _chunk_of(db, ids[0])
    assert {_chunk_of(db, i) for i in ids} == {chunk}
    assert len(store.claim(db, settings, chunk).fits) == 4
    _set(db, Fit.chunk_id == chunk, lease_expires_at=LONG_AGO)
    # The chunk's worker died: no fit runs again in it; two halves are queued instead.
    again = store.claim(db, settings, chunk)
    assert again.fits == [] and len(again.split_into) == 2
    halves = [sorted(f.id for f in store.claim(db, settings, half).fits) for half in again.split_into]
    assert sorted(halves[0] + halves[1]) == ids and [len(half) for half in halves] == [2, 2]

    # Down to one fit: each loss while it runs alone counts; at max_attempts it fails.
    single = client.post("/v1/fits", json=FIT).get_json()["id"]
    chunk = _chunk_of(db, single)
    for _ in range(settings.max_attempts):
        assert store.claim(db, settings, chunk).fits
        _set(db, Fit.id == single, lease_expires_at=LONG_AGO)
    assert store.claim(db, settings, chunk).fits == []
    lost = _fit(db, single)
    assert lost.status == FAILED and lost.error_type == "worker_lost"


def test_a_fit_whose_run_raises_fails_alone_and_its_neighbours_succeed(
    make_client: Callable[..., FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One tenant's fit whose computation raises, coalesced with another tenant's fits, failed the
    whole chunk as `internal` (schemathesis found it: a convergence_tolerance past 1e154). Now the
    chunk goes back in halves, down to the fit alone."""
    a, b = make_client("tenant-a"), make_client("tenant-b")
    db, settings = _services(a)
    monkeypatch.setenv("CALIB_FAILPOINTS", "raise_fit_epochs=4321")
    failpoints._active.cache_clear()
    try:
        good = _singles(a, 2) + _singles(b, 1)
        poison = _singles(b, 1, epochs=4321)[0]
        queue, runs, raised = [_chunk_of(db, good[0])], 0, []
        while queue:
            chunk, runs = queue.pop(0), runs + 1
            try:
                done = runner.run_chunk(db, settings, chunk, torch.device("cpu"))
            except RuntimeError as exc:  # the fit alone: failed, and raised to Celery as before
                raised.append(str(exc))
                continue
            assert done.claimed
            queue += done.publish
    finally:
        monkeypatch.delenv("CALIB_FAILPOINTS")
        failpoints._active.cache_clear()
    assert runs == 5  # the chunk of four, its halves of two, the poison fit's half's halves
    assert raised == ["failpoint raise_fit_epochs: a fit of 4321 epochs"]
    assert all((_fit(db, i).status, _fit(db, i).epochs_done) == (SUCCEEDED, 100) for i in good)
    failed = b.get(f"/v1/fits/{poison}").get_json()
    assert failed["status"] == FAILED, failed
    assert failed["error"] == {"type": "internal", "detail": "RuntimeError: " + raised[0]}


def test_a_fit_given_back_goes_on_from_its_checkpoint(client: FlaskClient) -> None:
    db, settings = _services(client)
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    chunk = _chunk_of(db, fit_id)
    claimed = store.claim(db, settings, chunk).fits
    state = {"epoch": 64, "w": 1.0, "b": 0.0}
    checkpoint = store.Checkpoint(blocks=[_block(fit_id, count=64)], progress={fit_id: 64}, states={fit_id: state})
    store.write(db, settings, claimed, checkpoint)
    assert store.give_back(db, claimed) == {fit_id}
    assert _fit(db, fit_id).status == QUEUED
    resumed = store.claim(db, settings, chunk).fits
    assert resumed[0].start_epoch == 64 and resumed[0].attempt == 2
    assert _fit(db, fit_id).epochs_done == 64  # the losses so far are kept


def test_the_reconciler_publishes_what_was_never_sent_lost_or_dropped(client: FlaskClient) -> None:
    db, settings = _services(client)
    lost = client.post("/v1/fits", json=FIT).get_json()["id"]
    store.claim(db, settings, _chunk_of(db, lost))  # before the others are queued: nothing to coalesce
    _set(db, Fit.id == lost, lease_expires_at=LONG_AGO)
    never, dropped, waiting = (client.post("/v1/fits", json=FIT).get_json()["id"] for _ in range(3))
    _set(db, Fit.id == never, dispatched_at=None, created_at=LONG_AGO)
    _set(db, Fit.id == dropped, dispatched_at=LONG_AGO)
    chunks = {name: _chunk_of(db, fit_id) for name, fit_id in [("never", never), ("dropped", dropped), ("lost", lost)]}

    published: list[str] = []
    # While the broker still holds messages, a fit sent long ago is waiting its turn, not lost.
    assert reconciler.reconcile(db, settings, published.append, lambda: 3) == 2
    assert set(published) == {chunks["never"], chunks["lost"]}
    published.clear()
    # With the queue empty it was lost too; the lost lease stays stale until a worker claims it.
    assert reconciler.reconcile(db, settings, published.append, lambda: 0) == 2
    assert set(published) == {chunks["dropped"], chunks["lost"]}
    assert _chunk_of(db, waiting) not in published
    assert _fit(db, never).dispatched_at is not None


def test_tenants_take_turns(make_client: Callable[..., FlaskClient]) -> None:
    # Batches' chunks (single fits are coalesced, below): which chunk a message runs.
    busy, quiet = make_client("busy"), make_client("quiet")
    db, settings = _services(busy)
    first, second = (_chunk_of(db, _batch(busy, 2)[0]) for _ in range(2))
    # Only one tenant waiting: its chunks run in their order.
    assert fairness.fairer_chunk(db, first) is None
    store.claim(db, settings, first)
    other = _chunk_of(db, _batch(quiet, 1)[0])
    # busy was served last: its next message runs the quiet tenant's chunk instead.
    assert fairness.fairer_chunk(db, second) == other
    store.claim(db, settings, other)
    # Now quiet was served last, and busy's turn comes back.
    assert fairness.fairer_chunk(db, second) is None


def test_loss_blocks_round_trip_through_the_loss_store(client: FlaskClient) -> None:
    """Written as the worker writes them (COPY on PostgreSQL), read back as the API reads them, both
    through the Database's loss store; a retried write replaces, and the tenant's count follows."""
    db, _ = _services(client)
    assert isinstance(db.losses, loss_store.InDatabase)
    plain = client.post("/v1/fits", json=FIT).get_json()["id"]
    split = client.post("/v1/fits", json=FIT | {"validation": {"indices": [1]}}).get_json()["id"]
    loss = np.linspace(80.0, 2.0, 100)
    blocks = [
        loss_blocks.encode(plain, 1, loss[:60]),
        loss_blocks.encode(plain, 61, loss[60:]),
        loss_blocks.encode(split, 1, loss[:10], val_loss=loss[:10] * 2),
    ]
    tenants = {plain: "tenant-a", split: "tenant-a"}
    with db.session(write=True) as session:
        db.losses.write(session, blocks, tenants)
    with db.session(write=True) as session:
        # The same write again, as after a commit whose answer was lost: replaced, not doubled.
        db.losses.write(session, blocks[2:], tenants, replacing=True)
    with db.session() as session:
        curves = db.losses.read_range(session, plain, 50, 71)
        with_val = db.losses.read_range(session, split, 1, 11, with_val=True)
        assert quotas.stored_loss_bytes(session, "tenant-a") == sum(block.stored_bytes for block in blocks)
    np.testing.assert_array_equal(curves.loss, loss[49:70].astype(np.float32))
    assert curves.val_loss is None
    np.testing.assert_array_equal(with_val.val_loss, (loss[:10] * 2).astype(np.float32))
    with db.session(write=True) as session:
        freed = db.losses.delete_for(session, [plain, split])
    assert freed == {"tenant-a": sum(block.stored_bytes for block in blocks)}


def test_the_loss_store_is_chosen_by_its_urls_scheme(tmp_path: Path) -> None:
    assert isinstance(loss_store.loss_store_for("database:"), loss_store.InDatabase)
    assert isinstance(loss_store.loss_store_for(""), loss_store.InDatabase)  # the default
    with pytest.raises(ValueError, match=r"CALIB_LOSS_STORE_URL='s3://calib/losses'.*'s3'.*database:"):
        loss_store.loss_store_for("s3://calib/losses")
    # A process told of a store calib does not know stops at its start, before it accepts any fit.
    upgrade(Settings(data_dir=tmp_path))
    with pytest.raises(ValueError, match="CALIB_LOSS_STORE_URL"):
        create_app(Settings(data_dir=tmp_path, loss_store_url="s3://calib/losses"))


def _singles(client: FlaskClient, count: int, **fit: object) -> list[str]:
    return [client.post("/v1/fits", json=FIT | fit).get_json()["id"] for _ in range(count)]


def test_a_claim_coalesces_queued_single_fits_and_tenants_take_turns(make_client: Callable[..., FlaskClient]) -> None:
    a, b, c = (make_client(name, chunk_size=4) for name in ("tenant-a", "tenant-b", "tenant-c"))
    db, settings = _services(a)
    a_fits, b_fits, c_fits = _singles(a, 3), _singles(b, 2), _singles(c, 1)
    in_batch = _batch(b, 1)[0]
    chunk = _chunk_of(db, a_fits[0])
    claimed = store.claim(db, settings, chunk).fits
    # Its own fit, then one fit of each tenant in turn (each tenant's oldest), up to chunk_size;
    # a batch's fit keeps its own chunk.
    assert {f.id for f in claimed} == {a_fits[0], a_fits[1], b_fits[0], c_fits[0]}
    assert {f.tenant for f in claimed} == {"tenant-a", "tenant-b", "tenant-c"}
    assert all(f.attempt == 1 for f in claimed) and {_chunk_of(db, f.id) for f in claimed} == {chunk}
    assert {_fit(db, i).status for i in (a_fits[2], b_fits[1], in_batch)} == {QUEUED}
    # The coalesced fits' own messages find nothing of theirs; they take what is still queued
    again = store.claim(db, settings, _chunk_of(db, b_fits[0]))
    assert {f.id for f in again.fits} == {b_fits[1], a_fits[2]}


def test_two_claims_at_once_each_skip_what_the_other_holds(make_client: Callable[..., FlaskClient]) -> None:
    """Two workers woken together, each by its own single fit's message: each claim locks its own
    fit, then looks for queued single fits to coalesce and finds the other's. Waiting for it
    would deadlock (each holds what the other wants; PostgreSQL breaks that only after
    deadlock_timeout, a second of both workers idle, and fails one claim). Each skips the row the
    other holds instead."""
    a, b = make_client("tenant-a"), make_client("tenant-b")
    db, settings = _services(a)
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the embedded default takes its write lock at BEGIN: one claim waits for the other whole")
    mine, theirs = _singles(a, 1)[0], _singles(b, 1)[0]
    both_hold_their_own = threading.Barrier(2, timeout=10)
    paused: set[int] = set()

    def after_own_chunk(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Right after each claim's first UPDATE (its own chunk's fits): both now hold a row.
        if statement.startswith("UPDATE fits") and threading.get_ident() not in paused:
            paused.add(threading.get_ident())
            both_hold_their_own.wait()

    sa.event.listen(db.engine, "after_cursor_execute", after_own_chunk)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            claims = [pool.submit(store.claim, db, settings, _chunk_of(db, fit)) for fit in (mine, theirs)]
            taken = [{f.id for f in claim.result(timeout=30).fits} for claim in claims]
    finally:
        sa.event.remove(db.engine, "after_cursor_execute", after_own_chunk)
    assert taken == [{mine}, {theirs}]
    assert {_fit(db, fit).status for fit in (mine, theirs)} == {RUNNING}


def test_a_write_holds_its_tenants_count_only_at_its_end(make_client: Callable[..., FlaskClient]) -> None:
    """Every write of a tenant's fits adds to one row, the tenant's stored-bytes count, locked until
    the write commits. Two workers writing chunks of one tenant's batch must not wait on each other
    for the rest of their writes: while one is still updating its fits, the other writes whole."""
    client = make_client("tenant-a", chunk_size=1)  # a chunk each, as a batch's are
    db, settings = _services(client)
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the embedded default takes its write lock at BEGIN: one write waits for the other whole")
    first, second = _singles(client, 2)
    claimed = {fit: store.claim(db, settings, _chunk_of(db, fit)).fits for fit in (first, second)}
    assert [f.id for f in claimed[first]] == [first] and [f.id for f in claimed[second]] == [second]

    def ends(fit_id: str) -> store.Checkpoint:
        return store.Checkpoint(
            blocks=[_block(fit_id)], progress={fit_id: 10}, finished={fit_id: {"status": SUCCEEDED}}
        )

    updated, go_on = threading.Event(), threading.Event()
    pausing: list[int] = []  # the thread of the first write

    def pause_after_the_fits_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE fits") and [threading.get_ident()] == pausing:
            updated.set()
            go_on.wait(30)

    def write_first() -> set[str]:
        pausing.append(threading.get_ident())
        return store.write(db, settings, claimed[first], ends(first))

    sa.event.listen(db.engine, "after_cursor_execute", pause_after_the_fits_update)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            paused = pool.submit(write_first)
            assert updated.wait(10)
            # The first write is open, its fit updated: the second writes whole meanwhile.
            second_write = pool.submit(store.write, db, settings, claimed[second], ends(second))
            try:
                assert second_write.result(timeout=10) == {second}
            finally:
                go_on.set()
            assert paused.result(timeout=10) == {first}
    finally:
        go_on.set()
        sa.event.remove(db.engine, "after_cursor_execute", pause_after_the_fits_update)
    assert {_fit(db, fit).status for fit in (first, second)} == {SUCCEEDED}
    with db.session() as session:
        assert quotas.stored_loss_bytes(session, "tenant-a") == 2 * _block(first).stored_bytes


def test_coalesced_fits_of_different_tenants_keep_their_own_results(make_client: Callable[..., FlaskClient]) -> None:
    a, b = make_client("tenant-a"), make_client("tenant-b")
    db, settings = _services(a)
    slope_a, slope_b = [2.0 * u + 1.0 for u in FIT["t_u"]], [-0.5 * u + 3.0 for u in FIT["t_u"]]
    fit_a = a.post("/v1/fits", json=FIT | {"t_c": slope_a, "epochs": 3000}).get_json()["id"]
    fit_b = b.post("/v1/fits", json=FIT | {"t_c": slope_b, "epochs": 2000, "optimizer": "adam"}).get_json()["id"]
    assert run_fit(a, fit_a) == 2  # both, in one chunk
    assert _chunk_of(db, fit_a) == _chunk_of(db, fit_b)
    one, other = a.get(f"/v1/fits/{fit_a}").get_json(), b.get(f"/v1/fits/{fit_b}").get_json()
    assert (one["status"], other["status"]) == (SUCCEEDED, SUCCEEDED)
    assert (one["epochs_done"], other["epochs_done"]) == (3000, 2000)
    # Each alone, on a fresh database row: the same result to the last bit.
    alone_a = a.post("/v1/fits", json=FIT | {"t_c": slope_a, "epochs": 3000}).get_json()["id"]
    assert run_fit(a, alone_a) == 1
    assert a.get(f"/v1/fits/{alone_a}").get_json()["result"] == one["result"]
    alone_b = b.post("/v1/fits", json=FIT | {"t_c": slope_b, "epochs": 2000, "optimizer": "adam"}).get_json()["id"]
    assert run_fit(b, alone_b) == 1
    assert b.get(f"/v1/fits/{alone_b}").get_json()["result"] == other["result"]
    # Their losses too, each under its own tenant (the other's id is 404).
    assert (
        a.get(f"/v1/fits/{fit_a}/losses?limit=5").get_json()["loss"]
        == (a.get(f"/v1/fits/{alone_a}/losses?limit=5").get_json()["loss"])
    )
    assert b.get(f"/v1/fits/{fit_a}").status_code == 404


def test_a_coalesced_fit_cancelled_or_reclaimed_is_not_written(make_client: Callable[..., FlaskClient]) -> None:
    a, b = make_client("tenant-a"), make_client("tenant-b")
    db, settings = _services(a)
    mine, cancelled, kept = _singles(a, 1)[0], _singles(b, 1)[0], _singles(b, 1)[0]
    chunk = _chunk_of(db, mine)
    stale = store.claim(db, settings, chunk).fits
    assert {f.id for f in stale} == {mine, cancelled, kept}
    assert b.post(f"/v1/fits/{cancelled}/cancel").status_code == 202
    # The chunk's worker is presumed lost: a chunk of three is halved, and the halves run again.
    _set(db, Fit.id.in_([mine, kept]), lease_expires_at=LONG_AGO)
    halves = store.claim(db, settings, chunk).split_into
    fresh = [f for half in halves for f in store.claim(db, settings, half).fits]
    assert sorted((f.id, f.attempt) for f in fresh) == sorted([(mine, 2), (kept, 2)])
    finished = {i: {"status": SUCCEEDED, "epochs_done": 100} for i in (mine, cancelled, kept)}
    blocks = [_block(i, count=100) for i in (mine, cancelled, kept)]
    # The stale attempt writes nothing: not the cancelled fit, nor those another attempt runs.
    assert store.write(db, settings, stale, store.Checkpoint(blocks=blocks, finished=finished)) == set()
    assert _fit(db, cancelled).status == CANCELLED
    assert {_fit(db, i).status for i in (mine, kept)} == {RUNNING}
    assert store.write(db, settings, fresh, store.Checkpoint(blocks=blocks, finished=finished)) == {mine, kept}
    assert {_fit(db, i).status for i in (mine, kept)} == {SUCCEEDED}
