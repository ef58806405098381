"""The Celery worker app: `celery -A services.worker.celery_app worker`.

Tasks are thin: they take ids, open what they need in the worker process, and
call the runner or the reconciler, which know nothing of Celery.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

import torch
from celery.signals import setup_logging, worker_init, worker_process_init

from migrations.apply import SchemaNotAtHead, require_head
from services.worker import fairness, reconciler, runner, webhooks
from services.worker.engine import pick_device
from shared.runtime import collector, logs
from shared.runtime.queue import DELIVER_WEBHOOKS, RECONCILE, RUN_CHUNK, make_celery, queue_depth
from shared.runtime.settings import get_settings
from shared.runtime.wakeups import PendingMark
from shared.store import deliveries as owed
from shared.store import retention
from shared.store.db import Database

log = logging.getLogger("calib.worker")
# JSON from the first line on (Celery warns about its user before it sets up logging).
logs.configure("worker")

settings = get_settings()
app = make_celery(settings)
# Prefork, with a dead pool process noticed within a second (services/worker/pool.py).
app.conf.worker_pool = "services.worker.pool:SupervisedPrefork"
app.conf.beat_schedule = {
    "reconcile": {"task": RECONCILE, "schedule": settings.reconcile_every_seconds},
}

_state: dict[str, object] = {}
_pending = PendingMark(settings.broker)
# A worker drains the queue after its message's chunk for at most this long, then publishes a
# message for what is left and acknowledges: its process then takes its turn at the control
# queue (the reconciler, which reclaims a lost worker's fits) between chunks.
_DRAIN_SECONDS = 5.0
# Fits whose losses one reconciler round may prune (retention_days > 0).
_PRUNE_PER_ROUND = 2000


def _database() -> Database:
    # One engine per process, made after the fork: pooled connections must not be shared.
    if _state.get("pid") != os.getpid():
        _state.clear()
        _state["pid"] = os.getpid()
        _state["db"] = Database.from_settings(settings)
    db = _state["db"]
    assert isinstance(db, Database)
    return db


@setup_logging.connect
def _json_logs(loglevel: int | str | None = None, **_: object) -> None:
    # Connected, this replaces Celery's own logging setup: every line is JSON.
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else (loglevel or logging.INFO)
    logs.configure("worker", level)


@worker_init.connect
def _schema_at_head(**_: object) -> None:
    # Celery logs and ignores an exception from a signal handler; SystemExit does stop it.
    try:
        require_head(settings, "worker")
    except SchemaNotAtHead as exc:
        raise SystemExit(f"calib worker: {exc}") from exc


@worker_init.connect
def _settle_before_the_pool_forks(**_: object) -> None:
    # A chunk of 10,000 fits allocates as a batch's POST does (shared/runtime/collector.py). Settled
    # here, in the main process, the pool's processes inherit the frozen heap (settle_after_fork).
    collector.settle_after_start()


@worker_process_init.connect
def _init_process(**_: object) -> None:
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    device = pick_device(settings.device)
    name = f"{torch.cuda.get_device_name(device)}; " if device.type == "cuda" else ""
    threads = torch.get_num_threads()
    log.info("engine device: %s (%storch threads: %d; CALIB_DEVICE=%s)", device, name, threads, settings.device)
    collector.settle_after_fork()


@app.task(name=RUN_CHUNK)
def run_chunk(chunk_id: str) -> int:
    """A message is a wake-up: run its chunk (or a fairer tenant's), then every chunk still queued,
    fairest first, until no fit is queued (or _DRAIN_SECONDS pass: then a message for the rest);
    only then is the message acknowledged. So a fit whose
    publish was skipped (a wake-up already pending, services/api/extensions.py) or lost is taken
    by the next worker that wakes, and a burst of submissions runs in a few chunks."""
    db = _database()
    _pending.clear()  # before the first claim: a fit committed after this publishes again, or is seen
    other = fairness.fairer_chunk(db, chunk_id)
    if other is not None:
        # This message goes back to the end of the queue; the other tenant's chunk runs now.
        run_chunk.apply_async((chunk_id,))
        log.info("chunk %s: another tenant's chunk %s runs first (fair share)", chunk_id, other)
        chunk_id = other
    claimed, passed = 0, set()
    deadline = time.monotonic() + _DRAIN_SECONDS
    next_chunk: str | None = chunk_id
    while next_chunk is not None:
        run = runner.run_chunk(db, settings, next_chunk, pick_device(settings.device))
        claimed += run.claimed
        if not run.claimed:
            passed.add(next_chunk)  # taken by another worker meanwhile: look past it
        # The halves of a lost chunk, or this chunk's fits given back after their time slice:
        # a message each (the fits are committed queued; a lost publish is the reconciler's).
        for chunk in run.publish:
            run_chunk.apply_async((chunk,))
        if run.deliveries_due:
            deliver_webhooks.apply_async()
        elif run.claimed and run.deliveries_due is None:
            _wake_deliveries()  # no write ended a fit (a failure, a give-back): look
        if run.publish:
            break  # given back or split: their messages run them, after whatever else is queued
        next_chunk = fairness.next_chunk(db, frozenset(passed))
        if next_chunk is not None and time.monotonic() > deadline:
            # Draining this long: hand the rest to a message of its own, so this process takes its
            # turn at the control queue (the reconciler) between chunks.
            run_chunk.apply_async((next_chunk,))
            break
    return claimed


def _wake_deliveries() -> None:
    """Publish a delivery task when webhooks are due (the fits just ended may have owed some)."""
    with _database().session() as session:
        if owed.due(session):
            deliver_webhooks.apply_async()


@app.task(name=DELIVER_WEBHOOKS)
def deliver_webhooks() -> int:
    return webhooks.deliver_due(_database(), settings)


@app.task(name=RECONCILE)
def reconcile() -> int:
    def publish(chunk_id: str) -> None:
        run_chunk.apply_async((chunk_id,))

    count = reconciler.reconcile(_database(), settings, publish, lambda: queue_depth(app))
    if count:
        log.info("reconciler re-published %d chunks", count)
    # Batches that ended while two workers each saw the other's fits running, and deliveries due
    # (retries, and those whose worker was lost mid-POST).
    with _database().session(write=True) as session:
        swept = owed.sweep(session)
    if swept:
        log.info("reconciler created the webhooks of %d ended batches", swept)
    _wake_deliveries()
    if settings.retention_days > 0:
        # A bounded share per round, so retention never holds the reconciler up.
        age = dt.timedelta(days=settings.retention_days)
        pruned = retention.prune(_database(), age, limit=_PRUNE_PER_ROUND, by_partition=True)
        if pruned.fits:
            log.info("retention pruned the losses of %d fits (%d bytes)", pruned.fits, pruned.bytes)
    return count
