"""Loss blocks: how a fit's losses are stored, written and read, in one place. A block is one
row of consecutive epochs' losses of one fit, packed as little-endian float32 (the one dtype
of stored losses: a training loss per epoch, and a validation loss per epoch with a split),
compressed where that is shorter (shared/domain/packing.py). The worker encodes and inserts
blocks; a retry or a restart deletes them; the API reads ranges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import psycopg
import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.domain.packing import pack_f32_compact, unpack_f32_block
from shared.store import quotas
from shared.store.models import Fit, LossBlock

# Bytes a block takes, as the database counts them (the stored-bytes quota counts exactly this).
STORED_BYTES = sa.func.length(LossBlock.loss) + sa.func.coalesce(sa.func.length(LossBlock.val_loss), 0)


@dataclass(frozen=True)
class Block:
    fit_id: str
    first_epoch: int
    count: int
    loss: bytes
    val_loss: bytes | None

    @property
    def stored_bytes(self) -> int:
        return len(self.loss) + (len(self.val_loss) if self.val_loss is not None else 0)


def encode(fit_id: str, first_epoch: int, loss: np.ndarray, val_loss: np.ndarray | None = None) -> Block:
    """The losses of epochs first_epoch.. of one fit (and its validation losses), as a block."""
    return Block(
        fit_id,
        first_epoch,
        len(loss),
        pack_f32_compact(loss),
        None if val_loss is None else pack_f32_compact(val_loss),
    )


def insert(session: so.Session, blocks: Sequence[Block], tenant_of: Mapping[str, str]) -> None:
    """Insert in the caller's transaction (PostgreSQL by COPY, SQLite by one executemany), and add
    the bytes to each tenant's stored count (`tenant_of`: fit id → tenant) in the same transaction."""
    if not blocks:
        return
    if session.get_bind().dialect.name == "postgresql":
        _copy(session, blocks)
    else:
        session.execute(sa.insert(LossBlock), [asdict(block) for block in blocks])
    written: dict[str, int] = {}
    for block in blocks:
        tenant = tenant_of[block.fit_id]
        written[tenant] = written.get(tenant, 0) + block.stored_bytes
    quotas.add_stored_bytes(session, written)


_COPY = "COPY loss_blocks (fit_id, first_epoch, count, loss, val_loss) FROM STDIN (FORMAT BINARY)"


def _copy(session: so.Session, blocks: Sequence[Block]) -> None:
    # Binary COPY is PostgreSQL's bulk path: rows stream in one command, bytea as raw bytes
    # (no hex escaping), where executemany sends a statement per row.
    dbapi = session.connection().connection.dbapi_connection
    assert isinstance(dbapi, psycopg.Connection), "calib's PostgreSQL driver is psycopg 3"
    with dbapi.cursor() as cursor, cursor.copy(_COPY) as copy:
        copy.set_types(["varchar", "int4", "int4", "bytea", "bytea"])
        for block in blocks:
            copy.write_row((block.fit_id, block.first_epoch, block.count, block.loss, block.val_loss))


def bytes_by_tenant(session: so.Session, where: sa.ColumnElement[bool]) -> dict[str, int]:
    """The loss bytes each tenant holds in the blocks matching `where` (what deleting them frees)."""
    rows = session.execute(
        sa.select(Fit.tenant, sa.func.coalesce(sa.func.sum(STORED_BYTES), 0))
        .join(Fit, Fit.id == LossBlock.fit_id)
        .where(where)
        .group_by(Fit.tenant)
    ).all()
    return {tenant: int(total) for tenant, total in rows}


def delete(session: so.Session, where: sa.ColumnElement[bool]) -> dict[str, int]:
    """Delete the blocks matching `where`, and take their bytes off each tenant's stored count in
    the same transaction; returns the bytes freed per tenant."""
    freed = bytes_by_tenant(session, where)
    if freed:
        session.execute(sa.delete(LossBlock).where(where))
        quotas.add_stored_bytes(session, {tenant: -size for tenant, size in freed.items()})
    return freed


def delete_for(session: so.Session, fit_ids: Sequence[str]) -> dict[str, int]:
    """Delete every block of these fits; returns the bytes freed per tenant."""
    return delete(session, LossBlock.fit_id.in_(fit_ids))


def at(keys: Sequence[tuple[str, int]]) -> sa.ColumnElement[bool]:
    """The blocks starting at these (fit_id, first_epoch)."""
    return sa.tuple_(LossBlock.fit_id, LossBlock.first_epoch).in_(keys)


@dataclass(frozen=True)
class Curves:
    """Consecutive epochs' training losses and, for a fit with a validation split, validation losses."""

    loss: np.ndarray
    val_loss: np.ndarray | None

    def __len__(self) -> int:
        return len(self.loss)


def read_range(session: so.Session, fit_id: str, start: int, stop: int, with_val: bool = False) -> Curves:
    """Epochs start..stop-1 (as many as are recorded), one indexed range scan."""
    empty = np.empty(0, dtype=np.float32)
    if stop <= start:
        return Curves(empty, empty if with_val else None)
    columns = [LossBlock.first_epoch, LossBlock.count, LossBlock.loss]
    rows = session.execute(
        sa.select(*columns, LossBlock.val_loss if with_val else sa.null())
        .where(
            LossBlock.fit_id == fit_id,
            LossBlock.first_epoch < stop,
            LossBlock.first_epoch + LossBlock.count > start,
        )
        .order_by(LossBlock.first_epoch)
    ).all()
    losses, vals = [], []
    for first, count, blob, val_blob in cast("list[tuple[int, int, bytes, bytes | None]]", rows):
        lo, hi = max(start, first) - first, min(stop, first + count) - first
        losses.append(unpack_f32_block(blob, count)[lo:hi])
        if with_val:
            vals.append(
                unpack_f32_block(val_blob, count)[lo:hi]
                if val_blob is not None
                else np.full(hi - lo, np.nan, dtype=np.float32)
            )
    return Curves(
        np.concatenate(losses) if losses else empty, (np.concatenate(vals) if vals else empty) if with_val else None
    )
