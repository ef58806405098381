"""Delivering webhooks: claim a due delivery, POST its signed body, record the attempt, and either
mark it delivered or schedule the next try with exponential backoff.

Every step is a committed row before the next: the attempt is written (and the delivery leased)
before the POST, so a worker killed mid-POST leaves a lease that lapses, and the reconciler hands
the delivery to another worker. A receiver may see a body twice (at least once): the webhook-id
header names the delivery, for receivers that keep what they have seen.

Nothing a receiver does can hold a delivery worker past one attempt's deadline
(CALIB_WEBHOOK_TIMEOUT_SECONDS): resolving runs in a thread waited on with the time left, the
socket is made here and a timer shuts it down at the deadline whatever it is blocked in (a
receiver trickling a byte at a time would defeat per-read timeouts), and at most 64 KiB of the
answer is read. Several attempts run at once (CALIB_WEBHOOK_CONCURRENCY threads), and a host
failing again and again is skipped until its circuit reopens. Deliveries run in their own worker
processes (`calib worker --deliveries`), so a fit never waits behind one.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import sqlalchemy.orm as so

from services.worker.store import holder
from shared.contract.callbacks import DEFAULT_PORTS, Address, AllowedHosts, url_problem
from shared.runtime.settings import Settings
from shared.store import deliveries as webhooks
from shared.store.db import Database
from shared.store.dbclock import db_now, lease_until
from shared.store.models import Batch, Fit, WebhookAttempt, WebhookDelivery, utcnow
from shared.store.presenters import fit_json
from shared.store.reads import batch_body, verdict_event

log = logging.getLogger("calib.webhooks")

# The most of a receiver's answer that is read; the rest is never received.
ANSWER_LIMIT = 64 * 1024
# getaddrinfo cannot be cancelled: it runs here, and is waited on only for the time left.
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


@dataclass(frozen=True)
class Claimed:
    id: str
    event: str
    url: str
    body: bytes
    keys: webhooks.Secrets
    number: int
    subject_id: str = ""


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    seconds: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class Breaker:
    """Per origin (scheme, host, port), the failures in a row and until when it is not tried. One per delivery process:
    each process learns a failing host by itself, after `failures` attempts."""

    failures: int
    base_seconds: float = 30.0
    max_seconds: float = 600.0
    hosts: dict[str, tuple[int, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def closed_in(self, host: str) -> float:
        """Seconds until this host may be tried again (0: now)."""
        with self.lock:
            return max(0.0, self.hosts.get(host, (0, 0.0))[1] - time.monotonic())

    def note(self, host: str, delivered: bool) -> None:
        with self.lock:
            if delivered:
                self.hosts.pop(host, None)
                return
            count = self.hosts.get(host, (0, 0.0))[0] + 1
            opens = 0.0
            if count >= self.failures:
                opens = time.monotonic() + min(self.base_seconds * 2 ** (count - self.failures), self.max_seconds)
            self.hosts[host] = (count, opens)


_breakers: dict[int, Breaker] = {}


def origin(url: str) -> str:
    """What a circuit is kept for: scheme, host and port (two receivers on one host are two)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or DEFAULT_PORTS.get(parts.scheme, 0)}"


def breaker_for(settings: Settings) -> Breaker:
    found = _breakers.get(id(settings))
    if found is None:
        found = _breakers[id(settings)] = Breaker(
            settings.webhook_breaker_failures, 30.0, settings.webhook_retry_max_seconds
        )
    return found


def deliver_due(db: Database, settings: Settings, most: int = 200) -> int:
    """Attempt due deliveries, `webhook_concurrency` at once, until none is due or `most` were
    attempted; how many were attempted."""
    allowed = AllowedHosts.parse(settings.webhook_allowed_hosts)
    breaker = breaker_for(settings)
    budget = threading.Semaphore(most)
    counted = [0]
    lock = threading.Lock()

    def loop() -> None:
        while budget.acquire(blocking=False):
            claimed = claim(db, settings, breaker)
            if claimed is None:
                return
            outcome = post(claimed, settings, allowed)
            breaker.note(origin(claimed.url), outcome.delivered)
            record(db, settings, claimed, outcome)
            with lock:
                counted[0] += 1

    threads = max(1, settings.webhook_concurrency)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="deliver") as pool:
        for done in [pool.submit(loop) for _ in range(threads)]:
            done.result()
    return counted[0]


def _body(session: so.Session, event: str, subject_id: str, settings: Settings) -> str:
    """The final JSON of the fit or batch, as GET serves it (fixed at the first attempt)."""
    if event == webhooks.FIT_ENDED:
        fit = session.get(Fit, subject_id)
        fields = fit_json(fit) if fit else {"id": subject_id}
    elif event == webhooks.INSTRUMENT_VERDICT:
        fields = verdict_event(session, subject_id)
    else:
        batch = session.get(Batch, subject_id)
        fields = batch_body(session, batch, settings.drift_threshold) if batch else {"id": subject_id}
    return json.dumps(fields, separators=(",", ":"), allow_nan=False)


def _with_body(db: Database, settings: Settings, claimed: Claimed) -> Claimed:
    """The body of a first attempt, built in a read (a 10,000-fit batch's verdicts take a second:
    inside the claim's write transaction that second held SQLite's one write lock), then kept."""
    with db.session() as session:
        body = _body(session, claimed.event, claimed.subject_id, settings)
    with db.session(write=True) as session:
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == claimed.id, WebhookDelivery.body.is_(None))
            .values(body=body)
        )
        kept = session.scalar(sa.select(WebhookDelivery.body).where(WebhookDelivery.id == claimed.id))
    return dataclasses.replace(claimed, body=(kept or body).encode())


def lease_seconds(settings: Settings) -> float:
    """A lease outlasts the attempt's deadline (enforced below) with room to write its record."""
    return 2 * settings.webhook_timeout_seconds + 10


def claim(db: Database, settings: Settings, breaker: Breaker | None = None) -> Claimed | None:
    """Lease the next due delivery and write its attempt (a committed row before any POST). A
    delivery to a host whose circuit is open is put off until it reopens, with no attempt."""
    free = sa.or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < db_now())
    for _ in range(100):  # past the deliveries put off, to one that is tried now
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
            wait = breaker.closed_in(origin(delivery.url)) if breaker else 0.0
            if wait > 0:
                session.execute(
                    sa.update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == delivery.attempts, free)
                    .values(next_attempt_at=lease_until(wait))
                )
                continue
            claimed = _lease(session, delivery, settings, free)
        return _with_body(db, settings, claimed) if claimed is not None and not claimed.body else claimed
    return None


def _lease(
    session: so.Session, delivery: WebhookDelivery, settings: Settings, free: sa.ColumnElement[bool]
) -> Claimed | None:
    number = delivery.attempts + 1
    leased = session.execute(
        sa.update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id, WebhookDelivery.attempts == delivery.attempts, free)
        .values(attempts=number, leased_until=lease_until(lease_seconds(settings)), leased_by=holder())
        .execution_options(synchronize_session=False)
    )
    if not leased.rowcount:  # type: ignore[attr-defined]
        return None  # another worker took it between the read and the update
    session.add(WebhookAttempt(delivery_id=delivery.id, number=number, started_at=utcnow()))
    keys = webhooks.secrets_of(session, delivery.tenant, settings)
    # No body yet (a first attempt): built after this transaction commits (_with_body).
    body = (delivery.body or "").encode()
    return Claimed(delivery.id, delivery.event, delivery.url, body, keys, number, delivery.subject_id)


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left


def _resolve(host: str, port: int, deadline: _Deadline) -> list[Address]:
    literal = ipaddress.ip_address(host.strip("[]")) if _is_literal(host) else None
    if literal is not None:
        return [literal]
    found = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = found.result(timeout=deadline.left())
    except FutureTimeout as exc:
        raise TimeoutError from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@contextmanager
def _cut_at(deadline: _Deadline, held: list[socket.socket]) -> Iterator[None]:
    """Shut the connection down at the deadline, whatever it is blocked in (connect, TLS, a read)."""

    def cut() -> None:
        for sock in held:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(max(0.0, deadline.at - time.monotonic()), cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        for sock in held:
            sock.close()


def _exchange(
    address: Address,
    port: int,
    scheme: str,
    host: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    deadline: _Deadline,
) -> int:
    """One POST to the checked address (the certificate checked against the name), within the
    deadline; the answer's status, having read at most ANSWER_LIMIT bytes of it."""
    held: list[socket.socket] = []
    with _cut_at(deadline, held):
        sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        held.append(sock)
        sock.settimeout(deadline.left())
        sock.connect((str(address), port))
        if scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            held.append(sock)
        connection = http.client.HTTPConnection(host, port, timeout=deadline.left())
        connection.sock = sock
        connection.request("POST", target, body=body, headers=headers)
        sock.settimeout(deadline.left())
        answer = connection.getresponse()
        answer.read(ANSWER_LIMIT)
        deadline.left()
        return answer.status


def post(claimed: Claimed, settings: Settings, allowed: AllowedHosts) -> Outcome:
    """One attempt. The URL is checked again (the operator may have narrowed the list since), the
    name resolved here and the connection made to the address checked, so a name that resolves to
    an address the operator did not allow (DNS rebinding, an internal service) is never reached;
    redirects are not followed. Errors say what happened, never which address a name resolved to."""
    started = time.monotonic()
    deadline = _Deadline(settings.webhook_timeout_seconds)

    def outcome(status: int | None, error: str | None) -> Outcome:
        return Outcome(status, error, time.monotonic() - started)

    problem = url_problem(claimed.url, allowed)
    if problem is not None:
        return outcome(None, f"no longer allowed: {problem} (CALIB_WEBHOOK_ALLOWED_HOSTS)")
    parts = urlsplit(claimed.url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    try:
        addresses = _resolve(host, port, deadline)
    except TimeoutError:
        return outcome(None, f"timed out resolving the host ({settings.webhook_timeout_seconds:g} s)")
    except OSError:
        return outcome(None, "the host does not resolve")
    if not addresses or not all(allowed.address(address) for address in addresses):
        return outcome(None, "the host resolves to an address this service may not reach")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Host": parts.netloc.rsplit("@", 1)[-1],
        "Content-Type": "application/json",
        "User-Agent": "calib-webhooks/2",
        **webhooks.signature_headers(claimed.keys, claimed.id, int(time.time()), claimed.body),
        "Calib-Delivery": claimed.id,
        "Calib-Event": claimed.event,
    }
    try:
        status = _exchange(addresses[0], port, parts.scheme, host, target, headers, claimed.body, deadline)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        return outcome(None, _failure(exc, deadline, settings))
    if 300 <= status < 400:
        return outcome(status, "a redirect: not followed (send the final URL as callback_url)")
    return outcome(status, None if 200 <= status < 300 else f"answered {status}")


def _failure(exc: BaseException, deadline: _Deadline, settings: Settings) -> str:
    if time.monotonic() >= deadline.at or isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out: no whole answer within {settings.webhook_timeout_seconds:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or 'handshake'}"
    if isinstance(exc, http.client.HTTPException):
        return "the answer is not HTTP"
    return "the connection failed"


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
