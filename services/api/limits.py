"""Per-token rate limits (Flask-Limiter): 429 problem+json with Retry-After.

Counters live in Redis when the broker is Redis, so every gunicorn process and
every API machine shares them; the embedded default counts in memory per process.
"""

from __future__ import annotations

import hashlib

from flask import Flask, request
from flask_limiter import Limiter

from services.api import openapi, ops
from services.api.auth import presented_token
from shared.settings import Settings


def rate_limit_key() -> str:
    # Keyed by the credential (as a digest: the plaintext token never reaches Redis),
    # so a bad-token flood is limited too; requests without one share their address's bucket.
    token = presented_token() or request.headers.get("Authorization", "")
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "unknown")


def install_rate_limits(app: Flask, settings: Settings) -> Limiter:
    broker = settings.broker
    limiter = Limiter(
        rate_limit_key,
        app=app,
        default_limits=[settings.rate_limit],
        storage_uri=broker if broker.startswith(("redis://", "rediss://")) else "memory://",
        key_prefix="calib-rate",
        headers_enabled=True,
        # Redis down must not turn every request into a 500: the limit lapses, and the
        # submission itself answers 503 if it cannot be stored.
        swallow_errors=True,
    )
    # Probes and documentation stay reachable whatever a client does.
    limiter.exempt(ops.bp)
    limiter.exempt(openapi.bp)
    return limiter
