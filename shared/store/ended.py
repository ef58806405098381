"""Saying that fits and batches ended: to the API's requests waiting on them (`?wait=`), and to
their webhooks.

On PostgreSQL the announcement is a NOTIFY inside the transaction that ends the fits: it is
delivered when, and only if, that transaction commits, so a waiter never hears of an end it
cannot read yet and never misses one that was committed. The embedded default (SQLite) has
no notifications: its waiters read the database every few tenths of a second instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.store import deliveries as webhooks

CHANNEL = "calib_ended"
# What a notification says when it names too many ids to list: every waiter looks again.
EVERYONE = "*"
# PostgreSQL refuses payloads of 8000 bytes or more; ids are 36 characters and a prefix.
_IDS_PER_NOTICE = 150
# Past this many, one EVERYONE is cheaper than the notices (a chunk of a batch ends thousands).
_MOST_IDS = 600


def fit_key(fit_id: str) -> str:
    """The name a notification gives a fit, and a waiter waits on."""
    return f"f:{fit_id}"


def batch_key(batch_id: str) -> str:
    return f"b:{batch_id}"


def announce(session: so.Session, fits: Iterable[str] = (), batches: Iterable[str | None] = ()) -> None:
    """Tell the waiters (after this transaction commits) that these fits and batches changed, and
    owe the webhooks of those that ended (shared/store/deliveries.py), in the same transaction."""
    fits, batches = list(fits), list(batches)
    webhooks.enqueue(session, fits, batches)
    if session.get_bind().dialect.name != "postgresql":
        return
    fit_names = [fit_key(fit) for fit in fits]
    # Past _MOST_IDS fits, every fit's waiter looks again; a batch's waiters are told by name
    # (few, and cheap).
    names = ([EVERYONE] if len(fit_names) > _MOST_IDS else fit_names) + sorted(
        {batch_key(batch) for batch in batches if batch}
    )
    for start in range(0, len(names), _IDS_PER_NOTICE):
        payload = ",".join(names[start : start + _IDS_PER_NOTICE])
        session.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


def names_in(payload: str) -> list[str]:
    """The keys a notification names (`f:<fit id>`, `b:<batch id>`, or EVERYONE)."""
    return [name for name in payload.split(",") if name]
