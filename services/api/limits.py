"""Request budgets: one per tenant, shared by every route; one per client address for the rest.

A request with a valid token spends its tenant's budget (`rate_limit`), whatever route it
asks for, unknown routes and wrong methods included. A request without one (no token, an
unknown or revoked token, the login form) spends its client address's smaller budget
(`anonymous_rate_limit`): a flood of invented tokens meets 429s after a few, each costing one
unique-index probe, while a valid token from the same address goes on spending its tenant's
budget (a tenant behind the same NAT as a flood is not locked out). Over budget: 429
problem+json with Retry-After. The probes, /metrics and the OpenAPI document are not counted.

The client address is the connection's, unless that is a proxy named in
`CALIB_TRUSTED_PROXIES`: then it is the first address of X-Forwarded-For, read from the right,
that is not a trusted proxy. Counters live in Redis when the broker is Redis (every API process
and machine shares them), in each process's memory on the embedded default.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from flask import request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from services.api.problems import Problem
from shared.runtime.settings import Settings
from shared.runtime.wakeups import redis_url

log = logging.getLogger("calib.api")

UNCOUNTED = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/ui/static/")
_NAMESPACE = "calib-rate"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Budgets:
    limiter: FixedWindowRateLimiter
    tenant: list[RateLimitItem]
    anonymous: list[RateLimitItem]
    proxies: list[Network]

    @classmethod
    def from_settings(cls, settings: Settings) -> Budgets:
        uri = redis_url(settings.broker) or "memory://"
        return cls(
            FixedWindowRateLimiter(storage_from_string(uri)),
            parse_many(settings.rate_limit),
            parse_many(settings.anonymous_rate_limit),
            trusted_networks(settings.trusted_proxies),
        )

    def spend_tenant(self, tenant: str) -> None:
        self._spend(self.tenant, "tenant:" + tenant, f"tenant {tenant} is over its request budget")

    def spend_address(self) -> None:
        self._spend(
            self.anonymous,
            "addr:" + budget_key(self.client_address()),
            "this address is over its budget for requests without a valid token",
        )

    def _spend(self, limits: list[RateLimitItem], key: str, detail: str) -> None:
        try:
            for limit in limits:
                if not self.limiter.hit(limit, _NAMESPACE, key):
                    reset = self.limiter.get_window_stats(limit, _NAMESPACE, key).reset_time
                    raise Problem(
                        429,
                        f"{detail} ({limit}); retry later",
                        slug="rate-limited",
                        retry_after=max(1, math.ceil(reset - time.time())),
                    )
        except Problem:
            raise
        except Exception as exc:
            log.warning("rate limit storage unavailable: %s", exc)

    def client_address(self) -> str:
        peer = request.remote_addr or "unknown"
        if not self.proxies or not _within(peer, self.proxies):
            return peer
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        for address in reversed(forwarded):
            if not _within(address, self.proxies):
                return address
        return forwarded[0] if forwarded else peer


def budget_key(address: str) -> str:
    """Whose budget an address spends: an IPv4 address its own, an IPv6 address its /64's (one
    subscriber is routinely given a /64, 2^64 addresses that would each have a budget)."""
    try:
        found = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{found}/64", strict=False))
    return str(found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) else found)


def trusted_networks(text: str) -> list[Network]:
    return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]


def _within(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def counted() -> bool:
    return not request.path.startswith(UNCOUNTED)
