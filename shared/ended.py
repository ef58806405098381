"""Saying that fits and batches ended, for the API's requests waiting on them (`?wait=`).

On PostgreSQL the announcement is a NOTIFY inside the transaction that ends the fits: it is
delivered when, and only if, that transaction commits, so a waiter never hears of an end it
cannot read yet and never misses one that was committed. The embedded default (SQLite) has
no notifications: its waiters read the database every few tenths of a second instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

CHANNEL = "calib_ended"
# What a notification says when it names too many ids to list: every waiter looks again.
EVERYONE = "*"
# PostgreSQL refuses payloads of 8000 bytes or more; ids are 36 characters and a prefix.
_IDS_PER_NOTICE = 150
# Past this many, one EVERYONE is cheaper than the notices (a chunk of a batch ends thousands).
_MOST_IDS = 600


def announce(session: so.Session, fits: Iterable[str] = (), batches: Iterable[str | None] = ()) -> None:
    """Tell the waiters (after this transaction commits) that these fits and batches changed."""
    if session.get_bind().dialect.name != "postgresql":
        return
    names = [f"f:{fit}" for fit in fits] + sorted({f"b:{batch}" for batch in batches if batch})
    if not names:
        return
    fit_names = [name for name in names if name.startswith("f:")]
    if len(fit_names) > _MOST_IDS:
        # The fits' waiters all look again; a batch's waiters are told by name (few, and cheap).
        names = [EVERYONE] + [name for name in names if name.startswith("b:")]
    for start in range(0, len(names), _IDS_PER_NOTICE):
        payload = ",".join(names[start : start + _IDS_PER_NOTICE])
        session.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


def names_in(payload: str) -> list[str]:
    """The keys a notification names (`f:<fit id>`, `b:<batch id>`, or EVERYONE)."""
    return [name for name in payload.split(",") if name]
