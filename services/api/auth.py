"""Who is asking: a bearer token resolves to a tenant on every /v1 request and dashboard page.

There is no switch to turn this off: a service without a token answers 401 to
every /v1 route. The embedded default stays zero-setup because `calib up` mints
a local token and the CLI reads it (shared.tokens.ensure_local_token).

The dashboard (/ui) keeps the token a person pasted at /ui/login in a cookie
(HttpOnly, SameSite=Strict), and its charts read /v1 with it. The cookie is
accepted for GET and HEAD only, so no other site can make a browser change
anything with it; everything that writes needs the Authorization header.
"""

from __future__ import annotations

from flask import current_app, g, redirect, request
from werkzeug.wrappers import Response

from services.api.extensions import current_services
from services.api.limits import Budgets, counted
from services.api.problems import Problem
from shared import tokens

COOKIE = "calib_token"
SAFE_METHODS = ("GET", "HEAD")
OPEN_UI_PATHS = ("/ui/login", "/ui/static/")


def budgets_of() -> Budgets:
    found = current_app.extensions["calib-budgets"]
    assert isinstance(found, Budgets)
    return found


def presented_token() -> str | None:
    """The bearer token of the request, or for reads the dashboard's cookie."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.method in SAFE_METHODS:
        return request.cookies.get(COOKIE) or None
    return None


def authenticate() -> Response | None:
    """Before every request: set g.tenant for /v1 (or answer 401) and for the dashboard (or send
    the browser to the login page), spending the tenant's request budget or, without a valid
    token, the client address's (services.api.limits); health, readiness, metrics and docs stay open."""
    if not counted():
        return None
    budgets = budgets_of()
    token = presented_token()
    tenant = tokens.tenant_of(current_services().db, token) if token else None
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
    if token is None:
        raise Problem(
            401, "send Authorization: Bearer <token> (create one with `calib tokens create`)", slug="not-authenticated"
        )
    raise Problem(401, "the token is unknown or revoked", slug="not-authenticated")
