"""Whose request this is. Every query is scoped by it; services.api.auth sets it from the token."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import g

from services.api.problems import Problem
from shared.store.models import Batch, Fit

# What a tenant owns: each has an id and a tenant column.
T = TypeVar("T", Fit, Batch)


def current_tenant() -> str:
    tenant: str = g.tenant  # set by services.api.auth before any /v1 view runs
    return tenant


# Read by every GET of a fit or batch (and again at each wake-up of a wait), so built once
# (shared/store/built_once.py says why).
_OWNED: dict[type[Fit] | type[Batch], sa.Select[Any]] = {
    model: sa.select(model).where(model.id == sa.bindparam("id"), model.tenant == sa.bindparam("tenant"))
    for model in (Fit, Batch)
}


def owned_or_404(session: so.Session, model: type[T], object_id: str, noun: str) -> T:
    """The tenant's object; another tenant's answers exactly like an unknown id."""
    found: T | None = session.scalars(_OWNED[model], {"id": object_id, "tenant": current_tenant()}).first()
    if found is None:
        raise Problem(404, f"no {noun} with id {object_id}", slug="not-found")
    return found
