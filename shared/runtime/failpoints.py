"""Failpoints: faults the fault-injection tests switch on through CALIB_FAILPOINTS.

Off unless that variable is set, and never set by any command or file we ship.
Each failpoint marks a place where real systems fail (a crash between the commit
and the publish, a worker killed by the OOM killer, a chunk slower than the
broker's visibility timeout), so the tests can prove the recovery path instead
of hoping for it. The syntax is `name[=value]` separated by `;`, e.g.
`CALIB_FAILPOINTS="skip_publish;checkpoint_sleep=0.5;kill_worker_epochs=777"`:

- skip_publish: the API commits a submission and its publish fails, as with a broker
  that went away between the two.
- checkpoint_sleep=S: the worker sleeps S seconds before writing each checkpoint,
  so a chunk runs long enough to be killed mid-way.
- clock_offset=S: this process's clock (shared.store.models.utcnow) runs S seconds ahead, as a
  machine whose clock drifted would.
- kill_worker_epochs=N: a worker process that claims a fit of exactly N epochs
  SIGKILLs itself, on every attempt (a poison fit).
- raise_fit_epochs=N: a chunk holding a fit of exactly N epochs raises before it runs, on
  every attempt (a fit whose computation fails: a bug, or a value no code path expected).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from functools import cache


@cache
def _active() -> dict[str, str]:
    spec = os.environ.get("CALIB_FAILPOINTS", "")
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        name, _, value = item.partition("=")
        points[name.strip()] = value.strip()
    return points


def on(name: str) -> bool:
    return name in _active()


def value(name: str) -> str | None:
    return _active().get(name)


def sleep_before_checkpoint() -> None:
    seconds = value("checkpoint_sleep")
    if seconds:
        time.sleep(float(seconds))


def kill_if_poisoned(epochs: list[int]) -> None:
    poison = value("kill_worker_epochs")
    if poison and int(poison) in epochs:
        os.kill(os.getpid(), signal.SIGKILL)


def clock_offset() -> dt.timedelta:
    seconds = value("clock_offset")
    return dt.timedelta(seconds=float(seconds)) if seconds else dt.timedelta(0)


def raise_if_poisoned(epochs: list[int]) -> None:
    poison = value("raise_fit_epochs")
    if poison and int(poison) in epochs:
        raise RuntimeError(f"failpoint raise_fit_epochs: a fit of {poison} epochs")
