"""What a tenant may hold: its work in flight, the loss bytes it stores, and what one request may ask.

The stored loss bytes are a running count per tenant (shared.store.models.Tenant): the worker
adds the bytes it writes and subtracts those a retry deletes, retention subtracts what it
prunes, each in the transaction that changes the blocks, so the count is exact and no
quota check ever scans the loss blocks. Work in flight is summed from the tenant's active
fits (one index range: they are few next to its finished ones).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.runtime.settings import Settings
from shared.store.built_once import core
from shared.store.bulk import upsert_insert_of
from shared.store.models import ACTIVE, Fit, Tenant

LOSS_BYTES_PER_EPOCH = 4  # one float32 per epoch and series


@dataclass(frozen=True)
class Quotas:
    fit_epochs_per_request: int
    in_flight_fit_epochs: int
    stored_loss_bytes: int


@dataclass(frozen=True)
class Usage:
    tenant: str
    fits: int
    stored_loss_bytes: int
    in_flight_fit_epochs: int
    quotas: Quotas


@dataclass(frozen=True)
class Standing:
    """What admission (and /v1/usage, and the operator's quota command) reads of a tenant."""

    quotas: Quotas
    in_flight_fit_epochs: int
    stored_loss_bytes: int


def quotas_of(session: so.Session, settings: Settings, tenant: str) -> Quotas:
    """The tenant's quotas: its own where an operator set them, else the service's defaults."""
    return standing(session, settings, tenant).quotas


def _in_flight(tenant: sa.BindParameter[str]) -> sa.ScalarSelect[int]:
    """Epochs not yet run of the tenant's queued and running fits."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(Fit.epochs - Fit.epochs_done), 0))
        .where(Fit.status.in_(ACTIVE), Fit.tenant == tenant)
        .scalar_subquery()
    )


def stored_loss_bytes(session: so.Session, tenant: str) -> int:
    row = session.get(Tenant, tenant)
    return row.stored_loss_bytes if row is not None else 0


# Read by every submission, so built once (shared/store/built_once.py says why).
_TENANT = sa.bindparam("tenant", type_=sa.String)
_ASKING = sa.select(_TENANT.label("name")).subquery("asking")
_STANDING = sa.select(
    _in_flight(_TENANT),
    Tenant.max_in_flight_fit_epochs,
    Tenant.max_stored_loss_bytes,
    Tenant.stored_loss_bytes,
).select_from(_ASKING.outerjoin(Tenant, Tenant.name == _ASKING.c.name))


def standing(session: so.Session, settings: Settings, tenant: str) -> Standing:
    """The tenant's quotas, work in flight and stored bytes in one statement: one round trip of
    the submission's transaction where it took three (a tenant that has stored nothing has no
    row yet, and the session looked for the missing row twice). The tenant's row is joined to a
    row of its name, so a tenant without one (or without a quota of its own) reads the service's
    defaults and 0."""
    row = session.execute(_STANDING, {"tenant": tenant}).one()
    in_flight, max_in_flight, max_stored, stored = row
    limits = Quotas(
        fit_epochs_per_request=settings.max_fit_epochs_per_request,
        in_flight_fit_epochs=max_in_flight if max_in_flight is not None else settings.max_in_flight_fit_epochs,
        stored_loss_bytes=max_stored if max_stored is not None else settings.max_stored_loss_bytes,
    )
    return Standing(limits, int(in_flight or 0), int(stored or 0))


def usage(session: so.Session, settings: Settings, tenant: str) -> Usage:
    now = standing(session, settings, tenant)
    return Usage(
        tenant=tenant,
        fits=int(session.scalar(sa.select(sa.func.count()).select_from(Fit).where(Fit.tenant == tenant)) or 0),
        stored_loss_bytes=now.stored_loss_bytes,
        in_flight_fit_epochs=now.in_flight_fit_epochs,
        quotas=now.quotas,
    )


def add_stored_bytes(session: so.Session, deltas: Mapping[str, int]) -> None:
    """Add (or, negative, subtract) loss bytes to each tenant's count, in the caller's transaction.
    Tenants in sorted order: two writes of a coalesced chunk's tenants lock their rows alike (no
    deadlock)."""
    adding, connection = _adding_stored_bytes(session.get_bind().dialect.name), core(session)
    for tenant, delta in sorted(deltas.items()):
        if delta:
            connection.execute(adding, {"tenant": tenant, "first": max(delta, 0), "delta": delta})


@functools.cache
def _adding_stored_bytes(dialect: str) -> sa.Executable:
    """Every write of losses runs it: built once per process (shared/store/built_once.py says why)."""
    # Parameters not named after columns: an INSERT takes those as the values of the columns.
    insert = upsert_insert_of(dialect)(Tenant).values(
        name=sa.bindparam("tenant", type_=sa.String), stored_loss_bytes=sa.bindparam("first", type_=sa.BigInteger)
    )
    return insert.on_conflict_do_update(
        index_elements=["name"],
        set_={"stored_loss_bytes": Tenant.stored_loss_bytes + sa.bindparam("delta", type_=sa.BigInteger)},
    )


def set_quotas(
    session: so.Session,
    tenant: str,
    *,
    in_flight_fit_epochs: int | None = None,
    stored_loss_bytes: int | None = None,
    reset: bool = False,
) -> None:
    """An operator's quotas for one tenant; None leaves a quota as it is (reset: back to the defaults)."""
    row = session.get(Tenant, tenant)
    if row is None:
        row = Tenant(name=tenant, stored_loss_bytes=0)
        session.add(row)
    if reset:
        row.max_in_flight_fit_epochs = row.max_stored_loss_bytes = None
    if in_flight_fit_epochs is not None:
        row.max_in_flight_fit_epochs = in_flight_fit_epochs
    if stored_loss_bytes is not None:
        row.max_stored_loss_bytes = stored_loss_bytes
