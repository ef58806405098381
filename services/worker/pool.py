"""Celery's prefork pool, with its supervision every half second instead of every five.

When a pool process dies (SIGKILL from the OOM killer, a poison fit), billiard marks its job
lost only on a later pass of the pool's maintenance, at least `worker_lost_wait` after it saw
the death: with Celery's fixed 5 s timer a single-process worker took 5–6 s to hand the message
back and start a new process, and took no new work meanwhile. A pass costs a scan of the pool's
few processes, so twice a second is nothing beside a chunk.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

MAINTAIN_EVERY_SECONDS = 0.5


class SupervisedAsynPool(AsynPool):
    @property
    def timers(self) -> dict[Any, float]:
        return {self.maintain_pool: MAINTAIN_EVERY_SECONDS}


class SupervisedPrefork(TaskPool):
    """`worker_pool` of services.worker.celery_app: prefork, supervised as above."""

    Pool = SupervisedAsynPool
