"""Loss blocks by day on PostgreSQL: `loss_blocks` is partitioned by `written_on` (the UTC day the
block was written), so retention drops a whole day's partition instead of deleting its rows
(no dead tuples in TOAST, no vacuum, no WAL per row). A fleet writing ~8 GB of losses a night
(compressed; ~20 GB as plain float32) keeps them as one table a day.

- Partitions `loss_blocks_pYYYYMMDD` are created ahead by the reconciler (`ensure_ahead`), and by
  migration 0020 for its first week; a `loss_blocks_default` partition takes any block written on a
  day that has none yet (a reconciler that did not run for a week), so a write never fails for it.
- A partition whose day ended before the retention cutoff is dropped once every fit with a block in
  it ended before the cutoff (`drop_expired`): those fits are marked `losses_pruned` and their
  tenants' stored bytes lowered, in the transaction that detaches and drops it. A partition that
  still holds a block of a fit running or ended later waits for a later round.

SQLite keeps one table; retention deletes rows there (shared/store/retention.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.store import loss_blocks, quotas
from shared.store.models import TERMINAL, Fit, LossBlock

log = logging.getLogger("calib.store")

PARENT = "loss_blocks"
DEFAULT = "loss_blocks_default"
# Partitions made ahead of today: a week of reconciler outages costs nothing.
DAYS_AHEAD = 7
_DAY = re.compile(r"^loss_blocks_p(\d{8})$")
# The table of blocks written before partitioning (migration 0020): every day up to its own end.
_BEFORE = re.compile(r"^loss_blocks_before_(\d{8})$")


def is_partition_name(name: str) -> bool:
    """A table that is one of loss_blocks' partitions (the models know the parent only)."""
    return name == DEFAULT or bool(_DAY.match(name) or _BEFORE.match(name))


def partition_name(day: dt.date) -> str:
    return f"loss_blocks_p{day:%Y%m%d}"


def is_partitioned(session: so.Session) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return False
    kind = session.scalar(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:name)"), {"name": PARENT})
    return bool(kind == "p")


def partitions(session: so.Session) -> dict[str, tuple[dt.date | None, dt.date]]:
    """Each dated partition's days: its first (None: every day before) and the day after its last."""
    names = session.scalars(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(:p)"
        ),
        {"p": PARENT},
    ).all()
    ends: dict[str, tuple[dt.date | None, dt.date]] = {}
    for name in names:
        if found := _DAY.match(name):
            day = dt.datetime.strptime(found.group(1), "%Y%m%d").date()
            ends[name] = (day, day + dt.timedelta(days=1))
        elif found := _BEFORE.match(name):
            ends[name] = (None, dt.datetime.strptime(found.group(1), "%Y%m%d").date())
    return ends


def create_day(session: so.Session, day: dt.date) -> bool:
    """The partition of `day`, unless it exists; False if the default partition already holds blocks
    of that day (they stay there until retention drops them by rows)."""
    name = partition_name(day)
    if session.scalar(sa.text("SELECT to_regclass(:name)"), {"name": name}) is not None:
        return False
    try:
        with session.begin_nested():
            session.execute(
                sa.text(
                    f"CREATE TABLE {name} PARTITION OF {PARENT} "
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + dt.timedelta(days=1)).isoformat()}')"
                )
            )
            # Packed float32 losses do not compress: skip TOAST's compression attempt (as the parent).
            session.execute(sa.text(f"ALTER TABLE {name} ALTER COLUMN loss SET STORAGE EXTERNAL"))
    except sa.exc.DBAPIError as exc:
        log.warning("partition %s not created (the default partition holds its day's blocks): %s", name, exc)
        return False
    return True


def ensure_ahead(session: so.Session, today: dt.date, days: int = DAYS_AHEAD) -> list[str]:
    """Partitions for today and the `days` after it; the names created now."""
    if not is_partitioned(session):
        return []
    made = []
    for offset in range(days + 1):
        day = today + dt.timedelta(days=offset)
        if create_day(session, day):
            made.append(partition_name(day))
    return made


@dataclass(frozen=True)
class Dropped:
    partitions: list[str]
    fits: int
    bytes: int


def drop_expired(session: so.Session, cutoff: dt.datetime) -> Dropped:
    """Detach and drop every partition whose day ended by `cutoff` and whose fits all ended before it."""
    if not is_partitioned(session):
        return Dropped([], 0, 0)
    dropped, fits, freed_total = [], 0, 0
    for name, (start, end) in sorted(partitions(session).items(), key=lambda item: item[1][1]):
        if dt.datetime.combine(end, dt.time(), dt.UTC) > cutoff:
            continue
        # The partition's rows, read through the parent (PostgreSQL prunes to that partition).
        in_it = sa.and_(LossBlock.written_on < end, sa.true() if start is None else LossBlock.written_on >= start)
        still_kept = sa.not_(sa.and_(Fit.status.in_(TERMINAL), Fit.finished_at < cutoff))
        blocks_of_kept = sa.select(LossBlock.fit_id).join(Fit, Fit.id == LossBlock.fit_id).where(in_it, still_kept)
        if session.scalar(sa.select(sa.exists(blocks_of_kept))):
            log.info("partition %s kept: a fit with blocks in it ran or ended after the cutoff", name)
            continue
        freed = loss_blocks.bytes_by_tenant(session, in_it)
        marked = session.execute(
            sa.update(Fit)
            .where(Fit.id.in_(sa.select(LossBlock.fit_id).where(in_it).distinct()))
            .values(losses_pruned=True)
            .execution_options(synchronize_session=False)
        )
        pruned = int(getattr(marked, "rowcount", 0))
        session.execute(sa.text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
        session.execute(sa.text(f"DROP TABLE {name}"))
        quotas.add_stored_bytes(session, {tenant: -size for tenant, size in freed.items()})
        dropped.append(name)
        fits += pruned
        freed_total += sum(freed.values())
    return Dropped(dropped, fits, freed_total)
