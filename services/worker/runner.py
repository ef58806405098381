"""One chunk of fits, start to end: claim, compute in epoch blocks, write each block, finish.

No database session is open while the engine computes; each block of epochs is
written in one transaction, which is the fit's progress (epochs_done, losses so
far), its lease heartbeat and its cancellation checkpoint.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from services.worker import store
from services.worker.engine import GradientDescent, SeriesBatch
from services.worker.engine.iterative import Iterative
from services.worker.engine.stopping import StopRule
from shared import failpoints, logs, worker_metrics
from shared.db import Database
from shared.models import DIVERGED, SUCCEEDED, utcnow
from shared.packing import F32
from shared.settings import Settings
from shared.splits import split

log = logging.getLogger("calib.worker")

# Bound on one block's (fits x epochs) float64 tensor: about 256 MB.
_BLOCK_CELLS = 32_000_000
# Bound on the losses one call of the iterative engine holds: 250 million float32, 1 GB.
_ITERATIVE_CELLS = 250_000_000


def run_chunk(db: Database, settings: Settings, chunk_id: str, device: torch.device) -> int:
    """Run the chunk's queued fits; returns how many this call claimed."""
    with logs.bound(chunk_id=chunk_id):
        tally = Tally(time.perf_counter())
        fits = store.claim(db, settings, chunk_id)
        if not fits:
            log.info("chunk %s: nothing to claim", chunk_id)
            return 0
        # A fit alone is a chunk of one: then every line of the chunk names its fit.
        with logs.bound(fit_id=fits[0].id if len(fits) == 1 else None):
            log.info("chunk %s: claimed %d fits", chunk_id, len(fits))
            failpoints.kill_if_poisoned([fit.epochs for fit in fits])
            try:
                with _heartbeat(db, settings, fits):
                    _compute_and_write(db, settings, fits, device, tally)
            except Exception as exc:
                store.fail(db, fits, "internal", f"{type(exc).__name__}: {exc}")
                raise
            seconds = time.perf_counter() - tally.started
            _count(db, tally, seconds)
            log.info("chunk %s: done in %.3f s", chunk_id, seconds)
        return len(fits)


@dataclass
class Tally:
    """What a chunk did, for the workers' counters: when it started, and each fit it finished
    (status, epochs done, seconds from the claim)."""

    started: float
    finished: list[tuple[str, int, float]] = field(default_factory=list)


def _count(db: Database, tally: Tally, seconds: float) -> None:
    """Add the chunk to the workers' counters (/metrics). A metric is not worth failing a chunk over."""
    try:
        worker_metrics.record_chunk(db, tally.finished, seconds)
    except Exception as exc:
        log.warning("chunk metrics not recorded: %s", exc)


@contextmanager
def _heartbeat(db: Database, settings: Settings, fits: list[store.ClaimedFit]) -> Iterator[None]:
    """Renew the fits' lease every third of its length while the chunk runs, so a long
    computation between two checkpoints (an iterative optimizer over many epochs) is
    not taken for a dead worker. Dies with the process, which is the point."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.lease_seconds / 3):
            try:
                store.renew(db, settings, fits)
            except Exception as exc:  # a missed beat only risks a retry, fenced by attempt
                log.warning("lease renewal failed: %s", exc)

    # In a copy of this context, so its log lines name the chunk and fit too.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), name="lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _rule(fit: store.ClaimedFit) -> tuple[object, ...]:
    """Fits that one engine call can run together."""
    if fit.optimizer == "gd":
        return ("closed_form",) if fit.gradient == "analytic" else ("gd", fit.gradient, fit.delta)
    return ("adam",) if fit.optimizer == "adam" else ("momentum",)  # sgd is momentum 0


def _compute_and_write(
    db: Database, settings: Settings, fits: list[store.ClaimedFit], device: torch.device, tally: Tally
) -> None:
    # One engine call per update rule in the chunk: the exact closed form for gd with
    # the analytic gradient, the batched iteration for the others.
    groups: dict[tuple[object, ...], list[store.ClaimedFit]] = {}
    for fit in fits:
        groups.setdefault(_rule(fit), []).append(fit)
    for rule, group in groups.items():
        if rule == ("closed_form",):
            _run_group(db, settings, group, device, tally)
            continue
        # The iteration keeps every epoch's loss (float32) until it is written: slices
        # of at most _ITERATIVE_CELLS losses bound its memory (1 GB) at any epoch count.
        series = 2 if any(fit.held_out for fit in group) else 1  # training and validation
        per_call = max(1, _ITERATIVE_CELLS // (series * max(fit.epochs for fit in group)))
        for first in range(0, len(group), per_call):
            _run_group(db, settings, group[first:first + per_call], device, tally)


def _series(fits: list[store.ClaimedFit], part: int, device: torch.device) -> SeriesBatch:
    """The fits' training points (part 0) or held-out points (part 1), with their settings."""
    return SeriesBatch.build(
        [split(fit.t_u, fit.held_out)[part] for fit in fits],
        [split(fit.t_c, fit.held_out)[part] for fit in fits],
        epochs=[fit.epochs for fit in fits],
        learning_rate=[fit.learning_rate for fit in fits],
        input_scale=[fit.input_scale for fit in fits],
        input_shift=[fit.input_shift for fit in fits],
        w0=[fit.init_w for fit in fits],
        b0=[fit.init_b for fit in fits],
        device=device,
    )


def _engine(fits: list[store.ClaimedFit], device: torch.device) -> GradientDescent | Iterative:
    batch = _series(fits, 0, device)
    # Fits without a split have no held-out points: their validation averages are NaN, unused.
    validation = _series(fits, 1, device) if any(fit.held_out for fit in fits) else None
    stopping = StopRule.of([fit.early_stopping for fit in fits], batch.epochs)
    head = fits[0]
    if _rule(head) == ("closed_form",):
        return GradientDescent(batch, validation, stopping)
    return Iterative(batch, [fit.optimizer for fit in fits],
                     # The API stored every option resolved; None only where an option does
                     # not apply, and the engine then never reads it (sgd is momentum 0).
                     momentum=[fit.momentum or 0.0 for fit in fits],
                     beta1=[fit.beta1 or 0.0 for fit in fits],
                     beta2=[fit.beta2 or 0.0 for fit in fits],
                     eps=[fit.eps or 0.0 for fit in fits],
                     gradient=head.gradient, delta=head.delta or 0.0, validation=validation, stopping=stopping)


def _run_group(
    db: Database, settings: Settings, fits: list[store.ClaimedFit], device: torch.device, tally: Tally
) -> None:
    engine = _engine(fits, device)
    done = engine.epochs_done.cpu().numpy()
    diverged_at = engine.diverged_at.cpu().numpy()
    w, b = engine.w.cpu().numpy(), engine.b.cpu().numpy()
    stopped_early = engine.stopped_early.cpu().numpy()
    # Readings so large that even float64 cannot hold their squares (|t_u| near 1e308) make
    # the five averages inf or NaN, and no epoch has a representable loss: by API.md's rule
    # (the sum of squared residuals overflows) such a fit diverged at epoch 1.
    broken = (diverged_at == 0) & ~(np.isfinite(w) & np.isfinite(b))
    if broken.any():
        diverged_at = np.where(broken, 1, diverged_at)
        done = np.where(broken, 0, done)

    block_epochs = max(1, min(settings.loss_block_epochs, _BLOCK_CELLS // len(fits)))
    last_epoch = int(done.max())
    alive = {fit.id for fit in fits}
    first = 1
    while True:
        last = min(first + block_epochs - 1, max(last_epoch, first))
        losses = engine.losses(first, last, torch.float32).cpu().numpy()
        val_block = engine.val_losses(first, last)
        val_losses = val_block.cpu().numpy() if val_block is not None else None
        checkpoint = store.Checkpoint()
        for i, fit in enumerate(fits):
            if fit.id not in alive:
                continue
            count = min(last, int(done[i])) - first + 1
            val = val_losses[i, :count] if val_losses is not None and fit.held_out else None
            if count > 0:
                checkpoint.blocks.append({
                    "fit_id": fit.id, "first_epoch": first, "count": count,
                    "loss": np.ascontiguousarray(losses[i, :count], dtype=F32).tobytes(),
                    "val_loss": None if val is None else np.ascontiguousarray(val, dtype=F32).tobytes(),
                })
                checkpoint.progress[fit.id] = first + count - 1
            if int(done[i]) <= last:
                checkpoint.finished[fit.id] = _outcome(
                    int(done[i]), int(diverged_at[i]), float(w[i]), float(b[i]), losses[i, :count],
                    val, bool(stopped_early[i]))
        failpoints.sleep_before_checkpoint()
        owned = store.write(db, settings, fits, checkpoint)
        seconds = time.perf_counter() - tally.started
        tally.finished += [(outcome["status"], int(outcome["epochs_done"]), seconds)  # type: ignore[call-overload]
                           for fit_id, outcome in checkpoint.finished.items() if fit_id in owned]
        alive &= owned - set(checkpoint.finished)
        if not alive or last >= last_epoch:
            break
        first = last + 1


def _outcome(done: int, diverged_at: int, w: float, b: float, tail: np.ndarray,
             val_tail: np.ndarray | None, stopped_early: bool) -> dict[str, object]:
    """A finished fit's columns. `tail`: its losses in this last block (empty when it diverged at epoch 1)."""
    last_val = float(val_tail[-1]) if val_tail is not None and len(val_tail) else None
    base: dict[str, object] = {"epochs_done": done, "finished_at": utcnow(),
                               "val_loss": last_val if last_val is not None and np.isfinite(last_val) else None}
    if diverged_at:
        return {**base, "status": DIVERGED, "diverged_at_epoch": diverged_at,
                "loss": float(tail[-1]) if len(tail) else None}
    return {**base, "status": SUCCEEDED, "w": w, "b": b, "loss": float(tail[-1]),
            "stop_reason": "early_stopped" if stopped_early else "completed"}
