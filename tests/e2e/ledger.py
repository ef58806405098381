"""Checks against the database, the truth: every accepted id is there, terminal, and ran once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from shared.store.db import Database
from shared.store.models import Fit, LossBlock
from tests.backends import settings_of

TERMINAL = {"succeeded", "diverged", "failed", "cancelled"}
T = TypeVar("T")


def database(env: dict[str, str]) -> Database:
    return Database.from_settings(settings_of(env))


@dataclass
class Audit:
    lost: list[str] = field(default_factory=list)  # accepted, not in the database
    not_terminal: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)  # losses not one series 1..epochs_done
    statuses: dict[str, int] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.not_terminal or self.duplicated)


def audit(db: Database, accepted: Iterable[str]) -> Audit:
    ids = list(dict.fromkeys(accepted))
    out = Audit()
    with db.session() as session:
        if db.engine.dialect.name == "postgresql":
            # One snapshot for both reads, or a worker's progress between them looks like a defect.
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        fits = {f.id: f for f in session.scalars(sa.select(Fit).where(Fit.id.in_(ids)))}
        blocks: dict[str, list[tuple[int, int]]] = {}
        for fit_id, first, count in session.execute(
            sa.select(LossBlock.fit_id, LossBlock.first_epoch, LossBlock.count)
            .where(LossBlock.fit_id.in_(ids))
            .order_by(LossBlock.fit_id, LossBlock.first_epoch)
        ):
            blocks.setdefault(fit_id, []).append((first, count))
    for fit_id in ids:
        fit = fits.get(fit_id)
        if fit is None:
            out.lost.append(fit_id)
            continue
        out.statuses[fit.status] = out.statuses.get(fit.status, 0) + 1
        out.attempts[fit.attempt] = out.attempts.get(fit.attempt, 0) + 1
        if fit.status not in TERMINAL:
            out.not_terminal.append(fit_id)
        # One run's losses tile epochs 1..epochs_done exactly once; a second run
        # appended, or a stale attempt's write, breaks the tiling.
        expected = 1
        for first, count in blocks.get(fit_id, []):
            if first != expected:
                break
            expected = first + count
        if expected != fit.epochs_done + 1:
            out.duplicated.append(fit_id)
    return out


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout} s")


def all_terminal(db: Database, ids: list[str]) -> Callable[[], bool]:
    def probe() -> bool:
        with db.session() as session:
            left = session.scalar(
                sa.select(sa.func.count()).select_from(Fit).where(Fit.id.in_(ids), Fit.status.not_in(TERMINAL))
            )
        return left == 0

    return probe


def fits_by_id(db: Database, ids: list[str]) -> dict[str, Any]:
    with db.session() as session:
        return {f.id: f for f in session.scalars(sa.select(Fit).where(Fit.id.in_(ids)))}
