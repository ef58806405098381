"""Wake-ups against the real API and workers on PostgreSQL + Redis (the only backend with a pending
mark): a burst of single-fit submissions publishes a message or two, not one per fit; a worker
that takes one drains every queued fit before it acknowledges it; the fits' transactions send no
NOTIFY, and waiters are woken through Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from shared.runtime.queue import QUEUE
from tests.e2e.stacks import T_C, T_U, running

pytestmark = pytest.mark.e2e

BURST = 50
FIT = {"t_u": T_U, "t_c": T_C, "epochs": 300, "learning_rate": 1e-2, "input_scale": 0.1}
# Fits one claim takes: small, so the burst needs several chunks, and only a draining worker can
# run them all from the message or two the burst published.
CHUNK_SIZE = 8
# The reconciler, which would publish what no message woke, is kept out of the test's time.
NO_RECONCILER = {"CALIB_UNDISPATCHED_AFTER_SECONDS": "600", "CALIB_REDISPATCH_AFTER_SECONDS": "600"}


def test_a_burst_publishes_a_few_messages_and_one_worker_drains_it(tmp_path: Path) -> None:
    with running(
        "postgres",
        tmp_path,
        workers=0,
        CALIB_CHUNK_SIZE=str(CHUNK_SIZE),
        CALIB_RATE_LIMIT="100000/second",
        **NO_RECONCILER,
    ) as stack:
        broker = redis.Redis.from_url(stack.env["CALIB_BROKER_URL"])
        dsn = stack.env["CALIB_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")

        async def burst() -> tuple[list[str], float]:
            headers = {"Authorization": f"Bearer {stack.token}"}
            async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=60) as http:
                started = time.monotonic()
                answers = await asyncio.gather(*(http.post("/v1/fits", json=FIT) for _ in range(BURST)))
                took = time.monotonic() - started
            assert {answer.status_code for answer in answers} == {202}
            return [answer.json()["id"] for answer in answers], took

        # Nothing of the fits' own transactions notifies: a LISTEN on the old channel hears nothing.
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute("LISTEN calib_ended")
            ids, took = asyncio.run(burst())
            # No worker runs: the messages wait in the queue. One per 2 s pending mark at most.
            messages = broker.llen(QUEUE)
            assert 1 <= messages <= 1 + int(took / 2.0) + 1, (messages, took)
            assert messages < BURST // 10
            stack.add_worker()
            stack.wait_workers_consume()
            ended = [stack.wait(fit_id, timeout=120) for fit_id in ids]
            assert {fit["status"] for fit in ended} == {"succeeded"}
            assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
        # Every fit ran, CHUNK_SIZE at a claim, from those few messages: the worker drained the queue.
        assert stack.metrics()[("calib_chunk_duration_seconds_count", ())] >= BURST / CHUNK_SIZE
        assert broker.llen(QUEUE) == 0
