"""Cancelling fits: one conditional UPDATE for a fit's cancel and a batch's."""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.store import ended
from shared.store.models import ACTIVE, CANCELLED, Fit, utcnow


def cancel_active(session: so.Session, *where: sa.ColumnElement[bool]) -> int:
    """Cancel the queued or running fits matching `where`; how many changed.

    Conditional on the status, so it cannot race a worker finishing a fit; a running fit's
    worker sees the status at its next checkpoint and drops its work."""
    changed = session.execute(
        sa.update(Fit)
        .where(*where, Fit.status.in_(ACTIVE))
        .values(status=CANCELLED, finished_at=utcnow(), lease_expires_at=None)
        .returning(Fit.id, Fit.batch_id)
        .execution_options(synchronize_session=False)
    ).all()
    ended.announce(session, [row.id for row in changed], [row.batch_id for row in changed])
    return len(changed)
