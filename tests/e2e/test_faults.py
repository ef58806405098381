"""Fault injection on real processes: workers killed, poison fits, a crash between commit and
publish, chunks outliving the broker's visibility timeout, Redis flushed and restarted.

Every test ends with the ledger audit: every accepted fit is in the database, terminal,
with one loss series 1..epochs_done (a second run or a stale write would break it).
Timings are shortened (2 s leases, a reconciler every 0.5 s) so each test is bounded.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import sqlalchemy as sa
import torch

from services.worker.engine import GradientDescent, SeriesBatch
from shared.store.models import Fit
from tests.e2e.ledger import all_terminal, audit, database, fits_by_id, wait_until
from tests.e2e.stacks import T_C, T_U, kill_worker_holding, noisy_fits, running, stored_losses
from tests.servers import RedisServer


def clean_run_losses(fits: list[dict[str, Any]]) -> np.ndarray:
    """The same fits computed in this process, undisturbed, as float32 like the stored ones."""
    batch = SeriesBatch.build(
        [f["t_u"] for f in fits],
        [f["t_c"] for f in fits],
        epochs=[f["epochs"] for f in fits],
        learning_rate=[f["learning_rate"] for f in fits],
        input_scale=[f["input_scale"] for f in fits],
        w0=[1.0] * len(fits),
        b0=[0.0] * len(fits),
    )
    return GradientDescent(batch).losses(1, fits[0]["epochs"], torch.float32).numpy()


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_kill_9_a_worker_mid_chunk(kind: str, tmp_path: Path) -> None:
    with running(
        kind, tmp_path, workers=2, CALIB_FAILPOINTS="checkpoint_sleep=0.3", CALIB_LOSS_BLOCK_EPOCHS="200"
    ) as stack:
        fits = noisy_fits(20, 2000)
        batch = stack.http.post("/v1/batches", json={"fits": fits}).json()
        ids = [f["id"] for f in stack.http.get(f"/v1/batches/{batch['id']}/fits?limit=100").json()["items"]]
        db = database(stack.env)

        def mid_chunk() -> str | None:
            with db.session() as session:
                return session.scalar(
                    sa.select(Fit.claimed_by).where(Fit.id.in_(ids), Fit.status == "running", Fit.epochs_done >= 200)
                )

        holder = wait_until(mid_chunk, 30, "a fit past its first checkpoint")
        kill_worker_holding(stack, holder)
        wait_until(all_terminal(db, ids), 60, "every fit of the chunk ends")

        result = audit(db, ids)
        assert result.clean, result
        assert result.statuses == {"succeeded": 20} and result.attempts == {2: 20}
        rows = fits_by_id(db, ids)
        assert {rows[i].claimed_by for i in ids} != {holder}
        expected = clean_run_losses(fits)
        for fit_id in ids:
            got = stored_losses(db, fit_id)
            assert got.shape == (2000,)
            np.testing.assert_allclose(got, expected[int(rows[fit_id].labels["row"])], rtol=1e-6)
        db.dispose()


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_a_fit_that_kills_its_worker_every_time_fails_after_three_attempts(kind: str, tmp_path: Path) -> None:
    with running(kind, tmp_path, workers=1, CALIB_FAILPOINTS="kill_worker_epochs=777") as stack:
        poison = stack.submit({"t_u": T_U, "t_c": T_C, "epochs": 777})
        others = []
        for _ in range(3):  # other fits go on flowing while the poison fit is retried
            others += [stack.submit(f)["id"] for f in noisy_fits(3, 1000)]
            time.sleep(2)
        fit = stack.wait(poison["id"], timeout=90)
        assert fit["status"] == "failed" and fit["error"]["type"] == "worker_lost"
        db = database(stack.env)
        wait_until(all_terminal(db, others), 30, "the other fits end")
        # It fails after max_attempts (3) losses while it ran alone. Before that it may have been
        # coalesced with fits queued beside it: each such loss halved the chunk, and only fits of
        # its half ran again, so its neighbours ran at most once more than those halvings.
        assert fits_by_id(db, [poison["id"]])[poison["id"]].worker_losses == 3
        shared = fit["attempt"] - 3
        assert 0 <= shared <= math.ceil(math.log2(len(others) + 1))
        result = audit(db, [poison["id"], *others])
        assert result.clean, result
        assert result.statuses == {"failed": 1, "succeeded": len(others)}
        assert max(row.attempt for row in fits_by_id(db, others).values()) <= shared + 1
        db.dispose()


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_a_publish_failing_after_the_commit_loses_nothing(kind: str, tmp_path: Path) -> None:
    with running(kind, tmp_path, workers=1, CALIB_FAILPOINTS="skip_publish") as stack:
        ids = [stack.submit(f)["id"] for f in noisy_fits(100, 500)]
        db = database(stack.env)
        with db.session() as session:
            undispatched = session.scalar(
                sa.select(sa.func.count()).select_from(Fit).where(Fit.id.in_(ids), Fit.dispatched_at.is_(None))
            )
        assert undispatched > 0  # the failpoint held: the API's publishes failed, their stamps cleared
        wait_until(all_terminal(db, ids), 60, "the reconciler dispatches every fit")
        result = audit(db, ids)
        assert result.clean, result
        assert result.statuses == {"succeeded": 100} and result.attempts == {1: 100}
        db.dispose()


def test_a_chunk_longer_than_the_visibility_timeout_runs_once(tmp_path: Path) -> None:
    # Redis hands an unacknowledged message to another worker after visibility_timeout
    # (celery#5935); the copy finds nothing to claim and exits without writing.
    with running(
        "postgres",
        tmp_path,
        workers=2,
        CALIB_VISIBILITY_TIMEOUT_SECONDS="1",
        CALIB_LEASE_SECONDS="10",
        CALIB_LOSS_BLOCK_EPOCHS="100",
        CALIB_FAILPOINTS="checkpoint_sleep=0.4",
    ) as stack:
        fits = noisy_fits(10, 1500)
        batch = stack.http.post("/v1/batches", json={"fits": fits}).json()
        ids = [f["id"] for f in stack.http.get(f"/v1/batches/{batch['id']}/fits").json()["items"]]
        db = database(stack.env)
        wait_until(all_terminal(db, ids), 60, "the long chunk ends")
        result = audit(db, ids)
        assert result.clean, result
        assert result.statuses == {"succeeded": 10} and result.attempts == {1: 10}
        chunk = fits_by_id(db, ids)[ids[0]].chunk_id
        logs = "".join(p.read_text() for p in stack.logs.glob("worker*.log"))
        assert f"chunk {chunk}: nothing to claim" in logs, "Redis never redelivered the message"
        db.dispose()


@pytest.mark.parametrize("nemesis", ["flush", "restart"])
def test_redis_flushed_or_restarted_with_1000_fits_queued(nemesis: str, own_redis: RedisServer, tmp_path: Path) -> None:
    with running("postgres", tmp_path, workers=0, redis_url=own_redis.url, CALIB_CHUNK_SIZE="25") as stack:
        batch = stack.http.post("/v1/batches", json={"fits": noisy_fits(1000, 300)}).json()
        db = database(stack.env)
        with db.session() as session:
            ids = list(session.scalars(sa.select(Fit.id).where(Fit.batch_id == batch["id"])))
        assert len(ids) == 1000
        assert redis.Redis.from_url(own_redis.url).llen("calib") == 40  # one message per chunk
        if nemesis == "flush":
            redis.Redis.from_url(own_redis.url).flushall()
        else:
            own_redis.restart()  # no persistence: it comes back empty
        assert redis.Redis.from_url(own_redis.url).llen("calib") == 0
        stack.add_worker()
        stack.add_worker()
        wait_until(all_terminal(db, ids), 90, "every queued fit ends after the broker lost them")
        result = audit(db, ids)
        assert result.clean, result
        assert result.statuses == {"succeeded": 1000} and result.attempts == {1: 1000}
        db.dispose()


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_cancel_inside_a_running_chunk(kind: str, tmp_path: Path) -> None:
    # One chunk of 10 fits; one is cancelled while the chunk runs. It stops at the next
    # checkpoint with its partial losses readable, the other nine go on, and neither a
    # redelivered message nor the reconciler revives it.
    with running(
        kind, tmp_path, workers=1, CALIB_FAILPOINTS="checkpoint_sleep=0.3", CALIB_LOSS_BLOCK_EPOCHS="100"
    ) as stack:
        batch = stack.http.post("/v1/batches", json={"fits": noisy_fits(10, 2000)}).json()
        ids = [f["id"] for f in stack.http.get(f"/v1/batches/{batch['id']}/fits").json()["items"]]
        victim = ids[3]
        wait_until(
            lambda: stack.http.get(f"/v1/fits/{victim}").json()["epochs_done"] >= 100,
            30,
            "the chunk passes its first checkpoint",
        )
        assert stack.http.post(f"/v1/fits/{victim}/cancel").status_code == 202
        db = database(stack.env)
        wait_until(all_terminal(db, ids), 60, "the rest of the chunk ends")
        time.sleep(2)  # a few reconciler rounds: nothing may revive the cancelled fit
        cancelled = stack.http.get(f"/v1/fits/{victim}").json()
        assert cancelled["status"] == "cancelled" and 100 <= cancelled["epochs_done"] < 2000
        losses = stack.losses(victim)
        assert len(losses) == cancelled["epochs_done"]
        result = audit(db, ids)
        assert result.clean, result
        assert result.statuses == {"succeeded": 9, "cancelled": 1} and result.attempts == {1: 10}
        db.dispose()


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_a_long_computation_keeps_its_lease(kind: str, tmp_path: Path) -> None:
    # 3 s between claim and first write, against a 2 s lease: only the heartbeat keeps
    # the second worker and the reconciler from taking the fit for lost.
    with running(kind, tmp_path, workers=2, CALIB_FAILPOINTS="checkpoint_sleep=3") as stack:
        fit = stack.wait(stack.submit({"t_u": T_U, "t_c": T_C, "epochs": 100, "input_scale": 0.1})["id"], timeout=60)
        assert fit["status"] == "succeeded" and fit["attempt"] == 1
