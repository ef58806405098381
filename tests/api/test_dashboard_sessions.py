"""Dashboard sessions, both backends, in-process: the cookie holds a session id (never the token),
logout and token revocation end the session wherever its cookie was copied, sessions expire, and
every dashboard page carries the security headers (a content policy with no inline code, nosniff,
no-store)."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask.testing import FlaskClient

from services.api.auth import COOKIE
from services.api.ui import CONTENT_SECURITY_POLICY
from shared.store import tokens
from tests.in_process import run_fit

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "input_scale": 0.1}


def _logged_in(make_client: Callable[..., FlaskClient], **settings: object) -> tuple[FlaskClient, str]:
    client = make_client("tenant-a", **settings)
    token = client.environ_base.pop("HTTP_AUTHORIZATION").split()[1]
    assert client.post("/ui/login", data={"token": token}).status_code == 302
    return client, token


def _with_cookie(make_client: Callable[..., FlaskClient], value: str, **settings: object) -> FlaskClient:
    """Another browser holding a copy of the cookie."""
    other = make_client("tenant-b", **settings)
    other.environ_base.pop("HTTP_AUTHORIZATION")
    other.set_cookie(COOKIE, value)
    return other


def test_logout_ends_the_session_wherever_its_cookie_went(make_client: Callable[..., FlaskClient]) -> None:
    client, token = _logged_in(make_client)
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None and cookie.value != token and token not in cookie.value
    copy = _with_cookie(make_client, cookie.value)
    assert copy.get("/ui/").status_code == 200
    assert client.post("/ui/logout").status_code == 302
    assert client.get("/ui/").status_code == 302  # to the login page
    assert copy.get("/ui/").status_code == 302 and copy.get("/v1/fits").status_code == 401


def test_revoking_the_token_ends_its_sessions(make_client: Callable[..., FlaskClient]) -> None:
    client, token = _logged_in(make_client)
    assert client.get("/ui/").status_code == 200
    svc = client.application.extensions["calib"]
    assert tokens.revoke(svc.db, token[: tokens.PREFIX_CHARS])
    assert client.get("/ui/").status_code == 302


def test_a_session_expires(make_client: Callable[..., FlaskClient]) -> None:
    client, _ = _logged_in(make_client, ui_session_hours=1.0 / 3600)
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None and client.get("/ui/").status_code == 200
    time.sleep(1.3)
    # A copy that kept the cookie past its max-age: the service itself refuses the expired session.
    assert _with_cookie(make_client, cookie.value, ui_session_hours=1.0 / 3600).get("/ui/").status_code == 302


def test_every_dashboard_page_carries_the_security_headers(make_client: Callable[..., FlaskClient]) -> None:
    client, token = _logged_in(make_client)
    fit_id = client.post("/v1/fits", json=FIT, headers={"Authorization": f"Bearer {token}"}).get_json()["id"]
    run_fit(client, fit_id)
    batch = client.post("/v1/batches", json={"fits": [FIT]}, headers={"Authorization": f"Bearer {token}"})
    pages = ["/ui/", "/ui/login", "/ui/instruments", f"/ui/fits/{fit_id}", f"/ui/fits/{fit_id}/report"]
    pages.append(f"/ui/batches/{batch.get_json()['id']}")
    ui_rules = {rule.rule for rule in client.application.url_map.iter_rules() if rule.rule.startswith("/ui")}
    assert ui_rules - {"/ui/static/<path:filename>", "/ui/logout"} <= {
        "/ui/",
        "/ui/login",
        "/ui/instruments",
        "/ui/instruments/<instrument_id>",
        "/ui/fits/<fit_id>",
        "/ui/fits/<fit_id>/report",
        "/ui/batches/<batch_id>",
    }, "a new dashboard page: add it to the pages above"
    for page in pages:
        answer = client.get(page)
        assert answer.status_code == 200, (page, answer.status_code)
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, page
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert answer.headers["X-Content-Type-Options"] == "nosniff", page
        assert answer.headers["Cache-Control"] == "no-store", page
        assert "<script>" not in answer.get_data(as_text=True) and " on" + "change=" not in answer.get_data(
            as_text=True
        )


def test_the_report_of_a_big_fit_shows_a_bounded_page(make_client: Callable[..., FlaskClient]) -> None:
    """300,000 readings: the table shows the first 1,000, the chart 2,000 spread over all, and says so."""
    import numpy as np

    client, token = _logged_in(make_client)
    t_u = np.linspace(20, 90, 300_000)
    body = {"t_u": t_u.tolist(), "t_c": (0.5 * t_u - 17).tolist(), "epochs": 5, "input_scale": 0.1}
    fit_id = client.post("/v1/fits", json=body, headers={"Authorization": f"Bearer {token}"}).get_json()["id"]
    run_fit(client, fit_id)
    page = client.get(f"/ui/fits/{fit_id}/report").get_data(as_text=True)
    assert page.count("<tr><td>") == 1000 and "The first 1000 of 300000 readings" in page
    assert len(page) < 1_000_000  # was 31 MB of HTML
