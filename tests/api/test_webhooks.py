"""Webhooks on both backends, in-process: which callback URLs are accepted, the signed deliveries
with their retries (the worker's delivery code against a real receiver on 127.0.0.1), the
attempts listed, and the addresses a delivery refuses to reach."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.worker import webhooks as delivering
from shared import webhooks
from shared.settings import Settings
from shared.webhooks import AllowedHosts
from tests.in_process import run_batch, run_fit
from tests.receiver import receiving

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 500, "input_scale": 0.1}
ALLOWED = {"webhook_allowed_hosts": "127.0.0.1, hooks.example.com", "webhook_retry_seconds": 0.2}


def _deliver_until(client: FlaskClient, count: int, receiver: Any, timeout: float = 30) -> None:
    svc = client.application.extensions["calib"]
    deadline = time.monotonic() + timeout
    while len(receiver.received) < count and time.monotonic() < deadline:
        delivering.deliver_due(svc.db, svc.settings)
        time.sleep(0.05)


def test_a_batch_callback_is_retried_until_a_2xx_and_signed(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(**ALLOWED)
    with receiving([500, 500, 200]) as receiver:
        r = client.post("/v1/batches", json={"fits": [FIT, FIT], "callback_url": receiver.url})
        assert r.status_code == 202, r.get_json()
        batch_id = r.get_json()["id"]
        run_batch(client, batch_id)
        _deliver_until(client, 3, receiver)
        time.sleep(0.5)
        _deliver_until(client, 4, receiver, timeout=1)  # nothing more: delivered
    assert len(receiver.received) == 3
    final = client.get(f"/v1/batches/{batch_id}").get_json()
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1 and json.loads(bodies.pop()) == final  # the same final body, each time
    svc = client.application.extensions["calib"]
    with svc.db.session(write=True) as session:
        secret = webhooks.secret_of(session, "tenant-a")
    assert all(r.signed_by(secret) for r in receiver.received)
    assert not receiver.received[0].signed_by(secret + "x")
    assert {r.headers["Calib-Event"] for r in receiver.received} == {"batch.ended"}

    listed = client.get("/v1/webhooks/deliveries").get_json()["items"]
    assert len(listed) == 1 and listed[0]["status"] == "delivered" and listed[0]["subject_id"] == batch_id
    assert [a["status_code"] for a in listed[0]["attempts"]] == [500, 500, 200]
    assert listed[0]["id"] == receiver.received[0].headers["Calib-Delivery"]
    assert make_client("tenant-b", **ALLOWED).get("/v1/webhooks/deliveries").get_json()["items"] == []


def test_a_fit_callback_delivers_the_fit(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(**ALLOWED)
    with receiving([]) as receiver:
        fit = client.post("/v1/fits", json={**FIT, "callback_url": receiver.url}).get_json()
        run_fit(client, fit["id"])
        _deliver_until(client, 1, receiver)
    assert json.loads(receiver.received[0].body) == client.get(f"/v1/fits/{fit['id']}").get_json()
    assert receiver.received[0].headers["Calib-Event"] == "fit.ended"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.net/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "ftp://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "not a url",
    ],
)
def test_a_callback_to_a_host_not_allowed_is_422_at_submission(
    make_client: Callable[..., FlaskClient], url: str
) -> None:
    client = make_client(**ALLOWED)
    r = client.post("/v1/fits", json={**FIT, "callback_url": url})
    assert r.status_code == 422 and r.get_json()["errors"][0]["loc"] == ["callback_url"], r.get_json()
    r = client.post("/v1/batches", json={"fits": [FIT], "callback_url": url})
    assert r.status_code == 422 and r.get_json()["errors"][0]["loc"] == ["callback_url"]
    csv = "series,t_u,t_c\nA,1,2\nA,2,3\n"
    r = client.post("/v1/batches", query_string={"callback_url": url}, data=csv, content_type="text/csv")
    assert r.status_code == 422 and r.get_json()["errors"][0]["loc"] == ["callback_url"]


def test_without_allowed_hosts_no_callback_is_accepted(client: FlaskClient) -> None:
    r = client.post("/v1/fits", json={**FIT, "callback_url": "https://hooks.example.com/x"})
    assert r.status_code == 422 and "allows" in r.get_json()["detail"]


def test_a_batch_callback_belongs_to_the_batch(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(**ALLOWED)
    r = client.post("/v1/batches", json={"fits": [{**FIT, "callback_url": "https://hooks.example.com/x"}]})
    assert r.status_code == 422 and r.get_json()["errors"][0]["loc"] == ["fits", 0, "callback_url"]


def test_a_name_resolving_to_an_address_not_allowed_is_never_reached() -> None:
    allowed = AllowedHosts.parse("localhost")  # the name is allowed, its address (loopback) is not
    claimed = delivering.Claimed("d", "fit.ended", "http://localhost:9/hook", b"{}", "s", 1)
    outcome = delivering.post(claimed, Settings(webhook_timeout_seconds=1.0), allowed)
    assert outcome.status_code is None and "not allowed" in (outcome.error or "")
    assert AllowedHosts.parse("*").host("anything.example.org")
    assert not AllowedHosts.parse("*").address(ipaddress.ip_address("10.1.2.3"))
    assert AllowedHosts.parse("10.0.0.0/8").address(ipaddress.ip_address("10.1.2.3"))
    assert AllowedHosts.parse("*").address(ipaddress.ip_address("93.184.215.14"))
