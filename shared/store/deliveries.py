"""Webhooks: the deliveries owed when fits and batches end, and their signatures (which callback
URLs are allowed is shared/contract/callbacks.py). The HTTP side is the worker's (services/worker/webhooks.py).

A delivery is a row, created in the same transaction that ends its fit or batch, so it survives any
process being killed: at least once, never lost. A batch ends when its last fit does; two workers
ending its last two chunks at once may each still see the other's fits running, so the
reconciler's sweep creates the deliveries of ended batches that are still pending.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.runtime import sealed
from shared.runtime.settings import Settings
from shared.store.built_once import core
from shared.store.bulk import upsert_insert
from shared.store.dbclock import db_now
from shared.store.models import ACTIVE, TERMINAL, Batch, Fit, Tenant, WebhookDelivery, new_id, utcnow

FIT_ENDED, BATCH_ENDED = "fit.ended", "batch.ended"
# An instrument's new calibration found its previous one failing, or conditionally (API.md
# "Conformity decisions"): sent to the calibrating fit's callback, or its batch's.
INSTRUMENT_VERDICT = "instrument.verdict"
ALARMING = ("fail", "conditional fail")
SIGNATURE_HEADER = "Calib-Signature"


@dataclass(frozen=True)
class Secrets:
    """A tenant's signing secrets: the current one, and during a rotation's overlap the one before."""

    current: str
    previous: str | None = None


def new_secret() -> str:
    """A Standard Webhooks secret: "whsec_" and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    # As the specification's libraries read a secret: base64 after the prefix (padding forgiven).
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


def signature_headers(keys: Secrets, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: webhook-id, webhook-timestamp and webhook-signature, one
    "v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.<body>'>" per secret in use (space-separated,
    so a receiver holding either secret verifies during a rotation), and the legacy
    Calib-Signature (under the current secret) for receivers written against the first release."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    signatures = [
        "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()
        for secret in (keys.current, keys.previous)
        if secret
    ]
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        SIGNATURE_HEADER: sign(keys.current, timestamp, body),
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The legacy Calib-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
    under the secret's text (kept beside the Standard Webhooks headers for one release)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def secret_of(session: so.Session, tenant: str, settings: Settings) -> str:
    """The tenant's webhook secret, made now if it has none (two makers at once keep the first).
    Stored sealed (shared/runtime/sealed.py): the database holds no usable secret."""
    insert = upsert_insert(session)
    session.execute(insert(Tenant).values(name=tenant, stored_loss_bytes=0).on_conflict_do_nothing())
    session.execute(
        sa.update(Tenant)
        .where(Tenant.name == tenant, Tenant.webhook_secret.is_(None))
        .values(webhook_secret=sealed.seal(new_secret(), settings))
    )
    stored = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.name == tenant))
    assert stored is not None
    return sealed.unseal(stored, settings)


def secrets_of(session: so.Session, tenant: str, settings: Settings) -> Secrets:
    """The secrets a delivery is signed with now: the current one, and the previous one while a
    rotation's overlap lasts."""
    current = secret_of(session, tenant, settings)
    previous, until = session.execute(
        sa.select(Tenant.webhook_secret_previous, Tenant.webhook_secret_previous_until).where(Tenant.name == tenant)
    ).one()
    overlapping = previous is not None and until is not None and until > utcnow()
    return Secrets(current, sealed.unseal(previous, settings) if previous is not None and overlapping else None)


def rotate(session: so.Session, tenant: str, overlap: dt.timedelta, settings: Settings) -> str:
    """A new current secret; the one it replaces keeps signing beside it for `overlap`."""
    old = secret_of(session, tenant, settings)
    fresh = new_secret()
    session.execute(
        sa.update(Tenant)
        .where(Tenant.name == tenant)
        .values(
            webhook_secret=sealed.seal(fresh, settings),
            webhook_secret_previous=sealed.seal(old, settings),
            webhook_secret_previous_until=utcnow() + overlap,
        )
    )
    return fresh


def enqueue(session: so.Session, fits: Iterable[str], batches: Iterable[str | None]) -> None:
    """Create the deliveries of these fits (ended, with a callback) and of these batches, those that
    ended with them; in the caller's transaction, the one that ends them."""
    fit_ids = list(fits)
    rows: list[dict[str, str]] = []
    for start in range(0, len(fit_ids), 1000):
        rows += [
            {"tenant": tenant, "event": FIT_ENDED, "subject_id": fit_id, "url": url or ""}
            for fit_id, tenant, url in session.execute(
                sa.select(Fit.id, Fit.tenant, Fit.callback_url).where(
                    Fit.id.in_(fit_ids[start : start + 1000]), Fit.callback_url.is_not(None), Fit.status.in_(TERMINAL)
                )
            )
        ]
    batch_ids = sorted({batch for batch in batches if batch})
    if batch_ids:
        rows += _ended_batches(session, Batch.id.in_(batch_ids))
    _insert(session, rows)


def enqueue_verdicts(session: so.Session, fit_ids: Iterable[str]) -> None:
    """The deliveries of these calibrations' alarming verdicts, where their fit or its batch has a
    callback; in the caller's transaction, the one that stores the verdicts."""
    ids = list(fit_ids)
    if not ids:
        return
    rows = session.execute(
        sa.select(Fit.id, Fit.tenant, Fit.callback_url, Batch.callback_url.label("batch_url"))
        .outerjoin(Batch, Batch.id == Fit.batch_id)
        .where(Fit.id.in_(ids))
    ).all()
    _insert(
        session,
        [
            {"tenant": row.tenant, "event": INSTRUMENT_VERDICT, "subject_id": row.id, "url": url}
            for row in rows
            if (url := row.callback_url or row.batch_url)
        ],
    )


def sweep(session: so.Session) -> int:
    """Deliveries for batches that ended while their callback was still pending (the reconciler)."""
    rows = _ended_batches(session, Batch.callback_pending.is_(True))
    _insert(session, rows)
    return len(rows)


def _ended_batches(session: so.Session, which: sa.ColumnElement[bool]) -> list[dict[str, str]]:
    still_running = sa.exists().where(Fit.batch_id == Batch.id, Fit.status.in_(ACTIVE))
    ended = session.execute(
        sa.select(Batch.id, Batch.tenant, Batch.callback_url)
        .where(which, Batch.callback_pending.is_(True), ~still_running)
        .limit(1000)
    ).all()
    if ended:
        session.execute(sa.update(Batch).where(Batch.id.in_([row.id for row in ended])).values(callback_pending=False))
    return [
        {"tenant": row.tenant, "event": BATCH_ENDED, "subject_id": row.id, "url": row.callback_url or ""}
        for row in ended
    ]


def _insert(session: so.Session, rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    insert = upsert_insert(session)
    now = utcnow()
    # Due at once by the database's clock, the one `due` and the delivery's claim read: stamped with
    # this process's clock, a delivery was not yet due by PostgreSQL's now() (its transaction's
    # start), so the write that made it found none due and it waited for the reconciler's round.
    values = [{**row, "id": new_id(), "created_at": now, "next_attempt_at": db_now(), "attempts": 0} for row in rows]
    session.execute(insert(WebhookDelivery).values(values).on_conflict_do_nothing())


def due(session: so.Session) -> bool:
    """Whether some delivery is waiting for an attempt now (neither leased nor waiting to retry)."""
    return core(session).scalar(_DUE) is not None


# Asked at every write that ends fits: built once (shared/store/built_once.py says why).
_DUE = (
    sa.select(WebhookDelivery.id)
    .where(
        WebhookDelivery.next_attempt_at <= db_now(),
        sa.or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < db_now()),
    )
    .limit(1)
)
