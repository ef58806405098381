"""Fair share between tenants: which chunk a wake-up message should run.

Messages are FIFO, so a tenant with 10,000 fits queued would make another
tenant's single fit wait behind all of them. Instead, a message is a token for
"run one chunk", and tenants take turns: the worker that takes a message for
tenant A's chunk looks for other tenants with queued fits, and if one of them
was served less recently than A (tenant_turns), it publishes A's message again
(to the back of the queue) and runs that tenant's oldest queued chunk. Tokens
are conserved: A's chunk keeps a message, and the other chunk's own message,
when it comes, finds nothing to claim.

With a single tenant waiting (the common case) this costs one statement of two index probes.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.store.built_once import core
from shared.store.bulk import upsert_insert_of
from shared.store.db import Database
from shared.store.models import QUEUED, Fit, TenantTurn, utcnow

_NEVER = dt.datetime.min.replace(tzinfo=dt.UTC)


def fairer_chunk(db: Database, chunk_id: str) -> str | None:
    """Another tenant's chunk to run instead of `chunk_id`, or None to run `chunk_id`. Its reads
    need no transaction (each sees what is committed when it runs, as it would inside one at READ
    COMMITTED): on PostgreSQL that spares a BEGIN and a COMMIT, two round trips, per wake-up."""
    with db.reading() as session:
        mine = core(session).execute(_QUEUED_TENANT_AND_RIVALS, {"chunk": chunk_id}).first()
        # Nothing queued there (done, or a lease to reclaim), or no other tenant waits: no swap.
        if mine is None or (mine.below is None and mine.above is None):
            return None
        tenant = mine.tenant
        # Two index ranges around `tenant` rather than `<>`, so a large backlog of its own queued
        # fits is never scanned.
        others = session.scalars(
            sa.select(Fit.tenant)
            .where(Fit.status == QUEUED, sa.or_(Fit.tenant < tenant, Fit.tenant > tenant))
            .group_by(Fit.tenant)
        ).all()
        if not others:
            return None
        served = dict(
            session.execute(
                sa.select(TenantTurn.tenant, TenantTurn.served_at).where(TenantTurn.tenant.in_([tenant, *others]))
            ).all()
        )
        turn = min([tenant, *others], key=lambda name: (served.get(name, _NEVER), name))
        if turn == tenant:
            return None
        found: str | None = session.scalar(
            sa.select(Fit.chunk_id)
            .where(Fit.tenant == turn, Fit.status == QUEUED)
            .order_by(Fit.created_at, Fit.id)
            .limit(1)
        )
        return found


def next_chunk(db: Database, passed: frozenset[str] = frozenset()) -> str | None:
    """The chunk a worker that drains the queue runs next: the oldest queued chunk of the tenant
    served least recently (never served first), or None when no fit is queued. `passed`: chunks
    this drain already found taken by another worker (their fits still read queued to it).
    One statement, outside a transaction (two round trips fewer on PostgreSQL)."""
    with db.reading() as session:
        found: str | None = core(session).scalar(_FAIREST, {"passed": sorted(passed)})
        return found


# Every wake-up asks these, so they are built once (shared/store/built_once.py says why).
# The tenant of a chunk's queued fits (bound: "chunk"), and the nearest other tenant below and above
# it with fits queued: one round trip for a wake-up with a single tenant waiting (the common case).
# Each neighbour is the first entry of an index range on (status, tenant), so neither a backlog of
# the tenant's own queued fits nor any tenant's ended fits is scanned (an EXISTS over `tenant <
# mine OR tenant > mine` was planned as a scan of every fit: 1.4 ms a wake-up with 10,000 queued).
_MINE = sa.select(Fit.tenant).where(Fit.chunk_id == sa.bindparam("chunk"), Fit.status == QUEUED).limit(1).subquery()
_RIVAL = so.aliased(Fit)


def _neighbour(side: sa.ColumnElement[bool], order: sa.UnaryExpression[str]) -> sa.ScalarSelect[str]:
    return sa.select(_RIVAL.tenant).where(_RIVAL.status == QUEUED, side).order_by(order).limit(1).scalar_subquery()


_QUEUED_TENANT_AND_RIVALS = sa.select(
    _MINE.c.tenant,
    _neighbour(_RIVAL.tenant < _MINE.c.tenant, _RIVAL.tenant.desc()).label("below"),
    _neighbour(_RIVAL.tenant > _MINE.c.tenant, _RIVAL.tenant.asc()).label("above"),
)
# The oldest queued chunk of the tenant served least recently, in one statement (a worker asks
# after every chunk, and each statement is a round trip), past the chunks bound as "passed". It
# reads every queued fit's tenant, as a GROUP BY of them would.
_FAIREST = (
    sa.select(Fit.chunk_id)
    .outerjoin(TenantTurn, TenantTurn.tenant == Fit.tenant)
    .where(Fit.status == QUEUED, Fit.chunk_id.not_in(sa.bindparam("passed", expanding=True)))
    .order_by(TenantTurn.served_at.asc().nulls_first(), Fit.tenant, Fit.created_at, Fit.id)
    .limit(1)
)


def record_turns(session: so.Session, tenants: Iterable[str]) -> None:
    """Upsert these tenants' last turn, inside the claim's transaction: one statement for all,
    in one order (sorted), so two claims lock the rows alike (no deadlock)."""
    now = utcnow()
    core(session).execute(
        _turning(session.get_bind().dialect.name),
        [{"tenant": tenant, "served_at": now} for tenant in sorted(set(tenants))],
    )


@functools.cache
def _turning(dialect: str) -> sa.Executable:
    """Every claim runs it: built once per process (shared/store/built_once.py says why), the tenants as
    the rows of one executemany."""
    insert = upsert_insert_of(dialect)(TenantTurn)
    return insert.on_conflict_do_update(index_elements=["tenant"], set_={"served_at": insert.excluded.served_at})
