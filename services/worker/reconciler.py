"""The reconciler: the database is the truth, the broker only a wake-up call.

It publishes every chunk with fits that are
- queued and never dispatched `undispatched_after_seconds` after their commit
  (the API died between commit and publish, or the broker refused the publish);
- queued and dispatched longer than `redispatch_after_seconds` ago while the
  broker's queue is empty (a message the broker lost: a Redis restart or flush,
  a message a killed worker took from the SQLite broker). While the queue still
  holds messages, a fit waiting its turn is not lost, and re-publishing a large
  backlog would only flood the queue with copies for workers to discard;
- running with an expired lease (their worker died mid-chunk).
Duplicate messages are harmless: claims are conditional.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import sqlalchemy as sa

from shared.db import Database
from shared.dbclock import db_now
from shared.models import QUEUED, RUNNING, Fit, utcnow
from shared.settings import Settings

# Chunks re-published per round, so a huge backlog cannot flood the broker.
_MAX_PER_ROUND = 500


def stale_chunks(db: Database, settings: Settings, queue_empty: bool = True) -> list[str]:
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
    stale = [never_published, lost] + ([unclaimed] if queue_empty else [])
    with db.session() as session:
        rows = session.execute(sa.select(Fit.chunk_id).where(sa.or_(*stale)).distinct().limit(_MAX_PER_ROUND)).all()
    return [row.chunk_id for row in rows]


def reconcile(
    db: Database,
    settings: Settings,
    publish: Callable[[str], None],
    queue_depth: Callable[[], int | None] = lambda: None,
) -> int:
    """One round; `queue_depth` is the broker's count of waiting messages (None: unknown,
    taken as empty so that nothing can stay lost)."""
    chunks = stale_chunks(db, settings, queue_empty=not queue_depth())
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
