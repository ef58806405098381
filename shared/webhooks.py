"""Webhooks: which callback URLs are allowed, the deliveries owed when fits and batches end, and
their signatures. The HTTP side is the worker's (services/worker/webhooks.py).

A delivery is a row, created in the same transaction that ends its fit or batch, so it survives any
process being killed: at least once, never lost. A batch ends when its last fit does; two workers
ending its last two chunks at once may each still see the other's fits running, so the
reconciler's sweep creates the deliveries of ended batches that are still pending.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db import upsert_insert
from shared.dbclock import db_now
from shared.models import ACTIVE, TERMINAL, Batch, Fit, Tenant, WebhookDelivery, new_id, utcnow

FIT_ENDED, BATCH_ENDED = "fit.ended", "batch.ended"
SIGNATURE_HEADER = "Calib-Signature"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowedHosts:
    """The operator's CALIB_WEBHOOK_ALLOWED_HOSTS: names, "*.suffix" patterns, "*", and addresses or
    networks. A name says which URLs are accepted; an address or network also lets a delivery
    connect to that address when it is not a public one (loopback, private, link-local...)."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    any_name: bool
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        names, suffixes, networks, any_name = set(), [], [], False
        for entry in (part.strip().lower() for part in text.split(",")):
            if not entry:
                continue
            if entry == "*":
                any_name = True
            elif entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError:
                    names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(suffixes), any_name, tuple(networks))

    def host(self, host: str) -> bool:
        """Whether a URL may name this host."""
        host = host.lower().rstrip(".")
        address = _address(host)
        if address is not None:
            return self.address(address)
        return self.any_name or host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)

    def address(self, address: Address) -> bool:
        """Whether a delivery may connect to this address."""
        listed = any(address in network for network in self.networks)
        return listed or (address.is_global and not address.is_multicast and self.any_address_public())

    def any_address_public(self) -> bool:
        # Names allowed: their public addresses are what the operator allowed.
        return bool(self.names or self.suffixes or self.any_name)


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def url_problem(url: str, allowed: AllowedHosts) -> str | None:
    """Why this callback URL is refused, or None: http(s), a host the operator allows, no credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL"
    del port  # read only to check it is a number in range
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// URL with a host is needed"
    if parts.username or parts.password:
        return "credentials in the URL are not accepted; verify the Calib-Signature header instead"
    if not allowed.host(parts.hostname):
        return f"host {parts.hostname!r} is not among the hosts this service's operator allows for webhooks"
    return None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Calib-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def secret_of(session: so.Session, tenant: str) -> str:
    """The tenant's webhook secret, made now if it has none (two makers at once keep the first)."""
    insert = upsert_insert(session)
    session.execute(insert(Tenant).values(name=tenant, stored_loss_bytes=0).on_conflict_do_nothing())
    session.execute(
        sa.update(Tenant)
        .where(Tenant.name == tenant, Tenant.webhook_secret.is_(None))
        .values(webhook_secret="whsec_" + secrets.token_hex(32))
    )
    secret = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.name == tenant))
    assert secret is not None
    return secret


def enqueue(session: so.Session, fits: Iterable[str], batches: Iterable[str | None]) -> None:
    """Create the deliveries of these fits (ended, with a callback) and of these batches, those that
    ended with them; in the caller's transaction, the one that ends them."""
    fit_ids = list(fits)
    rows = []
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
    values = [{**row, "id": new_id(), "created_at": now, "next_attempt_at": now, "attempts": 0} for row in rows]
    session.execute(insert(WebhookDelivery).values(values).on_conflict_do_nothing())


def due(session: so.Session) -> bool:
    """Whether some delivery is waiting for an attempt now (neither leased nor waiting to retry)."""
    free = sa.or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < db_now())
    return (
        session.scalar(sa.select(WebhookDelivery.id).where(WebhookDelivery.next_attempt_at <= db_now(), free).limit(1))
        is not None
    )
