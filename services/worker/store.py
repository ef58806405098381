"""The worker's database side: claim a chunk's fits, write loss blocks and results, all fenced by attempt.

Every write first re-takes the fits' rows with a conditional UPDATE that only
matches fits still `running`; a fit that was cancelled, or reclaimed by another
worker (a higher attempt), is dropped from the write. So a stale or duplicate
delivery never writes, and a cancelled fit is never revived.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from services.worker import fairness
from shared.domain.convergence import Optimum
from shared.domain.packing import unpack_f64
from shared.domain.splits import held_out_indices
from shared.runtime.settings import Settings
from shared.store import bulk, calibrations, ended, loss_blocks
from shared.store.built_once import core
from shared.store.db import Database
from shared.store.dbclock import db_now, lease_until
from shared.store.models import FAILED, QUEUED, RUNNING, SUCCEEDED, Fit, TenantTurn, new_id, utcnow


@dataclass
class ClaimedFit:
    id: str
    tenant: str
    batch_id: str | None
    attempt: int
    epochs: int
    learning_rate: float
    init_w: float
    init_b: float
    input_scale: float
    input_shift: float
    optimizer: str
    # Its options resolved at submission (shared/contract/optimizers.py): gd's gradient and delta, ...
    optimizer_options: dict[str, Any]
    t_u: np.ndarray
    t_c: np.ndarray
    held_out: list[int]  # validation indices; empty without a split
    early_stopping: dict[str, object] | None
    # The engine's state saved at the end of the last block written, or None: from epoch 1.
    resume: dict[str, Any] | None = None
    # Convergence: "auto" epochs, the tolerance, and what the verdict needs of the training points.
    epochs_auto: bool = False
    tolerance: float = 0.01
    optimum: Optimum | None = None
    epochs_needed: int | None = None  # gd: set by the runner from the closed form
    # The function fitted as stored (null: the line) and, for any other kind, its exact least
    # squares in raw units (shared/domain/model_stats.py): what its verdict is measured against.
    model: dict[str, Any] | None = None
    solution: dict[str, Any] | None = None
    # The stated u(t_c) of every point (weights 1/u²), or None: equal weights.
    u_t_c: np.ndarray | None = None
    u_t_u: np.ndarray | None = None  # with u_t_c: generalized distance regression (a line)
    # Whether its end may owe more than the fit itself: a calibration of an instrument (a drift
    # verdict to record) and a webhook to deliver. A write asks the database only about these.
    instrument: str | None = None
    callback: bool = False

    @property
    def start_epoch(self) -> int:
        return int(self.resume["epoch"]) if self.resume else 0


@dataclass
class Checkpoint:
    """What one write carries: new loss blocks, progress, and the fits that ended."""

    blocks: list[loss_blocks.Block] = field(default_factory=list)
    progress: dict[str, int] = field(default_factory=dict)
    finished: dict[str, dict[str, object]] = field(default_factory=dict)
    # What each fit still running needs to go on from the end of these blocks.
    states: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Claim:
    """What a claim took: the fits to run now, and the chunks it split a lost chunk into (to publish)."""

    fits: list[ClaimedFit]
    split_into: list[str] = field(default_factory=list)


def holder() -> str:
    """host:pid of this worker process: who holds a claim or a lease (for operators, and the
    fault tests that kill it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(db: Database, settings: Settings, chunk_id: str) -> Claim:
    """Take the chunk's queued fits, and those whose lease expired (their worker was lost); with
    room left (up to chunk_size), queued single fits of any tenant too, in turn (coalescing: a
    wake-up message runs every single fit waiting, in one engine call and one write).

    A lost chunk of several fits is not run again whole: it is split in two new chunks, each
    queued for its own message, so a fit that kills its worker every time (a poison fit) is
    isolated by halving, and every other fit of the chunk runs. Only a fit lost while running
    alone counts a worker loss; after max_attempts of those it ends failed/worker_lost.
    Lease times and their expiry are the database's clock (shared.store.dbclock)."""
    dialect = db.engine.dialect.name
    on_sqlite = dialect == "sqlite"
    taking = _claiming(dialect, settings.lease_seconds, holder())
    with db.session(write=True) as session:
        # The database's clock read once for the whole claim: SQLite's changes from statement to
        # statement, and a lease that ran out between the check for lost fits and the claim was
        # reclaimed without its loss being counted (a poison fit got a fourth run).
        # PostgreSQL's now() is the transaction's start already: no round trip to read it.
        now = session.scalar(sa.select(db_now())) if on_sqlite else db_now()
        given = {"chunk": chunk_id, "started": utcnow()} | ({"now": now} if on_sqlite else {})
        lost = list(core(session).scalars(taking.lost, given))
        halves: list[str] = []
        if lost:
            # The rare paths (a lost fit) build their statements here; _claiming's bind their own.
            expired = sa.and_(Fit.status == RUNNING, Fit.lease_expires_at < now)
            if len(lost) > 1:
                for part in (lost[: len(lost) // 2], lost[len(lost) // 2 :]):
                    halves.append(new_id())
                    session.execute(
                        sa.update(Fit)
                        .where(Fit.id.in_(part), expired)
                        .values(chunk_id=halves[-1], status=QUEUED, lease_expires_at=None, dispatched_at=None)
                        .execution_options(synchronize_session=False)
                    )
            else:
                # Waiters look again (they find it still running unless this ends it as worker_lost).
                ended.announce(session, lost)
                session.execute(
                    sa.update(Fit)
                    .where(Fit.id == lost[0], expired)
                    .values(worker_losses=Fit.worker_losses + 1)
                    .execution_options(synchronize_session=False)
                )
                # A fit that killed its worker max_attempts times alone: end it rather than kill the next one.
                session.execute(
                    sa.update(Fit)
                    .where(Fit.id == lost[0], expired, Fit.worker_losses >= settings.max_attempts)
                    .values(
                        status=FAILED,
                        finished_at=utcnow(),
                        lease_expires_at=None,
                        checkpoint=None,
                        error_type="worker_lost",
                        error_detail=f"the worker running this fit alone was lost {settings.max_attempts} times",
                    )
                    .execution_options(synchronize_session=False)
                )
        # The rows come back from the claim itself (RETURNING gives the values after the update):
        # no second read of what was just written.
        rows = list(core(session).execute(taking.chunk, given))
        room = settings.chunk_size - len(rows)
        if room > 0 and not halves:
            rows += core(session).execute(taking.singles, given | {"room": room}).all()
        if not rows:
            return Claim([], halves)
        rows.sort(key=lambda row: (row.created_at, row.id))
        # A fit that starts again from epoch 1: its losses replace, never extend, the old ones.
        # On its first attempt it has none (only a claimed attempt writes): no statement.
        restart = [row.id for row in rows if row.checkpoint is None and row.attempt > 1]
        if restart:
            db.losses.delete_for(session, restart)
        fairness.record_turns(session, (row.tenant for row in rows))
    return Claim([_claimed(row) for row in rows], halves)


@dataclass(frozen=True)
class _Claiming:
    """A claim's statements, the values bound at each claim (chunk, started, room; now on SQLite)."""

    lost: sa.Select[str]  # the chunk's fits whose lease ran out
    chunk: sa.Update  # take the chunk's queued fits and its lost ones, returning _CLAIMED_COLUMNS
    singles: sa.Update  # take up to `room` queued single fits of any tenant (coalescing)


@functools.cache
def _claiming(dialect: str, lease_seconds: float, claimed_by: str) -> _Claiming:
    """Built once per process (and dialect, lease): every wake-up claims (shared/store/built_once.py
    says why). They run as Core: the ORM's bulk-update machinery, with nothing to synchronize here,
    cost as much again as building them (benchmarks/README.md, twentieth and twenty-first sittings)."""
    on_sqlite = dialect == "sqlite"
    # SQLite's clock is read once per claim and bound; PostgreSQL's now() is the transaction's start.
    now = sa.bindparam("now", type_=Fit.lease_expires_at.type) if on_sqlite else db_now()
    expired = sa.and_(Fit.status == RUNNING, Fit.lease_expires_at < now)
    # Not named "chunk_id": an UPDATE takes a parameter of a column's name as a value to SET.
    chunk_id = sa.bindparam("chunk", type_=sa.String)
    running = dict(
        status=RUNNING,
        chunk_id=chunk_id,
        attempt=Fit.attempt + 1,
        lease_expires_at=lease_until(lease_seconds),
        started_at=sa.func.coalesce(Fit.started_at, sa.bindparam("started", type_=Fit.started_at.type)),
        # A fit with a checkpoint goes on from it; any other starts again from epoch 1.
        epochs_done=sa.case((Fit.checkpoint.is_(None), 0), else_=Fit.epochs_done),
        claimed_by=claimed_by,
    )
    return _Claiming(
        lost=sa.select(Fit.id).where(Fit.chunk_id == chunk_id, expired).order_by(Fit.created_at, Fit.id),
        chunk=(
            sa.update(Fit)
            .where(Fit.chunk_id == chunk_id, sa.or_(Fit.status == QUEUED, expired))
            .values(**running)
            .returning(*_CLAIMED_COLUMNS)
        ),
        singles=(
            sa.update(Fit)
            .where(Fit.id.in_(_singles_to_coalesce(sa.bindparam("room", type_=sa.Integer))))
            .values(**running)
            .returning(*_CLAIMED_COLUMNS)
        ),
    )


# What a claim returns of each fit it took: all that the engine and the writes need.
_CLAIMED_COLUMNS = (
    Fit.id,
    Fit.created_at,
    Fit.attempt,
    Fit.tenant,
    Fit.batch_id,
    Fit.epochs,
    Fit.epochs_done,
    Fit.checkpoint,
    Fit.learning_rate,
    Fit.init_w,
    Fit.init_b,
    Fit.input_scale,
    Fit.input_shift,
    Fit.optimizer,
    Fit.optimizer_options,
    Fit.validation,
    Fit.early_stopping,
    Fit.t_u,
    Fit.t_c,
    Fit.epochs_auto,
    Fit.convergence_tolerance,
    Fit.w_opt,
    Fit.b_opt,
    Fit.se_w,
    Fit.se_b,
    Fit.t_u_mean,
    Fit.t_u_sxx,
    Fit.t_c_var,
    Fit.n_points,
    Fit.model,
    Fit.solution,
    Fit.u_t_c,
    Fit.u_t_u,
    Fit.instrument,
    Fit.callback_url,
)


def _claimed(row: Any) -> ClaimedFit:
    held_out = held_out_indices(row.validation)
    return ClaimedFit(
        id=row.id,
        tenant=row.tenant,
        batch_id=row.batch_id,
        attempt=row.attempt,
        epochs=row.epochs,
        learning_rate=row.learning_rate,
        init_w=row.init_w,
        init_b=row.init_b,
        input_scale=row.input_scale,
        input_shift=row.input_shift,
        optimizer=row.optimizer,
        optimizer_options=row.optimizer_options,
        t_u=unpack_f64(row.t_u),
        t_c=unpack_f64(row.t_c),
        held_out=held_out,
        early_stopping=row.early_stopping,
        resume=row.checkpoint if row.checkpoint is not None else None,
        epochs_auto=bool(row.epochs_auto),
        tolerance=row.convergence_tolerance,
        optimum=Optimum(
            row.w_opt,
            row.b_opt,
            row.se_w,
            row.se_b,
            row.t_u_mean,
            row.t_u_sxx,
            row.t_c_var,
            row.n_points - len(held_out),
        ),
        model=row.model,
        solution=row.solution,
        u_t_c=unpack_f64(row.u_t_c) if row.u_t_c is not None else None,
        u_t_u=unpack_f64(row.u_t_u) if row.u_t_u is not None else None,
        instrument=row.instrument,
        callback=row.callback_url is not None,
    )


def _singles_to_coalesce(room: sa.BindParameter[int]) -> sa.ScalarSelect[str]:
    """Up to `room` queued single fits (of any tenant) to run in a chunk that has room: the
    tenants take turns, the one served longest ago first, each tenant's oldest fit first.

    Only fits still in the chunk of one they were submitted as, never run: a fit from a lost
    chunk (its halves) or one given back with a checkpoint keeps its own chunk, so coalescing
    never undoes the halving that isolates a poison fit. Their own wake-up messages, when they
    come, find nothing to claim and may coalesce what was queued since.

    A fit another claim holds is skipped, not waited for (SKIP LOCKED): two workers woken at once
    each hold their own fit and would each wait for the other's, a deadlock PostgreSQL breaks
    only after its deadlock_timeout (a second, both workers idle) by failing one claim. The lock
    is taken on the rows picked, outside the ranking (PostgreSQL refuses FOR UPDATE beside a
    window function); the embedded default takes its write lock at BEGIN and renders none."""
    ranked = (
        sa.select(
            Fit.id,
            Fit.tenant,
            sa.func.row_number().over(partition_by=Fit.tenant, order_by=(Fit.created_at, Fit.id)).label("turn"),
        )
        .where(
            Fit.status == QUEUED,
            Fit.batch_id.is_(None),
            Fit.chunk_id == Fit.id,
            Fit.checkpoint.is_(None),
            Fit.worker_losses == 0,
        )
        .subquery()
    )
    picked = (
        sa.select(ranked.c.id)
        .outerjoin(TenantTurn, TenantTurn.tenant == ranked.c.tenant)
        .order_by(ranked.c.turn, TenantTurn.served_at.asc().nulls_first(), ranked.c.tenant)
        .limit(room)
    )
    return (
        sa.select(Fit.id)
        .where(Fit.id.in_(picked.scalar_subquery()), Fit.status == QUEUED)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


@functools.cache
def _this_attempt(dialect: str) -> sa.ColumnElement[bool]:
    """The fits bound (their ids and attempts) still running in this attempt: the attempt is the
    fencing token, so a stale worker neither writes, renews nor gives back a newer attempt's fits.
    This and the fences below are built once per process (shared/store/built_once.py says why)."""
    if dialect == "postgresql":
        # The (id, attempt) pairs go as two arrays: a chunk's 2048 pairs written out as a tuple
        # list cost a quarter of a second to render and plan, on every block's write.
        pairs = bulk.unnested(id=sa.String, attempt=sa.Integer)
        mine = sa.tuple_(Fit.id, Fit.attempt).in_(sa.select(pairs.c.id, pairs.c.attempt))
    else:
        mine = sa.tuple_(Fit.id, Fit.attempt).in_(sa.bindparam("pairs", expanding=True))
    return sa.and_(mine, Fit.status == RUNNING)


@functools.cache
def _locking(dialect: str) -> sa.Select[str]:
    return sa.select(Fit.id).where(_this_attempt(dialect)).with_for_update()


@functools.cache
def _renewing(dialect: str, lease_seconds: float) -> sa.Update:
    return (
        sa.update(Fit)
        .where(_this_attempt(dialect))
        .values(lease_expires_at=lease_until(lease_seconds))
        .returning(Fit.id)
    )


@functools.cache
def _giving_back(dialect: str) -> sa.Update:
    return (
        sa.update(Fit)
        .where(_this_attempt(dialect))
        .values(
            status=QUEUED, lease_expires_at=None, dispatched_at=sa.bindparam("queued", type_=Fit.dispatched_at.type)
        )
        .returning(Fit.id)
    )


def _fenced(
    session: so.Session, fits: Sequence[ClaimedFit], fence: Callable[[str], sa.Executable], **values: object
) -> set[str]:
    """The ids of `fits` that `fence` (one of the statements above, by dialect) matched."""
    if not fits:
        return set()
    dialect = session.get_bind().dialect.name
    pairs: dict[str, object] = (
        {"ids": [fit.id for fit in fits], "attempts": [fit.attempt for fit in fits]}
        if dialect == "postgresql"
        else {"pairs": [(fit.id, fit.attempt) for fit in fits]}
    )
    # On the session's connection: the ORM has nothing to synchronize for them.
    return set(core(session).scalars(fence(dialect), pairs | values))


def _renew_lease(session: so.Session, settings: Settings, fits: Sequence[ClaimedFit]) -> set[str]:
    """Extend the lease of the fits still running this attempt; returns their ids."""
    return _fenced(session, fits, functools.partial(_renewing, lease_seconds=settings.lease_seconds))


def _lock_this_attempt(session: so.Session, fits: Sequence[ClaimedFit]) -> set[str]:
    """The ids of these fits still running this attempt, their rows locked until the transaction
    ends (no claim can take them between this fence and the write)."""
    return _fenced(session, fits, _locking)


def write(
    db: Database,
    settings: Settings,
    fits: Sequence[ClaimedFit],
    checkpoint: Checkpoint,
    again: bool = False,
    also: Callable[[so.Session, set[str]], None] | None = None,
) -> set[str]:
    """Write one checkpoint in one transaction; returns the ids this attempt owned (and so wrote),
    the fits it finished now included. `again`: a retry of a write whose commit may have landed
    before its connection was lost, so its blocks replace any already there. `also`: what the
    caller adds to the same transaction, given the owned ids (the chunk's counters, a look for
    webhooks due): a round trip each instead of a transaction."""
    with db.session(write=True) as session:
        # The fits this write ends are only locked (their row is written once, below, lease and
        # all); the others' leases are renewed. Renewing the ending fits' leases too made a row
        # version of each that the next statement replaced: 75 ms of a 2048-fit chunk's write.
        ending = [fit for fit in fits if fit.id in checkpoint.finished]
        going_on = [fit for fit in fits if fit.id not in checkpoint.finished]
        owned = _lock_this_attempt(session, ending) | _renew_lease(session, settings, going_on)
        updates = []
        for fit_id in owned:
            values: dict[str, object] = {"id": fit_id}
            if fit_id in checkpoint.progress:
                values["epochs_done"] = checkpoint.progress[fit_id]
            if fit_id in checkpoint.states:
                values["checkpoint"] = checkpoint.states[fit_id]
            if fit_id in checkpoint.finished:
                values.update(checkpoint.finished[fit_id], lease_expires_at=None, checkpoint=None)
            if len(values) > 1:
                updates.append(values)
        bulk.update_rows(session, Fit, updates)
        done = [fit for fit in fits if fit.id in owned and fit.id in checkpoint.finished]
        # Verdicts are made where calibrations are: reads of a batch never pair them again.
        calibrations.record_drifts(
            session,
            [fit.id for fit in done if fit.instrument and checkpoint.finished[fit.id].get("status") == SUCCEEDED],
        )
        ended.announce(
            session, [fit.id for fit in done], [fit.batch_id for fit in done], [fit.id for fit in done if fit.callback]
        )
        # The blocks last: their write adds to the tenant's stored-bytes count, one row that every
        # write of the tenant's fits updates, locked from there to the commit. Taken before the
        # fits' update, it made the workers running one tenant's batch write one at a time.
        blocks = [block for block in checkpoint.blocks if block.fit_id in owned]
        db.losses.write(session, blocks, {fit.id: fit.tenant for fit in fits}, replacing=again)
        if also is not None:
            also(session, owned)
    return owned


def renew(db: Database, settings: Settings, fits: Iterable[ClaimedFit]) -> int:
    """Extend the lease of the fits this attempt still runs (the heartbeat while the engine computes)."""
    with db.session(write=True) as session:
        return len(_renew_lease(session, settings, list(fits)))


def fail(db: Database, fits: Iterable[ClaimedFit], error_type: str, detail: str) -> None:
    """End these fits as failed, if they are still this attempt's."""
    now = utcnow()
    fits = list(fits)
    with db.session(write=True) as session:
        ended.announce(session, [fit.id for fit in fits], [fit.batch_id for fit in fits])
        for fit in fits:
            session.execute(
                sa.update(Fit)
                .where(Fit.id == fit.id, Fit.attempt == fit.attempt, Fit.status == RUNNING)
                .values(
                    status=FAILED,
                    finished_at=now,
                    lease_expires_at=None,
                    checkpoint=None,
                    error_type=error_type,
                    error_detail=detail[:2000],
                )
                .execution_options(synchronize_session=False)
            )


def give_back(db: Database, fits: Iterable[ClaimedFit]) -> set[str]:
    """Queue these fits again, if they are still this attempt's (a time slice ended, or the database
    stayed unreachable too long): with their checkpoints, they go on where they stopped. Returns
    the ids given back; the caller publishes their chunk."""
    with db.session(write=True) as session:
        return _fenced(session, list(fits), _giving_back, queued=utcnow())


def give_back_in_halves(db: Database, fits: Sequence[ClaimedFit]) -> list[str]:
    """Queue these fits again (those still this attempt's), with their checkpoints, as two new
    chunks of half of them each; returns the chunks that took any, for the caller to publish.
    For a chunk whose run raised: the fault may be one fit's, and its neighbours (another
    tenant's, coalesced) are not failed with it. Halving isolates that fit in log2(n) runs, as
    the claim does for a lost chunk; a half keeps its own chunk, so coalescing never undoes it."""
    halves: list[str] = []
    with db.session(write=True) as session:
        for part in (fits[: len(fits) // 2], fits[len(fits) // 2 :]):
            chunk = new_id()
            if _fenced(session, part, _giving_back_as, queued=utcnow(), chunk=chunk):
                halves.append(chunk)
    return halves


@functools.cache
def _giving_back_as(dialect: str) -> sa.Update:
    """_giving_back, into the chunk bound as `chunk` (not `chunk_id`: an UPDATE takes a parameter
    of a column's name as the value to SET)."""
    return _giving_back(dialect).values(chunk_id=sa.bindparam("chunk", type_=sa.String))


def others_waiting(db: Database) -> bool:
    """Whether any fit is queued (the running chunk's own are not: yielding its slice lets one run)."""
    with db.reading() as session:
        return session.scalar(sa.select(Fit.id).where(Fit.status == QUEUED).limit(1)) is not None
