"""One chunk of fits, start to end: claim, compute in blocks of epochs, write each block, finish.

No database session is open while the engine computes. Every engine hands the runner its
losses a block of epochs at a time (about a second of work for the iterative optimizers),
and each block is written in one transaction, which is the fit's progress (epochs_done,
losses so far, the engine's state to go on from), its lease renewal and its cancellation
checkpoint: a fit cancelled meanwhile, or claimed again by another worker, is dropped from
the write and from every later block, while the chunk's other fits go on.

Faults (docs/how-a-fit-runs.md, "What a worker does on each fault"):
- a transient database error (connection lost, serialization failure, SQLite busy) is retried
  with backoff for `transient_retry_seconds`; past that the chunk gives its fits back (queued,
  with their checkpoints) instead of failing them;
- after `time_slice_seconds`, if other fits are queued, the chunk yields: its unfinished fits
  go back to the queue with their checkpoints and the fair-share order picks what runs next;
- the lease heartbeat stops renewing once the engine has made no progress for
  `stall_seconds`, so a stuck worker's fits are reclaimed.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy.orm as so
import torch

from services.worker import store
from services.worker.engine import GradientDescent, SeriesBatch, convergence
from services.worker.engine.ends import Ends, ends_of
from services.worker.engine.iterative import Iterative
from services.worker.engine.models import DISTANCE_LINE, LINE, Model, model_of
from services.worker.engine.stopping import StopRule
from services.worker.transient import is_transient, retrying
from shared.domain.convergence import VectorVerdict, Verdict, vector_verdict, verdict
from shared.domain.finite import finite_or_none
from shared.domain.functions import function_of
from shared.domain.splits import split
from shared.runtime import failpoints, logs
from shared.runtime.settings import Settings
from shared.store import deliveries, loss_blocks, worker_metrics
from shared.store.db import Database
from shared.store.models import DIVERGED, SUCCEEDED, utcnow

log = logging.getLogger("calib.worker")

# Bound on one block's (fits x epochs) losses: 32 million, 128 MB of float32.
_BLOCK_CELLS = 32_000_000
# The iterative engine's blocks: a multiple of its stopping window, sized to take about this long
# and cut there when the machine slows down meanwhile.
_BLOCK_SECONDS = 1.0
_WINDOW = 64


@dataclass
class ChunkRun:
    """What a call of run_chunk did: fits claimed, and chunks to publish (the halves of a lost
    chunk, or this chunk again after it yielded or gave its fits back)."""

    claimed: int = 0
    publish: list[str] = field(default_factory=list)
    # Whether a webhook delivery is due, as the write that ended its fits found; None: not asked
    # (no write ended a fit: a failure or a give-back), so the caller looks.
    deliveries_due: bool | None = None


def run_chunk(db: Database, settings: Settings, chunk_id: str, device: torch.device) -> ChunkRun:
    """Run the chunk's queued fits (and those whose worker was lost)."""
    with logs.bound(chunk_id=chunk_id):
        tally = Tally(time.perf_counter())
        claim = retrying(lambda: store.claim(db, settings, chunk_id), "claim", settings.transient_retry_seconds)
        run = ChunkRun(len(claim.fits), list(claim.split_into))
        if claim.split_into:
            log.info("chunk %s: its worker was lost; split in %s", chunk_id, claim.split_into)
        fits = claim.fits
        if not fits:
            log.info("chunk %s: nothing to claim", chunk_id)
            return run
        # A fit alone is a chunk of one: then every line of the chunk names its fit.
        with logs.bound(fit_id=fits[0].id if len(fits) == 1 else None):
            log.info("chunk %s: claimed %d fits", chunk_id, len(fits))
            epochs = [fit.epochs for fit in fits]
            failpoints.kill_if_poisoned(epochs)
            work = Work(db, settings, fits, tally)
            try:
                failpoints.raise_if_poisoned(epochs)
                with _heartbeat(work):
                    _compute_and_write(work, device)
            except Exception as exc:
                if not is_transient(exc):
                    alive = [fit for fit in fits if fit.id in work.alive]
                    if len(alive) < 2:
                        store.fail(db, fits, "internal", f"{type(exc).__name__}: {exc}")
                        raise
                    # One fit's fault must not fail the others: they go back in halves.
                    log.exception("chunk %s: its run raised; its %d fits run again in halves", chunk_id, len(alive))
                    run.publish += _halved(db, settings, chunk_id, alive)
                else:
                    # The database stayed unreachable past the retries: the fits are not at fault.
                    log.warning("chunk %s: database unreachable, giving its fits back: %s", chunk_id, exc)
                    work.give_back = True
            if work.give_back:
                try:
                    returned = retrying(
                        lambda: store.give_back(db, [f for f in fits if f.id in work.alive]),
                        "give back",
                        settings.transient_retry_seconds,
                    )
                except Exception as exc:  # their leases expire, and the reconciler reclaims them
                    log.warning("chunk %s: fits not given back (%s); their leases will expire", chunk_id, exc)
                    returned = set()
                if returned:
                    log.info(
                        "chunk %s: %d fits back in the queue, to go on from their checkpoints", chunk_id, len(returned)
                    )
                    run.publish.append(chunk_id)
            seconds = time.perf_counter() - tally.started
            if not tally.counted:
                _count(db, tally, seconds)
            run.deliveries_due = work.deliveries_due
            log.info("chunk %s: done in %.3f s", chunk_id, seconds)
        return run


def _halved(db: Database, settings: Settings, chunk_id: str, fits: list[store.ClaimedFit]) -> list[str]:
    """The chunks `fits` went back to the queue in; none where the database would not take them
    back (their leases expire, and the reclaim halves them all the same)."""
    try:
        halves = retrying(lambda: store.give_back_in_halves(db, fits), "halve", settings.transient_retry_seconds)
    except Exception as exc:
        log.warning("chunk %s: fits not given back in halves (%s); their leases will expire", chunk_id, exc)
        return []
    return halves


@dataclass
class Tally:
    """What a chunk did, for the workers' counters: when it started, and each fit it finished
    (status, epochs done, seconds from the claim)."""

    started: float
    finished: list[tuple[str, int, float]] = field(default_factory=list)
    counted: bool = False  # added to the counters already, by the write that ended its last fits


@dataclass
class Work:
    """A claimed chunk while it runs: the fits this attempt still owns, when the engine last made
    progress (the heartbeat's watchdog), and whether to give the rest back."""

    db: Database
    settings: Settings
    fits: list[store.ClaimedFit]
    tally: Tally
    alive: set[str] = field(default_factory=set)
    progressed: float = field(default_factory=time.monotonic)
    give_back: bool = False
    deliveries_due: bool | None = None

    def __post_init__(self) -> None:
        self.alive = {fit.id for fit in self.fits}

    def write(self, fits: list[store.ClaimedFit], checkpoint: store.Checkpoint) -> None:
        """One block's transaction, retried through transient errors; drops the fits this attempt lost."""
        failpoints.sleep_before_checkpoint()
        tries = 0

        # This write ends every fit the chunk still runs: the chunk's counters go in its transaction.
        last = self.alive <= set(checkpoint.finished)
        finished: list[tuple[str, int, float]] = []  # (status, epochs done, seconds) of those it ended
        due: bool | None = None  # whether a webhook delivery is due, asked when it ended fits

        def also(session: so.Session, owned: set[str]) -> None:
            nonlocal finished, due
            seconds = time.perf_counter() - self.tally.started
            finished = [
                (str(outcome["status"]), int(str(outcome["epochs_done"])), seconds)
                for fit_id, outcome in checkpoint.finished.items()
                if fit_id in owned
            ]
            due = deliveries.due(session) if finished else None
            if last:
                worker_metrics.add_chunk(session, self.tally.finished + finished, seconds)

        def attempt() -> set[str]:
            nonlocal tries
            tries += 1  # a retry may follow a commit that landed: it replaces its own blocks
            return store.write(self.db, self.settings, fits, checkpoint, again=tries > 1, also=also)

        owned = retrying(attempt, "checkpoint", self.settings.transient_retry_seconds)
        self.tally.finished += finished
        self.tally.counted = last
        if due is not None:
            self.deliveries_due = bool(self.deliveries_due) or due
        self.alive -= ({fit.id for fit in fits} - owned) | set(checkpoint.finished)
        self.progressed = time.monotonic()

    def should_yield(self) -> bool:
        """Past the time slice, with other fits waiting: go back to the queue."""
        if self.give_back:
            return True
        if time.perf_counter() - self.tally.started < self.settings.time_slice_seconds or not self.alive:
            return False
        self.give_back = retrying(
            lambda: store.others_waiting(self.db), "queue check", self.settings.transient_retry_seconds
        )
        return self.give_back


def _count(db: Database, tally: Tally, seconds: float) -> None:
    """Add the chunk to the workers' counters (/metrics). A metric is not worth failing a chunk over."""
    try:
        worker_metrics.record_chunk(db, tally.finished, seconds)
    except Exception as exc:
        log.warning("chunk metrics not recorded: %s", exc)


@contextmanager
def _heartbeat(work: Work) -> Iterator[None]:
    """Renew the fits' lease every third of its length while the chunk runs, so a long block is not
    taken for a dead worker; but not once the engine has made no progress for stall_seconds: a
    stuck worker must let its fits be reclaimed. Dies with the process, which is the point."""
    settings = work.settings
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.lease_seconds / 3):
            if time.monotonic() - work.progressed > settings.stall_seconds:
                log.warning("no progress for %.0f s: the lease is left to expire", settings.stall_seconds)
                continue
            try:
                store.renew(work.db, settings, [fit for fit in work.fits if fit.id in work.alive])
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
    options = fit.optimizer_options
    if fit.optimizer == "gd" and options.get("gradient", "analytic") == "analytic" and fit.u_t_u is None:
        return ("closed_form",)
    # gd's gradient and delta are one per call; every other option may differ fit by fit.
    return (fit.optimizer, options.get("gradient"), options.get("delta"))


def _compute_and_write(work: Work, device: torch.device) -> None:
    # One engine call per update rule in the chunk: the exact closed form for gd with the
    # analytic gradient, the batched iteration for the others; an iteration resumes all its
    # fits from one epoch, so fits saved at different epochs run in separate calls. And per
    # power of two of epochs: an engine call computes every fit up to its longest one, so a
    # fit of a million epochs coalesced beside thousands of 5000 would multiply their work.
    # And per model: one engine call fits one function.
    groups: dict[tuple[object, ...], list[store.ClaimedFit]] = {}
    for fit in work.fits:
        rule = _rule(fit)
        start = () if rule == ("closed_form",) else (fit.start_epoch,)
        groups.setdefault((fit.epochs.bit_length(), *rule, *start, _model_key(fit)), []).append(fit)
    # The closed form first, shortest first: its fits end in a write or a few, so a long
    # iterative fit coalesced beside them never holds them back.
    for key, group in sorted(groups.items(), key=lambda item: (item[0][1] != "closed_form", item[0][0])):
        if work.should_yield():
            return
        if key[1] == "closed_form":
            _run_closed_form(work, group, device)
        else:
            _run_iterative(work, group, device)


def _model_key(fit: store.ClaimedFit) -> tuple[object, ...]:
    """The function a fit fits, as a key: ("line",), ("line", "distance"), ("polynomial", degree)."""
    if fit.model is None:
        return ("line",) if fit.u_t_u is None else ("line", "distance")
    return (fit.model["kind"], *(fit.model[name] for name in sorted(fit.model) if name != "kind"))


def _model(fit: store.ClaimedFit) -> Model:
    """The engine's model of the fit's stored `model` (null: the book's line, by generalized distance
    regression where the readings' uncertainties are stated)."""
    if fit.model is None:
        return LINE if fit.u_t_u is None else DISTANCE_LINE
    options = {name: value for name, value in fit.model.items() if name != "kind"}
    return model_of(str(fit.model["kind"]), **options)


def _series(fits: list[store.ClaimedFit], part: int, device: torch.device) -> SeriesBatch:
    """The fits' training points (part 0) or held-out points (part 1), with their settings; for a
    transformed function (one model per group), its regressor and response in place of t_u and t_c."""
    t_u = [split(fit.t_u, fit.held_out)[part] for fit in fits]
    t_c = [split(fit.t_c, fit.held_out)[part] for fit in fits]
    u_t_c = [split(fit.u_t_c, fit.held_out)[part] if fit.u_t_c is not None else None for fit in fits]
    function = function_of(fits[0].model)
    if function is not None:
        # The stated u(t_c) carried to the response, as the API's least squares weighed it.
        u_t_c = [
            function.response_uncertainty(u, c, stated, _weighting(fit, len(u))) if stated is not None else None
            for fit, u, c, stated in zip(fits, t_u, t_c, u_t_c, strict=True)
        ]
        t_u, t_c = (
            [function.regressor(u, c) for u, c in zip(t_u, t_c, strict=True)],
            [function.response(u, c) for u, c in zip(t_u, t_c, strict=True)],
        )
    return SeriesBatch.build(
        t_u,
        t_c,
        epochs=[fit.epochs for fit in fits],
        learning_rate=[fit.learning_rate for fit in fits],
        input_scale=[fit.input_scale for fit in fits],
        input_shift=[fit.input_shift for fit in fits],
        w0=[fit.init_w for fit in fits],
        b0=[fit.init_b for fit in fits],
        device=device,
        u_t_c=u_t_c,
        u_t_u=[split(fit.u_t_u, fit.held_out)[part] if fit.u_t_u is not None else None for fit in fits],
    )


def _weighting(fit: store.ClaimedFit, points: int) -> np.ndarray | None:
    """The unweighted coefficients a Callendar–Van Dusen fit's u(t_c) are carried to R by, per point."""
    found = (fit.solution or {}).get("weighting")
    if found is None:
        return None
    return np.tile(np.asarray(found, dtype=np.float64), (points, 1))


def _data(
    fits: list[store.ClaimedFit], device: torch.device
) -> tuple[SeriesBatch, SeriesBatch | None, StopRule | None]:
    batch = _series(fits, 0, device)
    # Fits without a split have no held-out points: their validation averages are NaN, unused.
    validation = _series(fits, 1, device) if any(fit.held_out for fit in fits) else None
    return batch, validation, StopRule.of([fit.early_stopping for fit in fits], batch.epochs)


def _checkpoint(
    work: Work,
    fits: list[store.ClaimedFit],
    first: int,
    last: int,
    losses: np.ndarray,
    val_losses: np.ndarray | None,
    ends: Ends,
    ended: np.ndarray,
    states: list[dict[str, Any]],
) -> store.Checkpoint:
    """One block's write: the epochs first..last each fit recorded past where it started, its
    outcome if it ended in the block, and its state to go on from if it did not."""
    checkpoint = store.Checkpoint()
    model = _model(fits[0])
    raw = _raw_parameters(model, fits, torch.from_numpy(ends.theta)) if not model.is_line and ended.any() else None
    for i, fit in enumerate(fits):
        if fit.id not in work.alive:
            continue
        start = max(first, fit.start_epoch + 1)
        stop = min(last, int(ends.done[i])) if ended[i] else last
        count = stop - start + 1
        val = val_losses[i, start - first : stop - first + 1] if val_losses is not None and fit.held_out else None
        if count > 0:
            checkpoint.blocks.append(
                loss_blocks.encode(fit.id, start, losses[i, start - first : stop - first + 1], val)
            )
            checkpoint.progress[fit.id] = stop
        if ended[i]:
            tail = losses[i, : max(0, stop - first + 1)]
            checkpoint.finished[fit.id] = _outcome(fit, ends, i, tail, val, raw[i] if raw is not None else None)
        else:
            checkpoint.states[fit.id] = states[i]
    return checkpoint


def _run_closed_form(work: Work, fits: list[store.ClaimedFit], device: torch.device) -> None:
    """gd with the analytic gradient: every epoch is known at once, so blocks are only the writes
    (and a fit goes on from any epoch: its state is just where it stopped)."""
    model = _model(fits[0])
    batch, validation, stopping = _data(fits, device)
    engine = GradientDescent(batch, validation, stopping, model=model)
    needed = _epochs_needed(engine, fits, work.settings.max_epochs)
    auto = [fit.epochs_auto for fit in fits]
    if any(auto):
        # "auto": exactly the first epoch from which the fit has converged, within its max_epochs.
        for i, fit in enumerate(fits):
            if fit.epochs_auto and 0 <= needed[i] <= fit.epochs:
                fit.epochs = max(1, int(needed[i]))
        batch, validation, stopping = _data(fits, device)
        engine = GradientDescent(batch, validation, stopping, model=model)
    for fit, count in zip(fits, needed, strict=True):
        fit.epochs_needed = int(count) if count >= 0 else None
    ends = ends_of(engine)

    block_epochs = max(1, min(work.settings.loss_block_epochs, _BLOCK_CELLS // len(fits)))
    last_epoch = int(ends.done.max())
    first = min(fit.start_epoch for fit in fits) + 1
    while True:
        last = min(first + block_epochs - 1, max(last_epoch, first))
        losses = engine.losses(first, last, torch.float32).cpu().numpy()
        val_block = engine.val_losses(first, last)
        ended = ends.done <= last
        states = [{"epoch": last}] * len(fits)
        work.write(
            fits,
            _checkpoint(
                work,
                fits,
                first,
                last,
                losses,
                val_block.cpu().numpy() if val_block is not None else None,
                ends,
                ended,
                states,
            ),
        )
        if not (work.alive & {fit.id for fit in fits}) or last >= last_epoch or work.should_yield():
            return
        first = last + 1


def _epochs_needed(engine: GradientDescent, fits: list[store.ClaimedFit], limit: int) -> list[int]:
    """Per fit, the epochs this learning rate needs from this start to converge (-1: not within `limit`
    epochs, or no verdict for the data)."""
    dev, f64 = engine.batch.x.device, torch.float64

    def column(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=f64, device=dev)

    if engine.model is not LINE:
        return _model_epochs_needed(engine, fits, limit)
    optima = [fit.optimum for fit in fits]
    by_errors = torch.tensor([o is not None and o.has_errors() for o in optima], device=dev)
    found = convergence.epochs_needed(
        engine,
        column([fit.input_scale for fit in fits]),
        column([fit.input_shift for fit in fits]),
        column([fit.tolerance * (o.se_w or 0.0) if o else 0.0 for fit, o in zip(fits, optima, strict=True)]),
        column([fit.tolerance * (o.se_b or 0.0) if o else 0.0 for fit, o in zip(fits, optima, strict=True)]),
        column([o.excess_allowed(fit.tolerance) if o else 0.0 for fit, o in zip(fits, optima, strict=True)]),
        by_errors,
        limit,
    ).tolist()
    # No verdict where the optimum is not determined (t_u all equal).
    return [count if o is not None and o.w_opt is not None else -1 for count, o in zip(found, optima, strict=True)]


def _model_epochs_needed(engine: GradientDescent, fits: list[store.ClaimedFit], limit: int) -> list[int]:
    """_epochs_needed for any model but the line: its rule on every parameter, in raw units."""
    dev, f64 = engine.batch.x.device, torch.float64
    p = engine.model.size
    targets, by_errors, target_excess, determined = [], [], [], []
    for fit in fits:
        solution = fit.solution or {}
        opt = solution.get("parameters_opt") or []
        covariance = solution.get("covariance")
        u = [covariance[j][j] for j in range(p)] if covariance else []
        errors = bool(u) and all(v is not None and v > 0 and math.isfinite(v) for v in u)
        targets.append([fit.tolerance * math.sqrt(v) for v in u] if errors else [0.0] * p)
        by_errors.append(errors)
        target_excess.append(fit.optimum.excess_allowed(fit.tolerance) if fit.optimum else 0.0)
        determined.append(bool(opt) and all(v is not None for v in opt) and fit.optimum is not None)
    scale = torch.tensor([fit.input_scale for fit in fits], dtype=f64, device=dev)
    shift = torch.tensor([fit.input_shift for fit in fits], dtype=f64, device=dev)
    found = convergence.epochs_to_converge(
        convergence.deviations(engine.spectrum, engine.model.raw_map(scale, shift)),
        engine.spectrum,
        torch.tensor(targets, dtype=f64, device=dev),
        torch.tensor(target_excess, dtype=f64, device=dev),
        torch.tensor(by_errors, device=dev),
        limit,
    ).tolist()
    return [count if ok else -1 for count, ok in zip(found, determined, strict=True)]


def _run_iterative(work: Work, fits: list[store.ClaimedFit], device: torch.device) -> None:
    """sgd, momentum, adam, rmsprop and gd by autograd or finite differences: about a second of epochs per
    block, every block written, so progress shows, cancellation lands and a yield loses nothing."""
    batch, validation, stopping = _data(fits, device)
    head = fits[0]
    resume = [fit.resume or {} for fit in fits] if head.start_epoch else None
    engine = Iterative(
        batch,
        head.optimizer,
        [fit.optimizer_options for fit in fits],
        validation=validation,
        stopping=stopping,
        resume=resume,
        model=_model(head),
    )
    most = max(_WINDOW, (_BLOCK_CELLS // len(fits)) // _WINDOW * _WINDOW)
    epochs = _WINDOW
    while not engine.done:
        started = time.perf_counter()
        block = engine.run(epochs, seconds=_BLOCK_SECONDS)
        per_epoch = (time.perf_counter() - started) / max(1, block.last - block.first + 1)
        ended = block.ended.cpu().numpy()
        if any(fit.epochs_auto for fit in fits):
            # "auto": a fit that has converged by the end of this block ends here.
            if engine.model.is_line:
                w, b = engine.p[0].cpu().numpy(), engine.p[1].cpu().numpy()
                converged = [bool(_verdict(fit, float(w[i]), float(b[i])).converged) for i, fit in enumerate(fits)]
            else:
                raw = _raw_parameters(engine.model, fits, engine.p.T)
                converged = [bool(_vector_verdict(fit, raw[i]).converged) for i, fit in enumerate(fits)]
            reached = np.array([fit.epochs_auto and not ended[i] and converged[i] for i, fit in enumerate(fits)])
            if reached.any():
                engine.finish(torch.from_numpy(reached).to(engine.p.device))
                ended = ended | reached
        states = engine.states() if not bool(block.ended.all()) else []
        val = block.val_losses.cpu().numpy() if block.val_losses is not None else None
        work.write(
            fits,
            _checkpoint(
                work,
                fits,
                block.first,
                block.last,
                block.losses.cpu().numpy(),
                val,
                ends_of(engine),
                ended,
                states or [{}] * len(fits),
            ),
        )
        if not (work.alive & {fit.id for fit in fits}) or work.should_yield():
            return
        # The next block: about _BLOCK_SECONDS of epochs, whole stopping windows, bounded in memory.
        epochs = int(min(most, max(_WINDOW, _BLOCK_SECONDS / max(per_epoch, 1e-9) // _WINDOW * _WINDOW)))


def _raw_parameters(model: Model, fits: list[store.ClaimedFit], theta: torch.Tensor) -> np.ndarray:
    """Model-space parameters (B, p) in raw units, the function of t_u the API reports."""
    f64, dev = torch.float64, theta.device
    scale = torch.tensor([fit.input_scale for fit in fits], dtype=f64, device=dev)
    shift = torch.tensor([fit.input_shift for fit in fits], dtype=f64, device=dev)
    raw: np.ndarray = torch.einsum("bij,bj->bi", model.raw_map(scale, shift), theta.to(f64)).cpu().numpy()
    return raw


def _vector_verdict(fit: store.ClaimedFit, raw: np.ndarray) -> VectorVerdict:
    return vector_verdict([float(v) for v in raw], fit.solution or {}, fit.optimum, fit.tolerance)


def _verdict(fit: store.ClaimedFit, w: float, b: float) -> Verdict:
    """The convergence verdict of model-space (w, b), in raw units as the API reports them."""
    if fit.optimum is None:
        return Verdict(None, None, None, None)
    w_raw = w * fit.input_scale
    return verdict(w_raw, b - w_raw * fit.input_shift, fit.optimum, fit.tolerance)


def _outcome(
    fit: store.ClaimedFit,
    ends: Ends,
    i: int,
    tail: np.ndarray,
    val_tail: np.ndarray | None,
    raw: np.ndarray | None = None,
) -> dict[str, object]:
    """Fit i's columns once it ended. `tail`: its losses in this last block (empty when it diverged at
    epoch 1). `loss` is the loss at the returned line; the series' last value is `last_epoch_loss`.
    `raw`: a model other than the line's parameters in raw units (its line columns stay null)."""
    done, diverged_at, w, b = int(ends.done[i]), int(ends.diverged_at[i]), float(ends.w[i]), float(ends.b[i])
    base: dict[str, object] = {
        "epochs_done": done,
        "finished_at": utcnow(),
        "epochs_needed": fit.epochs_needed,
        "last_epoch_loss": finite_or_none(tail[-1]) if len(tail) else None,
        "last_epoch_val_loss": finite_or_none(val_tail[-1]) if val_tail is not None and len(val_tail) else None,
    }
    if diverged_at:
        # No line is returned, so no loss belongs to one; the last finite epoch's stays.
        return {**base, "status": DIVERGED, "diverged_at_epoch": diverged_at, "loss": None, "val_loss": None}
    if raw is not None:
        vector = _vector_verdict(fit, raw)
        found = Verdict(vector.converged, None, None, vector.excess_loss)
    else:
        found = _verdict(fit, w, b)
    if bool(ends.stopped_early[i]):
        reason = "early_stopped"
    elif fit.epochs_auto:
        reason = "converged" if found.converged else "max_epochs"
    else:
        reason = "completed"
    if raw is not None:
        values = [float(v) if math.isfinite(v) else None for v in raw]
        line: dict[str, object] = {"parameters": {"values": values, "gap_se": vector.gap_se}}
    else:
        line = {"w": w, "b": b}
    return {
        **base,
        "status": SUCCEEDED,
        **line,
        "loss": finite_or_none(ends.loss[i]),
        "val_loss": finite_or_none(ends.val_loss[i]) if fit.held_out else None,
        "stop_reason": reason,
        "converged": found.converged,
        "gap_se_w": found.gap_se_w,
        "gap_se_b": found.gap_se_b,
        "excess_loss": found.excess_loss,
    }
