"""What the fault-injection tests share: stacks with fast recovery settings, fits, stored losses, kills."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from shared.domain.packing import unpack_f32_block
from shared.store.models import LossBlock
from tests.backends import backend_env
from tests.stack import Stack

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
FAST = {
    "CALIB_LEASE_SECONDS": "2",
    "CALIB_RECONCILE_EVERY_SECONDS": "0.5",
    "CALIB_UNDISPATCHED_AFTER_SECONDS": "1",
    "CALIB_REDISPATCH_AFTER_SECONDS": "3",
}


def noisy_fits(count: int, epochs: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "t_u": T_U,
            "t_c": (np.asarray(T_C) + rng.normal(0, 0.3, 11)).round(4).tolist(),
            "epochs": epochs,
            "learning_rate": 1e-2,
            "input_scale": 0.1,
            "labels": {"row": str(i)},
        }
        for i in range(count)
    ]


@contextmanager
def running(
    kind: str,
    tmp: Path,
    workers: int,
    redis_url: str = "",
    deliveries: int | None = None,
    api_processes: int = 1,
    **env: str,
) -> Iterator[Stack]:
    """A stack of its own for a test about the workers (faults, fairness, wake-ups): one API process
    unless the test is about the API's (Stack.api_processes)."""
    with backend_env(kind, tmp, redis_url) as base:
        stack = Stack(
            {**base, **FAST, **env}, tmp / "logs", workers=workers, deliveries=deliveries, api_processes=api_processes
        ).start()
        try:
            yield stack
        finally:
            stack.stop()


def stored_losses(db: Any, fit_id: str) -> np.ndarray:
    """Every stored loss of the fit, block after block, read from the rows themselves."""
    with db.session() as session:
        blocks = session.execute(
            sa.select(LossBlock.count, LossBlock.loss).where(LossBlock.fit_id == fit_id).order_by(LossBlock.first_epoch)
        ).all()
    return np.concatenate([unpack_f32_block(blob, count) for count, blob in blocks])


def kill_worker_holding(stack: Stack, claimed_by: str) -> int:
    """SIGKILL the whole worker (main process, pool child, beat) whose child holds the claim."""
    group = os.getpgid(int(claimed_by.rsplit(":", 1)[1]))
    assert group in {c.pid for c in stack.children[1:]}, "the claim is not held by one of our workers"
    os.killpg(group, signal.SIGKILL)
    return group
