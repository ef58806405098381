"""Loss blocks by day on PostgreSQL (shared/store/loss_partitions.py): each block lands in its day's
partition, the reconciler makes the days ahead, and retention drops a whole day's partition once
every fit with a block in it ended before the cutoff, with the same bookkeeping as deleting rows.
On SQLite there are no partitions and retention deletes rows (test_stored_bytes_and_retention.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.worker import reconciler
from shared.store import loss_partitions, retention
from shared.store.db import Database
from shared.store.models import Fit, utcnow
from tests.in_process import run_fit, stored_bytes

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 3000, "input_scale": 0.1}
OLD = dt.timedelta(days=40)  # the day the blocks were written
# When the fits ended: past the 30 days' cutoff, within the reconciler's day of grace (past it, a fit
# whose partition is kept is pruned row by row: retention.prune's `by_partition`).
ENDED = dt.timedelta(days=30, hours=1)


def _postgres(client: FlaskClient) -> Database:
    db: Database = client.application.extensions["calib"].db
    if db.engine.dialect.name != "postgresql":
        pytest.skip("partitions are PostgreSQL's; SQLite keeps one table")
    return db


def _exists(db: Database, name: str) -> bool:
    with db.session() as session:
        return session.scalar(sa.text("SELECT to_regclass(:name)"), {"name": name}) is not None


def _partition_of(db: Database, fit_id: str) -> set[str]:
    with db.session() as session:
        rows = session.scalars(
            sa.text("SELECT DISTINCT tableoid::regclass::text FROM loss_blocks WHERE fit_id = :id"), {"id": fit_id}
        )
        return set(rows)


def _written_on(db: Database, fit_ids: list[str], day: dt.date) -> None:
    """Move these fits' blocks to `day`'s partition (PostgreSQL moves the rows between partitions)."""
    with db.session(write=True) as session:
        loss_partitions.create_day(session, day)
        session.execute(
            sa.text("UPDATE loss_blocks SET written_on = :day WHERE fit_id = ANY(:ids)"), {"day": day, "ids": fit_ids}
        )


def _finished(db: Database, fit_ids: list[str], when: dt.datetime) -> None:
    with db.session(write=True) as session:
        session.execute(sa.update(Fit).where(Fit.id.in_(fit_ids)).values(finished_at=when))


def test_blocks_land_in_todays_partition_and_the_week_ahead_exists(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client()
    db = _postgres(client)
    today = utcnow().date()
    for offset in range(loss_partitions.DAYS_AHEAD + 1):
        assert _exists(db, loss_partitions.partition_name(today + dt.timedelta(days=offset)))
    assert _exists(db, loss_partitions.DEFAULT)
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    run_fit(client, fit_id)
    assert _partition_of(db, fit_id) == {loss_partitions.partition_name(today)}
    assert len(client.get(f"/v1/fits/{fit_id}/losses?limit=5000").get_json()["loss"]) == 3000


def test_the_reconciler_makes_the_days_ahead(make_client: Callable[..., FlaskClient]) -> None:
    db = _postgres(make_client())
    today = utcnow().date()
    last = loss_partitions.partition_name(today + dt.timedelta(days=loss_partitions.DAYS_AHEAD))
    with db.session(write=True) as session:
        session.execute(sa.text(f"ALTER TABLE loss_blocks DETACH PARTITION {last}"))
        session.execute(sa.text(f"DROP TABLE {last}"))
    assert not _exists(db, last)
    reconciler._partitions_checked["at"] = float("-inf")
    assert reconciler.ensure_partitions(db) == [last]
    assert _exists(db, last)
    assert reconciler.ensure_partitions(db) == []  # within the hour: not even looked at


def test_retention_drops_a_days_partition_once_its_fits_all_ended_before_the_cutoff(
    make_client: Callable[..., FlaskClient],
) -> None:
    a, b = make_client("tenant-a"), make_client("tenant-b")
    db = _postgres(a)
    old, recent = (
        a.post("/v1/fits", json=FIT).get_json()["id"],
        b.post("/v1/fits", json=FIT | {"epochs": 100}).get_json()["id"],
    )
    kept = a.post("/v1/fits", json=FIT | {"epochs": 200}).get_json()["id"]
    assert run_fit(a, old) == 3
    day = utcnow().date() - OLD
    name = loss_partitions.partition_name(day)
    _written_on(db, [old, recent], day)
    assert _partition_of(db, old) == _partition_of(db, recent) == {name}
    _finished(db, [old], utcnow() - ENDED)

    # `recent` ended after the cutoff: its day's partition is kept whole, and nothing is deleted.
    assert retention.prune(db, dt.timedelta(days=30), by_partition=True) == retention.Pruned(0, 0)
    assert _exists(db, name) and a.get(f"/v1/fits/{old}/losses").status_code == 200

    # Once it has too, the partition goes: both fits pruned, each tenant's bytes lowered by its own.
    _finished(db, [recent], utcnow() - ENDED)
    old_bytes, recent_bytes, kept_bytes = (stored_bytes(a, fit) for fit in (old, recent, kept))
    assert min(old_bytes, recent_bytes, kept_bytes) > 0
    done = retention.prune(db, dt.timedelta(days=30), by_partition=True)
    assert (done.fits, done.bytes) == (2, old_bytes + recent_bytes)
    assert not _exists(db, name)
    for client, fit_id in ((a, old), (b, recent)):
        assert client.get(f"/v1/fits/{fit_id}").get_json()["losses_pruned"] is True
        assert client.get(f"/v1/fits/{fit_id}/losses").status_code == 410
    assert a.get("/v1/usage").get_json()["stored_loss_bytes"] == kept_bytes
    assert b.get("/v1/usage").get_json()["stored_loss_bytes"] == 0
    assert a.get(f"/v1/fits/{kept}/losses").status_code == 200  # today's partition is untouched
    assert retention.prune(db, dt.timedelta(days=30), by_partition=True).fits == 0


def test_past_the_day_of_grace_a_kept_partitions_ended_fits_go_row_by_row(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client()
    db = _postgres(client)
    done, running = (client.post("/v1/fits", json=FIT | {"epochs": e}).get_json()["id"] for e in (100, 200))
    run_fit(client, done)
    day = utcnow().date() - OLD
    _written_on(db, [done, running], day)
    _finished(db, [done], utcnow() - OLD)
    with db.session(write=True) as session:  # `running` holds the partition: it cannot be dropped
        session.execute(sa.update(Fit).where(Fit.id == running).values(status="running", finished_at=None))
    done_bytes = stored_bytes(client, done)
    assert done_bytes > 0
    pruned = retention.prune(db, dt.timedelta(days=30), by_partition=True)
    assert (pruned.fits, pruned.bytes) == (1, done_bytes)
    assert _exists(db, loss_partitions.partition_name(day)) and _partition_of(db, done) == set()
    assert client.get(f"/v1/fits/{running}/losses").status_code == 200


def test_a_partition_holding_a_running_fit_is_kept(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client()
    db = _postgres(client)
    fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
    run_fit(client, fit_id)
    day = utcnow().date() - OLD
    _written_on(db, [fit_id], day)
    with db.session(write=True) as session:  # as if it were running still, from a checkpoint
        session.execute(sa.update(Fit).where(Fit.id == fit_id).values(status="running", finished_at=None))
    assert retention.prune(db, dt.timedelta(days=30), by_partition=True).fits == 0
    assert _exists(db, loss_partitions.partition_name(day))
