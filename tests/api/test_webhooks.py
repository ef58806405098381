"""Webhooks on both backends, in-process: which callback URLs are accepted, the signed deliveries
with their retries (the worker's delivery code against a real receiver on 127.0.0.1), the
attempts listed, and the addresses a delivery refuses to reach."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
import torch
from flask.testing import FlaskClient

from services.worker import runner
from services.worker import webhooks as delivering
from shared.contract.callbacks import AllowedHosts, url_problem
from shared.runtime.settings import Settings
from shared.store import deliveries as webhooks
from shared.store.models import Fit
from tests.in_process import run_batch, run_fit
from tests.receiver import receiving, trickling

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 500, "input_scale": 0.1}
# The test receivers listen on 127.0.0.1 at a port of their own, over plain http.
ALLOWED = {"webhook_allowed_hosts": "http://127.0.0.1:*, hooks.example.com", "webhook_retry_seconds": 0.2}


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
        secret = webhooks.secret_of(session, "tenant-a", svc.settings)
    assert all(r.signed_by(secret) for r in receiver.received)
    assert not receiver.received[0].signed_by(secret + "x")
    assert {r.headers["Calib-Event"] for r in receiver.received} == {"batch.ended"}

    listed = client.get("/v1/webhooks/deliveries").get_json()["items"]
    assert len(listed) == 1 and listed[0]["status"] == "delivered" and listed[0]["subject_id"] == batch_id
    assert [a["status_code"] for a in listed[0]["attempts"]] == [500, 500, 200]
    assert listed[0]["id"] == receiver.received[0].headers["Calib-Delivery"]
    assert make_client("tenant-b", **ALLOWED).get("/v1/webhooks/deliveries").get_json()["items"] == []


def test_the_write_that_ends_a_batch_or_a_fit_with_a_callback_finds_its_delivery_due(
    make_client: Callable[..., FlaskClient],
) -> None:
    """The worker publishes a delivery task when the write that ended fits finds a delivery due.
    Stamped by the worker's clock, a new delivery was not yet due by PostgreSQL's now() (the write's
    transaction's start): none was published, and it waited for the reconciler's round."""
    client = make_client(**ALLOWED)
    svc = client.application.extensions["calib"]
    with receiving([]) as receiver:
        # One at a time: a batch's chunk takes queued single fits too, and a delivery left due would
        # answer for the next.
        for path, body, delivered in (
            ("/v1/batches", {"fits": [FIT, FIT], "callback_url": receiver.url}, 1),
            ("/v1/fits", {**FIT, "callback_url": receiver.url}, 2),
        ):
            made = client.post(path, json=body).get_json()
            with svc.db.session() as session:
                chunk_id = session.scalar(
                    sa.select(Fit.chunk_id).where(sa.or_(Fit.batch_id == made["id"], Fit.id == made["id"]))
                )
            run = runner.run_chunk(svc.db, svc.settings, chunk_id, torch.device("cpu"))
            assert run.claimed and run.deliveries_due is True, (path, run)
            _deliver_until(client, delivered, receiver)  # none left due before the next
        assert [r.headers["Calib-Event"] for r in receiver.received] == ["batch.ended", "fit.ended"]


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
    allowed = AllowedHosts.parse("http://localhost:*")  # the name is allowed, its address (loopback) is not
    claimed = delivering.Claimed("d", "fit.ended", "http://localhost:9/hook", b"{}", webhooks.Secrets("whsec_aa"), 1)
    outcome = delivering.post(claimed, Settings(webhook_timeout_seconds=1.0), allowed)
    assert outcome.status_code is None and outcome.error == "the host resolves to an address this service may not reach"
    assert "127.0.0.1" not in (outcome.error or "")  # no internal addresses in what tenants read
    assert not AllowedHosts.parse("*").address(ipaddress.ip_address("10.1.2.3"))
    assert AllowedHosts.parse("10.0.0.0/8").address(ipaddress.ip_address("10.1.2.3"))
    assert AllowedHosts.parse("*").address(ipaddress.ip_address("93.184.215.14"))


@pytest.mark.parametrize(
    "url",
    [
        "http://8.8.8.8:6379/x",  # a public literal: naming one host admits no literal
        "https://8.8.8.8/x",
        "http://[2606:4700:4700::1111]:22/x",
        "https://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
        "https://[2002:a9fe:a9fe::1]/x",  # 6to4 of 169.254.169.254
        "https://[::ffff:169.254.169.254]/x",  # IPv4-mapped
        "https://[::a9fe:a9fe]/x",  # IPv4-compatible
        "https://hooks.example.com:8443/x",  # a port the entry does not name
        "http://hooks.example.com/x",  # plain http, not allowed by the entry
    ],
)
def test_literals_ports_and_plain_http_are_refused_with_only_a_name_allowed(url: str) -> None:
    assert url_problem(url, AllowedHosts.parse("hooks.example.com")) is not None


def test_what_an_entry_admits() -> None:
    listed = AllowedHosts.parse("10.0.0.0/8, [fd00::]/8:8443, http://hooks.example.com:*, *.example.org, 203.0.113.7")
    for url in (
        "https://10.1.2.3/x",
        "https://[fd12::1]:8443/x",
        "http://hooks.example.com:9000/x",
        "https://a.example.org/x",
        "https://203.0.113.7/x",
        "https://[::ffff:10.9.9.9]/x",  # a mapped address inside a listed network is that address
    ):
        assert url_problem(url, listed) is None, url
    for url in ("http://10.1.2.3/x", "https://[fd12::1]/x", "https://example.org/x", "https://203.0.113.8/x"):
        assert url_problem(url, listed) is not None, url
    anything = AllowedHosts.parse("*")
    assert url_problem("https://1.1.1.1/x", anything) is None  # "*" admits public literals
    assert url_problem("https://[64:ff9b::a9fe:a9fe]/x", anything) is not None  # not one carrying a private one
    assert not anything.address(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))
    assert not anything.address(ipaddress.ip_address("2002:a9fe:a9fe::1"))


def test_a_delivery_verifies_with_the_standard_webhooks_library_and_through_a_rotation(
    make_client: Callable[..., FlaskClient],
) -> None:
    from standardwebhooks.webhooks import Webhook

    client = make_client(**ALLOWED)
    svc = client.application.extensions["calib"]
    with svc.db.session(write=True) as session:
        old = webhooks.secret_of(session, "tenant-a", svc.settings)
    with receiving([]) as receiver:
        fit = client.post("/v1/fits", json={**FIT, "callback_url": receiver.url}).get_json()
        run_fit(client, fit["id"])
        _deliver_until(client, 1, receiver)
        with svc.db.session(write=True) as session:
            new = webhooks.rotate(session, "tenant-a", dt.timedelta(hours=1), svc.settings)
        second = client.post("/v1/fits", json={**FIT, "callback_url": receiver.url}).get_json()
        run_fit(client, second["id"])
        _deliver_until(client, 2, receiver)
    before, during = receiver.received
    assert old.startswith("whsec_") and new != old
    assert Webhook(old).verify(before.body, before.headers)["id"] == fit["id"]
    assert before.headers["webhook-id"] == before.headers["Calib-Delivery"]
    # During the overlap, two signatures: a receiver holding either secret verifies.
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(during.body, during.headers)["id"] == second["id"]
    assert Webhook(new).verify(during.body, during.headers)["id"] == second["id"]
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(webhooks.new_secret()).verify(during.body, during.headers)
    with svc.db.session(write=True) as session:
        assert webhooks.secrets_of(session, "tenant-a", svc.settings) == webhooks.Secrets(new, old)
        webhooks.rotate(session, "tenant-a", dt.timedelta(0), svc.settings)  # no overlap: the old one stops at once
        assert webhooks.secrets_of(session, "tenant-a", svc.settings).previous is None


def _claimed(url: str) -> delivering.Claimed:
    return delivering.Claimed("d", "fit.ended", url, b"{}", webhooks.Secrets(webhooks.new_secret()), 1)


def test_an_attempt_ends_within_its_deadline_whatever_the_receiver_does() -> None:
    settings = Settings(webhook_timeout_seconds=1.5)
    allowed = AllowedHosts.parse("http://127.0.0.1:*")
    with trickling(every=0.5, for_seconds=20) as trickler:  # a byte every 0.5 s, never a whole answer
        started = time.monotonic()
        outcome = delivering.post(_claimed(trickler.url), settings, allowed)
        took = time.monotonic() - started
    assert outcome.status_code is None and (outcome.error or "").startswith("timed out"), outcome
    assert 1.4 < took < 2.5 and outcome.seconds < 2.5  # the deadline, and the time to record it
    with trickling(huge=300 * 1_048_576) as huge:  # a 300 MB answer: 64 KiB of it is read
        outcome = delivering.post(_claimed(huge.url), settings, allowed)
    assert outcome.status_code == 200 and outcome.delivered and outcome.seconds < 1.5
    with receiving([]) as closed:
        port = closed.url.split(":")[2].split("/")[0]
    refused = delivering.post(_claimed(f"http://127.0.0.1:{port}/gone"), settings, allowed)
    assert refused.error == "connection refused"


def test_a_host_failing_again_and_again_is_put_off_without_attempts(make_client: Callable[..., FlaskClient]) -> None:
    # One attempt at a time, so the circuit opens after exactly two of them.
    client = make_client(**ALLOWED, webhook_breaker_failures=2, webhook_timeout_seconds=1.0, webhook_concurrency=1)
    svc = client.application.extensions["calib"]
    with receiving([500] * 50) as receiver:
        for _ in range(4):
            fit = client.post("/v1/fits", json={**FIT, "callback_url": receiver.url}).get_json()
            run_fit(client, fit["id"])
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            delivering.deliver_due(svc.db, svc.settings)
        for _ in range(5):
            delivering.deliver_due(svc.db, svc.settings)
            time.sleep(0.3)
    # Two failures open the host's circuit: the other deliveries are put off, not attempted.
    assert len(receiver.received) == 2
    listed = client.get("/v1/webhooks/deliveries").get_json()["items"]
    assert sum(len(item["attempts"]) for item in listed) == 2 and len(listed) == 4


def test_pending_deliveries_per_tenant_are_capped(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(**ALLOWED, webhook_max_pending_per_tenant=2)
    with receiving([]) as receiver:
        for _ in range(2):
            fit = client.post("/v1/fits", json={**FIT, "callback_url": receiver.url}).get_json()
            run_fit(client, fit["id"])  # ended: each owes a delivery, none attempted yet
        refused = client.post("/v1/fits", json={**FIT, "callback_url": receiver.url})
        assert refused.status_code == 429 and refused.get_json()["quota"] == "pending_webhooks"
        assert int(refused.headers["Retry-After"]) > 0
        assert client.post("/v1/fits", json=FIT).status_code == 202  # no callback: not refused
        _deliver_until(client, 2, receiver)
        time.sleep(0.3)
    assert client.post("/v1/fits", json={**FIT, "callback_url": receiver.url}).status_code == 202


def test_a_first_attempts_body_is_built_outside_the_claims_write_transaction(
    make_client: Callable[..., FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the body is built (a batch's verdicts can take a second), another writer can write the
    very delivery row: the claim's transaction, its row lock and SQLite's write lock, are over."""
    import sqlalchemy as sa

    from shared.store.models import WebhookDelivery

    client = make_client(**ALLOWED)
    svc = client.application.extensions["calib"]
    fit = client.post("/v1/fits", json={**FIT, "callback_url": "https://hooks.example.com/x"}).get_json()
    run_fit(client, fit["id"])
    built = []
    original = delivering._body

    def while_building(session: Any, event: str, subject_id: str, settings: Settings) -> str:
        with svc.db.session(write=True) as other:
            if other.get_bind().dialect.name == "postgresql":
                other.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            other.execute(
                sa.update(WebhookDelivery).where(WebhookDelivery.subject_id == subject_id).values(url=sa.text("url"))
            )
        built.append(subject_id)
        return original(session, event, subject_id, settings)

    monkeypatch.setattr(delivering, "_body", while_building)
    started = time.monotonic()
    claimed = delivering.claim(svc.db, svc.settings)
    assert claimed is not None and built == [fit["id"]] and json.loads(claimed.body)["id"] == fit["id"]
    assert time.monotonic() - started < 5  # no wait on a lock (SQLite would have waited its 60 s)


def test_secrets_are_sealed_in_the_database(make_client: Callable[..., FlaskClient]) -> None:
    """Under CALIB_SECRETS_KEY the database holds a Fernet token, never the secret; another key
    cannot open it; the delivery worker signs with the secret itself (verified by the library)."""
    import sqlalchemy as sa
    from cryptography.fernet import Fernet
    from standardwebhooks.webhooks import Webhook

    from shared.runtime import sealed
    from shared.store.models import Tenant

    key = Fernet.generate_key().decode()
    client = make_client(**ALLOWED, secrets_key=key)
    svc = client.application.extensions["calib"]
    with svc.db.session(write=True) as session:
        secret = webhooks.secret_of(session, "tenant-a", svc.settings)
        stored = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.name == "tenant-a"))
    assert stored is not None and stored.startswith(sealed.PREFIX) and secret not in stored
    assert secret.startswith("whsec_")
    with pytest.raises(sealed.SecretsKeyMissing):
        sealed.unseal(stored, svc.settings.model_copy(update={"secrets_key": Fernet.generate_key().decode()}))
    with receiving([]) as receiver:
        fit = client.post("/v1/fits", json={**FIT, "callback_url": receiver.url}).get_json()
        run_fit(client, fit["id"])
        _deliver_until(client, 1, receiver)
    got = receiver.received[0]
    assert Webhook(secret).verify(got.body, got.headers)["id"] == fit["id"]


def test_the_embedded_default_seals_with_a_key_file_of_its_own(tmp_path: Any) -> None:
    import stat

    from shared.runtime import sealed

    settings = Settings(data_dir=tmp_path / "calib")
    stored = sealed.seal("whsec_abc", settings)
    key_file = settings.data_dir / sealed.KEY_FILE
    assert stored.startswith(sealed.PREFIX) and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sealed.unseal(stored, settings) == "whsec_abc"
    assert sealed.unseal("whsec_written_before_sealing", settings) == "whsec_written_before_sealing"
