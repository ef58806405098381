"""The reconciler: the database is the truth, the broker only a wake-up call.

It publishes again every chunk that has fits queued longer than
`redispatch_after_seconds` since they were created or last dispatched (a
publish that failed after the commit, a message lost by the broker), and every
chunk with a fit whose lease expired (a worker killed mid-chunk). Duplicate
messages are harmless: claims are conditional.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from shared.db import Database
from shared.models import QUEUED, RUNNING, Fit, utcnow
from shared.settings import Settings

# Chunks re-published per round, so a huge backlog cannot flood the broker.
_MAX_PER_ROUND = 500


def stale_chunks(db: Database, settings: Settings) -> list[str]:
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.redispatch_after_seconds)
    waiting = sa.and_(
        Fit.status == QUEUED,
        sa.func.coalesce(Fit.dispatched_at, Fit.created_at) < stale,
    )
    lost = sa.and_(Fit.status == RUNNING, Fit.lease_expires_at < now)
    with db.session() as session:
        rows = session.execute(
            sa.select(Fit.chunk_id).where(sa.or_(waiting, lost)).distinct().limit(_MAX_PER_ROUND)
        ).all()
    return [row.chunk_id for row in rows]


def reconcile(db: Database, settings: Settings, publish: Callable[[str], None]) -> int:
    chunks = stale_chunks(db, settings)
    for chunk_id in chunks:
        publish(chunk_id)
    if chunks:
        with db.session(write=True) as session:
            session.execute(
                sa.update(Fit)
                .where(Fit.chunk_id.in_(chunks), Fit.status == QUEUED)
                .values(dispatched_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    return len(chunks)
