"""The small promises of a well-run job API, each on both backends: a finished batch is not
cancelled, an Idempotency-Key compares the request's meaning, a committed fit always gets its
202, CSV from spreadsheets is read, a series' rows belong together, metrics label only known
methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from shared.runtime import failpoints
from shared.store.models import Batch, Fit

FIT = {
    "t_u": [35.7, 55.9, 58.2, 81.9],
    "t_c": [0.5, 14.0, 15.0, 28.0],
    "epochs": 5000,
    "labels": {"sensor": "A17", "site": "north"},
    "init": {"w": 1, "b": 0},
}


def test_cancelling_a_batch_with_nothing_left_to_run_is_409(client: FlaskClient) -> None:
    batch = client.post("/v1/batches", json={"fits": [FIT]}).get_json()
    assert client.post(f"/v1/batches/{batch['id']}/cancel").status_code == 202
    again = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert client.get(f"/v1/batches/{batch['id']}").get_json()["status"] == "cancelled"


def test_an_idempotency_key_compares_the_request_not_its_spelling(client: FlaskClient) -> None:
    first = client.post("/v1/fits", json=FIT, headers={"Idempotency-Key": "k"})
    respelled = {
        "init": {"b": 0.0, "w": 1.0},
        "labels": {"site": "north", "sensor": "A17"},
        "epochs": 5000,
        "t_c": [0.5, 14, 15, 28],
        "t_u": [35.7, 55.9, 58.2, 81.9],
    }
    again = client.post("/v1/fits", json=respelled, headers={"Idempotency-Key": "k"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert client.post("/v1/fits", json=FIT | {"epochs": 10}, headers={"Idempotency-Key": "k"}).status_code == 409
    batch = {"defaults": {"epochs": 100}, "fits": [FIT | {"epochs": 100}]}
    b1 = client.post("/v1/batches", json=batch, headers={"Idempotency-Key": "b"})
    b2 = client.post("/v1/batches", json={"fits": [respelled | {"epochs": 100}]}, headers={"Idempotency-Key": "b"})
    assert (b1.status_code, b2.status_code) == (202, 200) and b1.get_json()["id"] == b2.get_json()["id"]


def test_only_a_keyed_request_is_fingerprinted_and_a_key_matches_only_keyed_requests(client: FlaskClient) -> None:
    # The fingerprint's one reader is the key (a 10,000-fit batch's fingerprint costs about 0.2 s).
    batch = {"fits": [FIT, FIT | {"epochs": 10}]}
    plain_fit = client.post("/v1/fits", json=FIT).get_json()
    plain_batch = client.post("/v1/batches", json=batch).get_json()
    keyed_fit = client.post("/v1/fits", json=FIT, headers={"Idempotency-Key": "f"})
    keyed_batch = client.post("/v1/batches", json=batch, headers={"Idempotency-Key": "b"})
    assert (keyed_fit.status_code, keyed_batch.status_code) == (202, 202)
    assert keyed_fit.get_json()["id"] != plain_fit["id"] and keyed_batch.get_json()["id"] != plain_batch["id"]
    with client.application.extensions["calib"].db.session() as session:
        digests = dict(session.execute(sa.select(Fit.id, Fit.request_digest).where(Fit.batch_id.is_(None))).all())
        batch_digests = dict(session.execute(sa.select(Batch.id, Batch.request_digest)).all())
    assert digests[plain_fit["id"]] is None and len(digests[keyed_fit.get_json()["id"]] or "") == 64
    assert batch_digests[plain_batch["id"]] is None and len(batch_digests[keyed_batch.get_json()["id"]] or "") == 64
    replayed = client.post("/v1/batches", json=batch, headers={"Idempotency-Key": "b"})
    assert replayed.status_code == 200 and replayed.get_json()["id"] == keyed_batch.get_json()["id"]
    assert client.post("/v1/batches", json={"fits": [FIT]}, headers={"Idempotency-Key": "b"}).status_code == 409


def test_a_committed_fit_is_202_even_if_its_publish_fails(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # No wake-up pending (an earlier test's would make this one skip its publish, rightly): it publishes.
    client.application.extensions["calib"].pending.clear()
    monkeypatch.setenv("CALIB_FAILPOINTS", "skip_publish")
    failpoints._active.cache_clear()
    try:
        r = client.post("/v1/fits", json=FIT)
    finally:
        monkeypatch.delenv("CALIB_FAILPOINTS")
        failpoints._active.cache_clear()
    assert r.status_code == 202
    db = client.application.extensions["calib"].db
    with db.session() as session:
        fit = session.get(Fit, r.get_json()["id"])
        # Its stamp cleared, so the reconciler publishes it within undispatched_after_seconds.
        assert fit is not None and fit.status == "queued" and fit.dispatched_at is None


def test_csv_with_a_byte_order_mark_and_series_apart(client: FlaskClient) -> None:
    rows = "series,t_u,t_c\r\nA,1,3\r\nA,2,5\r\nB,1,1\r\nB,3,2\r\n"
    r = client.post("/v1/batches", data=("\ufeff" + rows).encode(), content_type="text/csv")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.get_json()["count"] == 2
    apart = "series,t_u,t_c\nA,1,3\nB,1,1\nA,2,5\nB,3,2\n"
    r = client.post("/v1/batches", data=apart, content_type="text/csv")
    assert r.status_code == 422
    assert r.get_json()["errors"][0]["loc"] == ["series", "A"]


def test_metrics_label_only_known_methods(make_client: Callable[..., Any]) -> None:
    client = make_client()
    client.open("/v1/fits", method="BREW")
    client.open("/nowhere", method="GET")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="BREW"' not in text and 'method="OTHER"' in text
    assert 'route="unmatched"' in text and "/nowhere" not in text
    db = client.application.extensions["calib"].db
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Fit)) == 0


def test_a_csv_batch_takes_epochs_auto_and_its_bounds(client: FlaskClient) -> None:
    rows = "series,t_u,t_c\nA,1,3\nA,2,5\nA,4,8\n"
    r = client.post(
        "/v1/batches?epochs=auto&max_epochs=20000&convergence_tolerance=0.05", data=rows, content_type="text/csv"
    )
    assert r.status_code == 202, r.get_data(as_text=True)
    fit = client.get(f"/v1/batches/{r.get_json()['id']}/fits").get_json()["items"][0]
    assert fit["params"]["epochs_auto"] is True and fit["epochs"] == 20000
    assert fit["params"]["convergence_tolerance"] == 0.05
    r = client.post("/v1/fits", json={"t_u": [1.0, 2.0], "t_c": [1.0, 2.0], "epochs": 10, "max_epochs": 100})
    assert r.status_code == 422 and r.get_json()["errors"][0]["loc"] == ["max_epochs"]


def test_a_query_default_that_is_not_a_number_is_named_in_words(client: FlaskClient) -> None:
    # "epochs: not a int" before: the Python type's name where the user's word belongs.
    rows = "series,t_u,t_c\nA,1,3\nA,2,5\nA,4,8\n"
    for query, detail in (
        ("epochs=5.0", "epochs: not an integer ('5.0')"),
        ("learning_rate=fast", "learning_rate: not a number ('fast')"),
    ):
        r = client.post(f"/v1/batches?{query}", data=rows, content_type="text/csv")
        name = query.split("=")[0]
        assert (r.status_code, r.get_json()["detail"]) == (422, detail), r.get_json()
        assert r.get_json()["errors"][0]["loc"] == ["query", name]
