"""Who is asking: `Authorization: Bearer <token>` resolves to a tenant on every /v1 request.

There is no switch to turn this off: a service without a token answers 401 to
every /v1 route. The embedded default stays zero-setup because `calib up` mints
a local token and the CLI reads it (shared.tokens.ensure_local_token).
"""

from __future__ import annotations

from flask import g, request

from services.api.extensions import services
from services.api.problems import Problem
from shared import tokens


def authenticate() -> None:
    """Before every request: under /v1, set g.tenant or answer 401; health, readiness and docs stay open."""
    if not request.path.startswith("/v1/"):
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "send Authorization: Bearer <token> (create one with `calib tokens create`)",
                      slug="not-authenticated")
    tenant = tokens.tenant_of(services().db, token.strip())
    if tenant is None:
        raise Problem(401, "the token is unknown or revoked", slug="not-authenticated")
    g.tenant = tenant
