"""Authentication and tenants: no token no data, revocation at once, and another tenant's
object answers exactly like an unknown id on every route that takes an id (OWASP API1)."""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from shared.runtime.settings import Settings
from shared.store import tokens

GOOD: dict[str, Any] = {"t_u": [35.7, 55.9, 58.2], "t_c": [0.5, 14.0, 15.0]}
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def id_routes(client: FlaskClient) -> list[tuple[str, str, str]]:
    """(method, rule, id parameter) of every /v1 route that takes an id, read from the app itself,
    so a route added later is in the matrix without anyone remembering to add it."""
    found = []
    for rule in client.application.url_map.iter_rules():
        if rule.rule.startswith("/v1/") and rule.arguments:
            (param,) = rule.arguments
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((method, rule.rule, param))
    return found


def call(client: FlaskClient, method: str, rule: str, param: str, object_id: str, query: str = "") -> Any:
    url = re.sub(rf"<(\w+:)?{param}>", object_id, rule) + query
    # A body each route takes, so that what answers is the id's lookup, not the body's check.
    body = {"t_c": [50.0]} if rule.endswith("/inverse") else {"t_u": [50.0]}
    return client.open(url, method=method, json=body if method == "POST" else None)


def test_v1_needs_a_token_and_probes_do_not(make_client: Any) -> None:
    client = make_client()
    anonymous = client.application.test_client()
    for path in ("/v1/fits", "/v1/batches/" + UNKNOWN, "/v1/fits/" + UNKNOWN):
        r = anonymous.get(path)
        assert r.status_code == 401 and r.mimetype == "application/problem+json"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = anonymous.get("/v1/fits", headers={"Authorization": "Bearer calib_not-a-real-token"})
    assert r.status_code == 401 and "unknown or revoked" in r.get_json()["detail"]
    r = anonymous.post("/v1/fits", json=GOOD, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert anonymous.get(path).status_code == 200


def test_revocation_takes_effect_on_the_next_request(backend: Settings, make_client: Any) -> None:
    client = make_client()
    db = client.application.extensions["calib"].db
    minted = tokens.create(db, "tenant-r")
    headers = {"Authorization": f"Bearer {minted.token}"}
    assert client.get("/v1/fits", headers=headers).status_code == 200
    assert tokens.revoke(db, minted.prefix)
    assert client.get("/v1/fits", headers=headers).status_code == 401
    assert not tokens.revoke(db, minted.prefix)  # already revoked


def test_another_tenants_objects_answer_like_unknown_ids(make_client: Any) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    fit = alice.post("/v1/fits", json={**GOOD, "instrument": "TT-alice"}).get_json()
    batch = alice.post("/v1/batches", json={"fits": [GOOD, GOOD]}).get_json()
    owned = {"fit_id": fit["id"], "batch_id": batch["id"], "instrument_id": "TT-alice"}
    routes = id_routes(bob)
    assert {rule for _, rule, _ in routes} >= {
        "/v1/fits/<fit_id>",
        "/v1/fits/<fit_id>/losses",
        "/v1/fits/<fit_id>/cancel",
        "/v1/fits/<fit_id>/predict",
        "/v1/fits/<fit_id>/inverse",
        "/v1/batches/<batch_id>",
        "/v1/batches/<batch_id>/fits",
        "/v1/batches/<batch_id>/cancel",
        "/v1/instruments/<instrument_id>",
        "/v1/instruments/<instrument_id>/predict",
    }
    for method, rule, param in routes:
        for query in ("", "?format=csv"):
            theirs = call(bob, method, rule, param, owned[param], query)
            unknown = call(bob, method, rule, param, UNKNOWN, query)
            assert theirs.status_code == unknown.status_code == 404, (method, rule, query)
            body = theirs.get_data(as_text=True).replace(owned[param], UNKNOWN)
            assert body == unknown.get_data(as_text=True), (method, rule, query)
    # Bob's cancel did nothing to Alice's objects.
    assert alice.get(f"/v1/fits/{fit['id']}").get_json()["status"] == "queued"
    assert alice.get(f"/v1/batches/{batch['id']}").get_json()["counts"]["queued"] == 2


def test_lists_and_idempotency_keys_never_cross_tenants(make_client: Any) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    key = {"Idempotency-Key": "nightly-run-1"}
    mine = alice.post("/v1/fits", json=GOOD, headers=key).get_json()
    batch = alice.post("/v1/batches", json={"fits": [GOOD]}, headers=key).get_json()
    assert bob.get("/v1/fits").get_json()["items"] == []
    assert bob.get(f"/v1/fits?batch_id={batch['id']}").get_json()["items"] == []
    # The same key in another tenant is another request: a new fit, not Alice's replayed.
    theirs = bob.post("/v1/fits", json=GOOD, headers=key)
    assert theirs.status_code == 202 and theirs.get_json()["id"] != mine["id"]
    assert bob.post("/v1/batches", json={"fits": [GOOD]}, headers=key).status_code == 202
    assert [f["id"] for f in alice.get("/v1/fits").get_json()["items"]].count(mine["id"]) == 1
    assert theirs.get_json()["id"] not in {f["id"] for f in alice.get("/v1/fits").get_json()["items"]}


def _dump(settings: Settings) -> str:
    url = sa.make_url(settings.database)
    if url.drivername.startswith("sqlite"):
        with sqlite3.connect(str(url.database)) as conn:
            return "\n".join(conn.iterdump())
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run(["pg_dump", "--data-only", plain], check=True, capture_output=True, text=True).stdout


def test_no_plaintext_token_in_a_database_dump_or_the_logs(
    backend: Settings, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    db = client.application.extensions["calib"].db
    caplog.set_level(logging.DEBUG)
    minted = [tokens.create(db, f"tenant-{i % 7}") for i in range(100)]
    for m in minted[:20]:  # through the request path too, which is where a token could be logged
        assert client.get("/v1/fits", headers={"Authorization": f"Bearer {m.token}"}).status_code == 200
    dump = _dump(backend)
    assert minted[0].prefix in dump  # the dump is real and holds the tokens' rows
    secrets = [m.token[len(m.prefix) :] for m in minted]  # the part never stored
    assert not [s for s in secrets if s in dump]
    assert not [s for s in secrets if s in caplog.text]
