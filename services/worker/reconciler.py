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

It also creates the days' partitions of the loss blocks ahead of their day (PostgreSQL), at most
once an hour per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shared.runtime.settings import Settings
from shared.store import outbox
from shared.store.db import Database
from shared.store.models import utcnow

log = logging.getLogger("calib.worker")

_PARTITIONS_EVERY_SECONDS = 3600.0
_partitions_checked = {"at": float("-inf")}


def ensure_partitions(db: Database) -> list[str]:
    """Today's partition of the loss blocks and the next week's (PostgreSQL; an hour apart at most)."""
    if time.monotonic() - _partitions_checked["at"] < _PARTITIONS_EVERY_SECONDS:
        return []
    with db.session(write=True) as session:
        made = db.losses.make_days_ahead(session, utcnow().date())
    _partitions_checked["at"] = time.monotonic()
    if made:
        log.info("created the loss blocks' partitions %s", made)
    return made


def stale_chunks(db: Database, settings: Settings, queue_empty: bool = True) -> list[str]:
    with db.session() as session:
        return outbox.stale(session, settings, queue_empty)


def reconcile(
    db: Database,
    settings: Settings,
    publish: Callable[[str], None],
    queue_depth: Callable[[], int | None] = lambda: None,
) -> int:
    """One round; `queue_depth` is the broker's count of waiting messages (None: unknown,
    taken as empty so that nothing can stay lost)."""
    ensure_partitions(db)
    chunks = stale_chunks(db, settings, queue_empty=not queue_depth())
    for chunk_id in chunks:
        publish(chunk_id)
    if chunks:
        with db.session(write=True) as session:
            outbox.mark_dispatched(session, chunks)
    return len(chunks)
