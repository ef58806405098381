"""The worker's Celery pool: prefork, with its supervision every half second (services/worker/pool.py)."""

from __future__ import annotations

from celery.concurrency import get_implementation

from services.worker.celery_app import app
from services.worker.pool import MAINTAIN_EVERY_SECONDS, SupervisedAsynPool, SupervisedPrefork


def test_the_worker_runs_the_supervised_prefork_pool() -> None:
    # What `celery worker` resolves when no --pool is given (every command we ship gives none).
    assert get_implementation(app.conf.worker_pool) is SupervisedPrefork
    assert SupervisedPrefork.Pool is SupervisedAsynPool


def test_a_dead_pool_process_is_looked_for_twice_a_second_not_every_five() -> None:
    pool = SupervisedAsynPool.__new__(SupervisedAsynPool)  # the timer table only: no processes started
    assert list(pool.timers.values()) == [MAINTAIN_EVERY_SECONDS]
    assert MAINTAIN_EVERY_SECONDS <= 0.5
    assert list(pool.timers) == [pool.maintain_pool]
