"""Insert-or-replay under an Idempotency-Key, written once for fits and batches: the same key
and body answer the object the first request made (200); the same key with another body is a
409; two requests racing with one key make one object (the unique index decides)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import request
from sqlalchemy.exc import IntegrityError

from services.api.problems import Problem, invalid_field
from shared.store.db import Database
from shared.store.models import Batch, Fit

T = TypeVar("T", Fit, Batch)
# The request's fingerprint as an earlier version computed it, for keys stored then; None: the same.
Earlier = Callable[[], str] | None


def request_key() -> str | None:
    """The request's Idempotency-Key header: 1 to 200 characters, or none."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        raise invalid_field(
            ["header", "Idempotency-Key"], "1 to 200 characters", "Idempotency-Key: 1 to 200 characters"
        )
    return key


def _earlier(
    session: so.Session, model: type[T], tenant: str, key: str, request_digest: str | None, earlier: Earlier
) -> T | None:
    found = session.scalars(sa.select(model).where(model.tenant == tenant, model.idempotency_key == key)).first()
    if found is not None and found.request_digest != request_digest:
        if earlier is None or found.request_digest != earlier():
            raise Problem(
                409, "this Idempotency-Key was used with a different request body", slug="idempotency-conflict"
            )
    return found


def insert_or_replay(
    db: Database,
    model: type[T],
    tenant: str,
    key: str | None,
    request_digest: str | None,
    *,
    admit: Callable[[so.Session], None],
    insert: Callable[[so.Session], T],
    earlier: Earlier = None,
) -> tuple[T, bool]:
    """(the object, whether this request made it), in one transaction: the earlier request's
    object looked for, then (only for a new object) `admit` reads what it needs and `insert`
    writes. One round of the database per submission, not one per step."""
    try:
        with db.session(write=True) as session:
            found = None if key is None else _earlier(session, model, tenant, key, request_digest, earlier)
            if found is not None:
                return found, False
            admit(session)
            made = insert(session)
    except IntegrityError:
        # A concurrent request with the same key won the insert.
        if key is None:
            raise
        with db.session() as session:
            found = _earlier(session, model, tenant, key, request_digest, earlier)
        if found is None:
            raise
        return found, False
    return made, True
