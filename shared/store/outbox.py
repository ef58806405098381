"""The outbox: a fit's row is the truth and a broker message only wakes a worker. The API
commits fits stamped as published and publishes after the commit, clearing the stamp of a
publish that failed; the reconciler finds the fits whose message never went out, or was lost,
and publishes them again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.runtime.settings import Settings
from shared.store.dbclock import db_now
from shared.store.models import QUEUED, RUNNING, Fit, utcnow

# Chunks re-published per round, so a huge backlog cannot flood the broker.
MAX_PER_ROUND = 500


def mark_dispatched(session: so.Session, chunk_ids: Sequence[str]) -> None:
    """Stamp the queued fits of these chunks as published now (the reconciler, after publishing)."""
    session.execute(
        sa.update(Fit)
        .where(Fit.chunk_id.in_(chunk_ids), Fit.status == QUEUED)
        .values(dispatched_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def mark_unpublished(session: so.Session, chunk_ids: Sequence[str]) -> None:
    """Clear the stamp of chunks whose publish failed: the reconciler publishes them next."""
    session.execute(
        sa.update(Fit)
        .where(Fit.chunk_id.in_(chunk_ids), Fit.status == QUEUED)
        .values(dispatched_at=None)
        .execution_options(synchronize_session=False)
    )


def stale(session: so.Session, settings: Settings, queue_empty: bool = True) -> list[str]:
    """Chunks to publish again: fits queued and never published `undispatched_after_seconds`
    after their commit; queued and published longer than `redispatch_after_seconds` ago while
    the broker's queue is empty (a message the broker lost); running with an expired lease."""
    now = utcnow()
    never_published = sa.and_(
        Fit.status == QUEUED,
        Fit.dispatched_at.is_(None),
        Fit.created_at < now - dt.timedelta(seconds=settings.undispatched_after_seconds),
    )
    unclaimed = sa.and_(
        Fit.status == QUEUED,
        Fit.dispatched_at < now - dt.timedelta(seconds=settings.redispatch_after_seconds),
    )
    lost = sa.and_(Fit.status == RUNNING, Fit.lease_expires_at < db_now())  # the database's clock, as leases
    conditions = [never_published, lost] + ([unclaimed] if queue_empty else [])
    rows = session.execute(sa.select(Fit.chunk_id).where(sa.or_(*conditions)).distinct().limit(MAX_PER_ROUND)).all()
    return [row.chunk_id for row in rows]
