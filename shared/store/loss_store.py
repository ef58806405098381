"""Where fits' per-epoch losses are kept: one `LossStore`, chosen by the scheme of
CALIB_LOSS_STORE_URL, behind which the worker writes blocks, the API reads ranges and retention
deletes them. Nothing else touches the blocks' storage (tests/test_layers.py holds to that).

Today's one store is `database:` (the default): blocks are rows of `loss_blocks` beside the fits,
written in the same transaction as the fit's progress and its tenant's stored-bytes count, and on
PostgreSQL partitioned by day so that retention drops whole days. A store outside the database
(objects in a bucket, say) implements the same methods; each runs in the caller's transaction, so
such a store writes blocks idempotently under (fit, first epoch) before that transaction commits
and deletes them only after it has: a write whose commit is lost then leaves blocks a retry
overwrites, never a fit whose blocks are gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy.orm as so

from shared.store import loss_blocks, loss_partitions
from shared.store.loss_blocks import Block, Curves

DEFAULT_URL = "database:"


@dataclass(frozen=True)
class DaysDropped:
    """What dropping whole days of blocks freed; `by_day`: whether this store keeps blocks by day
    at all (if not, retention deletes fit by fit, with no day of grace)."""

    fits: int
    bytes: int
    by_day: bool


class LossStore(Protocol):
    def write(
        self, session: so.Session, blocks: Sequence[Block], tenant_of: Mapping[str, str], replacing: bool = False
    ) -> None:
        """Store these blocks and add their bytes to each tenant's count (`tenant_of`: fit id →
        tenant). `replacing`: blocks already stored at the same (fit, first epoch) are replaced
        (a retried write whose first commit may have landed)."""
        ...

    def delete_for(self, session: so.Session, fit_ids: Sequence[str]) -> dict[str, int]:
        """Delete every block of these fits; the bytes freed per tenant (taken off their counts)."""
        ...

    def read_range(self, session: so.Session, fit_id: str, start: int, stop: int, with_val: bool = False) -> Curves:
        """Epochs start..stop-1 of one fit, as many as are stored."""
        ...

    def make_days_ahead(self, session: so.Session, today: dt.date) -> list[str]:
        """Get the storage of today and the days ahead ready (the reconciler, hourly); what was made."""
        ...

    def drop_days_before(self, session: so.Session, cutoff: dt.datetime) -> DaysDropped:
        """Drop whole days of blocks written by `cutoff` whose fits all ended before it."""
        ...


class InDatabase:
    """Blocks as rows of `loss_blocks` in the fits' own database (shared/store/loss_blocks.py),
    partitioned by day on PostgreSQL (shared/store/loss_partitions.py)."""

    def write(
        self, session: so.Session, blocks: Sequence[Block], tenant_of: Mapping[str, str], replacing: bool = False
    ) -> None:
        if blocks and replacing:
            loss_blocks.delete(session, loss_blocks.at([(block.fit_id, block.first_epoch) for block in blocks]))
        loss_blocks.insert(session, blocks, tenant_of)

    def delete_for(self, session: so.Session, fit_ids: Sequence[str]) -> dict[str, int]:
        return loss_blocks.delete_for(session, fit_ids)

    def read_range(self, session: so.Session, fit_id: str, start: int, stop: int, with_val: bool = False) -> Curves:
        return loss_blocks.read_range(session, fit_id, start, stop, with_val)

    def make_days_ahead(self, session: so.Session, today: dt.date) -> list[str]:
        return loss_partitions.ensure_ahead(session, today)

    def drop_days_before(self, session: so.Session, cutoff: dt.datetime) -> DaysDropped:
        dropped = loss_partitions.drop_expired(session, cutoff)
        return DaysDropped(dropped.fits, dropped.bytes, loss_partitions.is_partitioned(session))


# The stores by URL scheme: a new one is a class above and a line here.
_BY_SCHEME: dict[str, Callable[[], LossStore]] = {"database": InDatabase}


def loss_store_for(url: str) -> LossStore:
    """The store CALIB_LOSS_STORE_URL names (empty: the default, `database:`)."""
    scheme = (url or DEFAULT_URL).partition(":")[0].lower()
    if scheme not in _BY_SCHEME:
        known = ", ".join(f"{name}:" for name in sorted(_BY_SCHEME))
        raise ValueError(f"CALIB_LOSS_STORE_URL={url!r}: no loss store for {scheme!r}; calib knows {known}")
    return _BY_SCHEME[scheme]()
