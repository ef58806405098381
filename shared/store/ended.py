"""Saying that fits and batches ended: to the API's requests waiting on them (`?wait=`), and to
their webhooks.

`announce` owes the webhooks in the caller's transaction, and leaves the names of what changed on
the session; the session tells them after it commits (Database.session), through the wake-up
channel of the configuration (shared/runtime/wakeups.py: Redis pub/sub, or a NOTIFY of its own),
never inside the transaction that wrote the fits. A waiter never hears of an end it cannot read
yet; one that misses a notice (lost in a crash between commit and publish) reads again within
seconds. The embedded default has no notifications: its waiters read every few tenths of a second.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy.orm as so

from shared.store import deliveries as webhooks
from shared.store.db import ENDED_NAMES

# What a notification says when it names too many ids to list: every waiter looks again.
EVERYONE = "*"
# Past this many, one EVERYONE is cheaper than the notices (a chunk of a batch ends thousands).
_MOST_IDS = 600


def fit_key(fit_id: str) -> str:
    """The name a notification gives a fit, and a waiter waits on."""
    return f"f:{fit_id}"


def batch_key(batch_id: str) -> str:
    return f"b:{batch_id}"


def announce(
    session: so.Session,
    fits: Iterable[str] = (),
    batches: Iterable[str | None] = (),
    owing: Iterable[str] | None = None,
) -> None:
    """Tell the waiters (after this transaction commits) that these fits and batches changed, and
    owe the webhooks of those that ended (shared/store/deliveries.py), in the same transaction.
    `owing`: the fits among them that have a callback, where the caller knows (else all are asked)."""
    fits, batches = list(fits), list(batches)
    webhooks.enqueue(session, fits if owing is None else list(owing), batches)
    fit_names = [fit_key(fit) for fit in fits]
    # Past _MOST_IDS fits, every fit's waiter looks again; a batch's waiters are told by name
    # (few, and cheap).
    names = ([EVERYONE] if len(fit_names) > _MOST_IDS else fit_names) + sorted(
        {batch_key(batch) for batch in batches if batch}
    )
    session.info.setdefault(ENDED_NAMES, []).extend(names)


def names_in(payload: str) -> list[str]:
    """The keys a notification names (`f:<fit id>`, `b:<batch id>`, or EVERYONE)."""
    return [name for name in payload.split(",") if name]
