"""Who is asking: a bearer token resolves to a tenant on every /v1 request and dashboard page.

There is no switch to turn this off: a service without a token answers 401 to
every /v1 route. The embedded default stays zero-setup because `calib up` mints
a local token and the CLI reads it (shared.store.tokens.ensure_local_token).

The dashboard (/ui) opens a session when a person pastes a token at /ui/login: the cookie
(HttpOnly, SameSite=Strict, `__Host-` and Secure over https) holds a random session id, never
the token; logging out deletes the session, and revoking the token ends all of its sessions.
The cookie is accepted for GET and HEAD only, so no other site can make a browser change
anything with it; everything that writes needs the Authorization header.
"""

from __future__ import annotations

from flask import current_app, g, redirect, request
from werkzeug.wrappers import Response

from services.api.extensions import current_services
from services.api.limits import Budgets, counted
from services.api.problems import Problem
from shared.store import tokens

# The session cookie's name: over https with the __Host- prefix (the browser then insists on Secure,
# Path=/ and no Domain, so no other host or path can set or read it).
COOKIE = "calib_session"
SECURE_COOKIE = "__Host-calib_session"
SAFE_METHODS = ("GET", "HEAD")
# Logout needs no tenant: it ends whatever session its cookie names.
OPEN_UI_PATHS = ("/ui/login", "/ui/logout", "/ui/static/")


def budgets_of() -> Budgets:
    found = current_app.extensions["calib-budgets"]
    assert isinstance(found, Budgets)
    return found


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def session_cookie() -> str | None:
    return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE) or None


def _tenant() -> tuple[str | None, bool]:
    """The tenant of the bearer token, or for reads of the dashboard's session; and whether any
    credential came with the request."""
    db = current_services().db
    token = bearer_token()
    if token is not None:
        return tokens.tenant_of(db, token), True
    cookie = session_cookie() if request.method in SAFE_METHODS else None
    if cookie is not None:
        return tokens.session_tenant(db, cookie), True
    return None, False


def authenticate() -> Response | None:
    """Before every request: set g.tenant for /v1 (or answer 401) and for the dashboard (or send
    the browser to the login page), spending the tenant's request budget or, without a valid
    token, the client address's (services.api.limits); health, readiness, metrics and docs stay open."""
    if not counted():
        return None
    budgets = budgets_of()
    tenant, presented = _tenant()
    if tenant is not None:
        budgets.spend_tenant(tenant)
        g.tenant = tenant
        return None
    budgets.spend_address()
    api, ui = request.path.startswith("/v1/"), request.path.startswith("/ui")
    if not (api or ui) or request.path.startswith(OPEN_UI_PATHS):
        return None
    if ui:
        return redirect("/ui/login")
    if not presented:
        raise Problem(
            401, "send Authorization: Bearer <token> (create one with `calib tokens create`)", slug="not-authenticated"
        )
    raise Problem(401, "the token is unknown or revoked", slug="not-authenticated")
