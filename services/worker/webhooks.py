"""Delivering webhooks: claim a due delivery, POST its signed body, record the attempt, and either
mark it delivered or schedule the next try with exponential backoff.

Every step is a committed row before the next: the attempt is written (and the delivery leased)
before the POST, so a worker killed mid-POST leaves a lease that lapses, and the reconciler hands
the delivery to another worker. A receiver may see a body twice (at least once): the
Calib-Delivery header names the delivery, for receivers that keep what they have seen.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import sqlalchemy as sa
import sqlalchemy.orm as so

from services.worker.store import holder
from shared import webhooks
from shared.db import Database
from shared.dbclock import db_now, lease_until
from shared.models import Batch, Fit, WebhookAttempt, WebhookDelivery, utcnow
from shared.presenters import batch_json, fit_json
from shared.settings import Settings
from shared.webhooks import AllowedHosts

log = logging.getLogger("calib.webhooks")


@dataclass(frozen=True)
class Claimed:
    id: str
    event: str
    url: str
    body: bytes
    secret: str
    number: int


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    seconds: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver_due(db: Database, settings: Settings, most: int = 100) -> int:
    """Attempt due deliveries one after another (at most `most`); how many were attempted."""
    allowed = AllowedHosts.parse(settings.webhook_allowed_hosts)
    attempted = 0
    while attempted < most:
        claimed = claim(db, settings)
        if claimed is None:
            break
        outcome = post(claimed, settings, allowed)
        record(db, settings, claimed, outcome)
        attempted += 1
    return attempted


def _body(session: so.Session, delivery: WebhookDelivery, settings: Settings) -> str:
    """The final JSON of the fit or batch, as GET serves it (fixed at the first attempt)."""
    if delivery.event == webhooks.FIT_ENDED:
        fit = session.get(Fit, delivery.subject_id)
        fields = fit_json(fit) if fit else {"id": delivery.subject_id}
    else:
        batch = session.get(Batch, delivery.subject_id)
        fields = batch_json(session, batch, settings.drift_threshold) if batch else {"id": delivery.subject_id}
    return json.dumps(fields, separators=(",", ":"), allow_nan=False)


def claim(db: Database, settings: Settings) -> Claimed | None:
    """Lease the next due delivery and write its attempt (a committed row before any POST)."""
    free = sa.or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < db_now())
    with db.session(write=True) as session:
        delivery = session.scalars(
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.next_attempt_at <= db_now(), free)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if delivery is None:
            return None
        number = delivery.attempts + 1
        leased = session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == delivery.attempts, free)
            .values(
                attempts=number,
                # A POST takes at most the timeout; the margin covers resolving and recording.
                leased_until=lease_until(settings.webhook_timeout_seconds + 10),
                leased_by=holder(),
            )
            .execution_options(synchronize_session=False)
        )
        if not leased.rowcount:  # type: ignore[attr-defined]
            return None  # another worker took it between the read and the update
        body = delivery.body or _body(session, delivery, settings)
        if delivery.body is None:
            session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(body=body))
        session.add(WebhookAttempt(delivery_id=delivery.id, number=number, started_at=utcnow()))
        secret = webhooks.secret_of(session, delivery.tenant)
        return Claimed(delivery.id, delivery.event, delivery.url, body.encode(), secret, number)


def _resolve(host: str, port: int) -> list[webhooks.Address]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def post(claimed: Claimed, settings: Settings, allowed: AllowedHosts) -> Outcome:
    """One POST. The name is resolved here and the connection made to the address checked, so a
    name that resolves to an address the operator did not allow (DNS rebinding, an internal
    service) is never reached; redirects are not followed."""
    started = time.monotonic()

    def outcome(status: int | None, error: str | None) -> Outcome:
        return Outcome(status, error, time.monotonic() - started)

    parts = urlsplit(claimed.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not allowed.host(host):
        return outcome(None, f"host {host!r} is no longer allowed (CALIB_WEBHOOK_ALLOWED_HOSTS)")
    try:
        addresses = _resolve(host, port)
    except OSError as exc:
        return outcome(None, f"cannot resolve {host}: {exc}")
    refused = [address for address in addresses if not allowed.address(address)]
    if refused or not addresses:
        return outcome(None, f"{host} resolves to {refused[0] if refused else 'nothing'}, an address not allowed")
    address = addresses[0]
    netloc = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "calib-webhooks/1",
        "Host": parts.netloc.rsplit("@", 1)[-1],
        webhooks.SIGNATURE_HEADER: webhooks.sign(claimed.secret, timestamp, claimed.body),
        "Calib-Delivery": claimed.id,
        "Calib-Event": claimed.event,
    }
    # The certificate is checked against the name, over a connection to the checked address.
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False) as http:
            answer = http.post(
                urlunsplit(parts._replace(netloc=netloc)), content=claimed.body, headers=headers, extensions=extensions
            )
    except httpx.TimeoutException:
        return outcome(None, f"no answer within {settings.webhook_timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return outcome(None, f"{type(exc).__name__}: {exc}")
    if 300 <= answer.status_code < 400:
        return outcome(answer.status_code, "a redirect: not followed (send the final URL as callback_url)")
    return outcome(answer.status_code, None if 200 <= answer.status_code < 300 else f"answered {answer.status_code}")


def retry_delay(number: int, settings: Settings) -> float:
    """Seconds before attempt number+1: doubling from webhook_retry_seconds up to the maximum, with
    a tenth of jitter so that a receiver back from an outage is not hit by every retry at once."""
    base = min(settings.webhook_retry_seconds * 2 ** (number - 1), settings.webhook_retry_max_seconds)
    return float(base) * (1 + random.random() / 10)


def record(db: Database, settings: Settings, claimed: Claimed, outcome: Outcome) -> None:
    with db.session(write=True) as session:
        session.execute(
            sa.update(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == claimed.id, WebhookAttempt.number == claimed.number)
            .values(status_code=outcome.status_code, error=outcome.error, seconds=outcome.seconds)
        )
        mine = sa.and_(WebhookDelivery.id == claimed.id, WebhookDelivery.attempts == claimed.number)
        values: dict[str, Any]
        if outcome.delivered:
            values = {"delivered_at": utcnow(), "next_attempt_at": None, "leased_until": None}
            log.info("webhook %s delivered on attempt %d", claimed.id, claimed.number)
        else:
            delay = retry_delay(claimed.number, settings)
            created = session.scalar(sa.select(WebhookDelivery.created_at).where(WebhookDelivery.id == claimed.id))
            age = (utcnow() - created).total_seconds() if created else 0.0
            if age + delay > settings.webhook_give_up_seconds:
                values = {"gave_up_at": utcnow(), "next_attempt_at": None, "leased_until": None}
                log.warning("webhook %s given up after %d attempts: %s", claimed.id, claimed.number, outcome.error)
            else:
                values = {"next_attempt_at": lease_until(delay), "leased_until": None}
                log.info("webhook %s attempt %d: %s; next in %.1f s", claimed.id, claimed.number, outcome.error, delay)
        session.execute(sa.update(WebhookDelivery).where(mine).values(**values))
