"""Request budgets that hold (both backends; Redis counters on PostgreSQL + Redis): one budget per
tenant across every route, invented tokens limited per client address, proxies trusted only when
configured; and the dashboard's login refuses other sites' forms."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

from services.api.auth import COOKIE, SECURE_COOKIE


def test_400_invented_tokens_meet_429s(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("tenant-a", anonymous_rate_limit="50/minute")
    statuses = []
    for i in range(400):
        r = client.get("/v1/fits", headers={"Authorization": f"Bearer calib_invented{i:04d}"})
        statuses.append(r.status_code)
    assert statuses[:50] == [401] * 50
    assert statuses.count(429) == 350
    assert int(r.headers["Retry-After"]) >= 1 and r.mimetype == "application/problem+json"
    # A valid token spends its tenant's budget, not the address's.
    assert client.get("/v1/fits").status_code == 200


def test_a_tenants_budget_is_shared_by_every_route(make_client: Callable[..., FlaskClient]) -> None:
    a = make_client("tenant-a", rate_limit="5/minute")
    other_token_of_a = make_client("tenant-a", rate_limit="5/minute")
    fit = a.post("/v1/fits", json={"t_u": [1.0, 2.0], "t_c": [1.0, 3.0]}).get_json()
    answers = [
        a.get(f"/v1/fits/{fit['id']}").status_code,
        a.get("/v1/fits").status_code,
        a.get("/v1/usage").status_code,
        a.get("/v1/nowhere").status_code,
    ]
    assert answers == [200, 200, 200, 404]
    # The sixth request of the minute, on any route and with any of the tenant's tokens, is refused.
    r = other_token_of_a.delete("/v1/fits")
    assert r.status_code == 429 and "tenant tenant-a" in r.get_json()["detail"]
    assert make_client("tenant-b", rate_limit="5/minute").get("/v1/fits").status_code == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies(make_client: Callable[..., FlaskClient]) -> None:
    untrusted = make_client("tenant-a", anonymous_rate_limit="2/minute")
    for spoof in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        r = untrusted.get("/v1/fits", headers={"Authorization": "", "X-Forwarded-For": spoof})
    assert r.status_code == 429  # one address (the connection's) whatever the header says
    proxied = make_client("tenant-a", anonymous_rate_limit="2/minute", trusted_proxies="127.0.0.1/32")
    statuses = [
        proxied.get(
            "/v1/fits",
            headers={"Authorization": "", "X-Forwarded-For": f"198.51.100.{i}"},
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        ).status_code
        for i in range(5)
    ]
    assert statuses == [401] * 5  # five clients behind the proxy, one request each


def test_login_refuses_another_sites_form_and_cookies_are_secure_behind_https(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client("tenant-a", public_url="https://calib.example.org")
    token = client.environ_base.pop("HTTP_AUTHORIZATION").split()[1]
    evil = client.post("/ui/login", data={"token": token}, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and client.get_cookie(COOKIE) is None and client.get_cookie(SECURE_COOKIE) is None
    ok = client.post("/ui/login", data={"token": token}, headers={"Origin": "https://calib.example.org"})
    assert ok.status_code == 302
    set_cookie = ok.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{SECURE_COOKIE}=") and "Secure" in set_cookie and "HttpOnly" in set_cookie
    assert token not in set_cookie  # the cookie holds a session id, never the token
    same_host = client.post("/ui/login", data={"token": token}, headers={"Referer": "http://localhost/ui/login"})
    assert same_host.status_code == 302
