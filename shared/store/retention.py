"""Retention: the losses of fits finished long ago are deleted; the fits keep their results.

A pruned fit says so (`losses_pruned`), its losses routes answer 410 Gone, and its
tenant's stored loss bytes drop by what was deleted, in the same transaction.

Whole days of blocks go first where the loss store keeps them by day (shared/store/loss_store.py;
on PostgreSQL, partitions detached and dropped, no row deleted); what is left is deleted fit by
fit. The reconciler's rounds leave a day of grace to the partitions (`by_partition`): a fit that
ended before the cutoff is deleted row by row only a day later, when its partition could not be
dropped (it held a fit that ran longer).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa

from shared.store.db import Database
from shared.store.models import TERMINAL, Fit, utcnow

# Fits pruned per transaction: a long prune never holds the write lock for long.
_PER_TRANSACTION = 500
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> dt.timedelta:
    """'30d', '12h', '2w', '90m', '45s' as a timedelta."""
    found = _AGE.match(text)
    if not found:
        raise ValueError(f"{text!r}: write an age as a number and a unit, e.g. 30d, 12h, 2w")
    return dt.timedelta(seconds=float(found.group(1)) * _UNIT_SECONDS[found.group(2)])


@dataclass(frozen=True)
class Pruned:
    fits: int
    bytes: int


def prune(db: Database, older_than: dt.timedelta, limit: int | None = None, by_partition: bool = False) -> Pruned:
    """Delete the losses of fits that finished more than `older_than` ago (past the whole partitions
    dropped, at most `limit` fits row by row; with `by_partition`, only those a day older)."""
    cutoff = utcnow() - older_than
    with db.session(write=True) as session:
        dropped = db.losses.drop_days_before(session, cutoff)
    if by_partition and dropped.by_day:
        cutoff -= dt.timedelta(days=1)
    fits, freed_total = dropped.fits, dropped.bytes
    limit = None if limit is None else limit + dropped.fits
    while limit is None or fits < limit:
        take = _PER_TRANSACTION if limit is None else min(_PER_TRANSACTION, limit - fits)
        with db.session(write=True) as session:
            ids = list(
                session.scalars(
                    sa.select(Fit.id)
                    .where(Fit.status.in_(TERMINAL), Fit.finished_at < cutoff, Fit.losses_pruned.is_(False))
                    .limit(take)
                )
            )
            if not ids:
                break
            freed = db.losses.delete_for(session, ids)
            session.execute(
                sa.update(Fit)
                .where(Fit.id.in_(ids))
                .values(losses_pruned=True)
                .execution_options(synchronize_session=False)
            )
        fits += len(ids)
        freed_total += sum(freed.values())
    return Pruned(fits, freed_total)
