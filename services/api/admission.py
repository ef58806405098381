"""What a request may ask before anything of it is stored: the quotas, and the queue's threshold.

Each refusal is problem+json naming the quota (`quota`, `limit`, `requested`, `remaining`):
- one request's fit-epochs past `max_fit_epochs_per_request` → 413 (it can never be accepted);
- the tenant's fit-epochs in flight past its quota → 429 with Retry-After (its work drains);
- the tenant's stored loss bytes past its quota → 507 (nothing drains it but retention, a
  prune or an operator raising the quota, so waiting alone would not help);
- the service's queued fits or broker messages past their thresholds → 503 with Retry-After.
Checks run on the raw request, before validation: the 100,000 × 1,000,000 batch is refused
in the time it takes to read it. Two requests admitted at the same instant may each pass the
in-flight check; the overshoot is bounded by one request's quota.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from services.api.extensions import Services
from services.api.problems import Problem
from shared.contract.schemas import DEFAULT_EPOCHS
from shared.runtime.settings import Settings
from shared.store import quotas
from shared.store.models import QUEUED, WebhookDelivery

# A tenant at its in-flight quota waits for its own work to finish: a few seconds is a fair first retry.
_IN_FLIGHT_RETRY_AFTER = 10
_QUEUE_RETRY_AFTER = 30


@dataclass(frozen=True)
class Ask:
    """What a request would store: its fits' epochs in all, and the loss bytes they write."""

    fit_epochs: int
    loss_bytes: int
    # Webhook deliveries it will owe (a callback_url on the fit or the batch).
    callbacks: int = 0


def ask_of(fits: Iterable[Mapping[str, Any]], defaults: Mapping[str, Any], max_epochs: int) -> Ask:
    """Read from the request as sent (validation comes later and refuses what is not a number)."""
    fit_epochs = loss_bytes = 0
    for fit in fits:
        if not isinstance(fit, Mapping):
            continue
        epochs = _epochs(fit, defaults, max_epochs)
        split = fit.get("validation", defaults.get("validation")) is not None
        fit_epochs += epochs
        loss_bytes += epochs * quotas.LOSS_BYTES_PER_EPOCH * (2 if split else 1)
    return Ask(fit_epochs, loss_bytes)


def _epochs(fit: Mapping[str, Any], defaults: Mapping[str, Any], max_epochs: int) -> int:
    epochs = fit.get("epochs", defaults.get("epochs", DEFAULT_EPOCHS))
    if epochs == "auto":  # runs until it converges: it may take all of max_epochs
        epochs = fit.get("max_epochs", defaults.get("max_epochs"))
        epochs = max_epochs if epochs is None else epochs  # null is the default: the service's limit
    if isinstance(epochs, bool) or not isinstance(epochs, int | float) or epochs != epochs:
        return 0
    return max(0, min(int(epochs), max_epochs))


def _refuse(
    status: int, quota: str, limit: int, requested: int, remaining: int, detail: str, retry_after: int | None = None
) -> Problem:
    return Problem(
        status,
        detail,
        slug="quota-exceeded",
        retry_after=retry_after,
        extra={"quota": quota, "limit": limit, "requested": requested, "remaining": max(0, remaining)},
    )


def refuse_oversize(settings: Settings, ask: Ask) -> None:
    """413 for a request that no state of the service would accept (checked before validation)."""
    per_request = settings.max_fit_epochs_per_request
    if ask.fit_epochs > per_request:
        raise _refuse(
            413,
            "fit_epochs_per_request",
            per_request,
            ask.fit_epochs,
            per_request,
            f"this request asks for {ask.fit_epochs:,} fit-epochs (Σ epochs over its fits); "
            f"one request may ask for {per_request:,}: split it, or ask for fewer epochs",
        )


def admit(svc: Services, session: so.Session, tenant: str, ask: Ask) -> None:
    """Raise the problem for the first quota this request would pass; return if it fits. Reads in
    `session`, the submission's own transaction. Runs after an idempotent replay was looked for:
    a replay stores nothing and is never refused."""
    settings = svc.settings
    refuse_oversize(settings, ask)
    _check_queue(svc, session)
    _one_at_a_time(session, tenant)
    now = quotas.standing(session, settings, tenant)
    limits, in_flight, stored = now.quotas, now.in_flight_fit_epochs, now.stored_loss_bytes
    if in_flight + ask.fit_epochs > limits.in_flight_fit_epochs:
        raise _refuse(
            429,
            "in_flight_fit_epochs",
            limits.in_flight_fit_epochs,
            ask.fit_epochs,
            limits.in_flight_fit_epochs - in_flight,
            f"tenant {tenant} has {in_flight:,} fit-epochs queued or running; with this request's "
            f"{ask.fit_epochs:,} that passes its quota of {limits.in_flight_fit_epochs:,}: "
            "retry when some of them have finished",
            retry_after=_IN_FLIGHT_RETRY_AFTER,
        )
    if ask.callbacks:
        _check_pending_webhooks(session, settings.webhook_max_pending_per_tenant, tenant, ask.callbacks)
    if stored + ask.loss_bytes > limits.stored_loss_bytes:
        raise _refuse(
            507,
            "stored_loss_bytes",
            limits.stored_loss_bytes,
            ask.loss_bytes,
            limits.stored_loss_bytes - stored,
            f"tenant {tenant} stores {stored:,} bytes of losses; this request would write up to "
            f"{ask.loss_bytes:,} more, past its quota of {limits.stored_loss_bytes:,}: "
            "prune old fits' losses (calib prune) or ask an operator for a larger quota",
        )


def _one_at_a_time(session: so.Session, tenant: str) -> None:
    """A tenant's submissions check their quotas one after another: on PostgreSQL (READ COMMITTED)
    two at once would each read the other's fits as not yet there and both pass. The lock is the
    transaction's, released at its commit, after the fits are in. SQLite's writes are one at a
    time already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_TENANTS_LOCK, {"name": "calib-quota:" + tenant})


# Taken by every submission, so built once (shared/store/built_once.py says why).
_TENANTS_LOCK = sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("name", type_=sa.String))))


def _check_pending_webhooks(session: so.Session, limit: int, tenant: str, callbacks: int) -> None:
    """A receiver that never answers keeps its deliveries pending for a day: past the cap, the
    tenant's new callbacks wait until some are delivered or given up."""
    pending = (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.tenant == tenant, WebhookDelivery.next_attempt_at.is_not(None))
        )
        or 0
    )
    if pending + callbacks > limit:
        raise _refuse(
            429,
            "pending_webhooks",
            limit,
            callbacks,
            max(0, limit - pending),
            f"tenant {tenant} has {pending:,} webhook deliveries pending (neither delivered nor given up), "
            f"the most it may have: retry when its receivers have taken some "
            "(GET /v1/webhooks/deliveries lists them)",
            retry_after=_IN_FLIGHT_RETRY_AFTER,
        )


def _check_queue(svc: Services, session: so.Session) -> None:
    counts, depth = svc.queue_snapshot(session)
    settings = svc.settings
    queued = counts.get(QUEUED, 0)
    if queued >= settings.max_queued_fits:
        raise _refuse(
            503,
            "queued_fits",
            settings.max_queued_fits,
            1,
            settings.max_queued_fits - queued,
            f"the service has {queued:,} fits queued, its threshold is {settings.max_queued_fits:,}: retry later",
            retry_after=_QUEUE_RETRY_AFTER,
        )
    if depth is not None and depth >= settings.max_queued_messages:
        raise _refuse(
            503,
            "queued_messages",
            settings.max_queued_messages,
            1,
            settings.max_queued_messages - depth,
            f"the broker holds {depth:,} chunk messages, its threshold is "
            f"{settings.max_queued_messages:,}: retry later",
            retry_after=_QUEUE_RETRY_AFTER,
        )


def require_broker(svc: Services) -> None:
    """Before anything is stored: 503 if the broker does not answer, so a client retries
    instead of holding a 202 for a fit no worker can be woken for."""
    if svc.broker_fresh():
        return
    failure = svc.broker_failure()
    if failure is not None:
        raise Problem(
            503, f"the broker is not answering ({failure}); retry shortly", slug="dependency-unavailable", retry_after=5
        )
