"""The /v1/fits contract of API.md: valid requests, and every error status these routes can give."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from flask.testing import FlaskClient

from tests.in_process import run_fit

GOOD: dict[str, Any] = {"t_u": [35.7, 55.9, 58.2], "t_c": [0.5, 14.0, 15.0]}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


def test_submit_returns_202_queued_with_location(client: FlaskClient) -> None:
    r = client.post("/v1/fits", json={**GOOD, "labels": {"sensor": "A17"}, "input_scale": 0.1})
    assert r.status_code == 202
    fit = r.get_json()
    assert r.headers["Location"] == f"/v1/fits/{fit['id']}"
    assert fit["status"] == "queued" and fit["epochs"] == 5000 and fit["n_points"] == 3
    assert fit["params"] == {
        "learning_rate": 0.01,
        "init": {"w": 1.0, "b": 0.0},
        "input_scale": 0.1,
        "normalize": "scale",
        "model": {"kind": "line"},
        "optimizer": "gd",
        "gradient": "analytic",
        "optimizer_options": {"gradient": "analytic"},
        "convergence_tolerance": 0.01,
        "epochs_auto": False,
    }
    assert fit["labels"] == {"sensor": "A17"} and fit["result"] is None
    assert client.get(fit["links"]["self"]).get_json() == fit


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"t_u": [1, "2", 3], "t_c": [1, 2, 3]}, ["t_u", 1]),
        ({"t_u": [1, 2, 3], "t_c": [1, 2]}, ["t_c"]),
        ({"t_u": [], "t_c": []}, ["t_u"]),
        ({"t_u": [1.0], "t_c": [1.0]}, ["t_u"]),
        ({"t_c": [1, 2]}, ["t_u"]),
        ({**GOOD, "epochs": 0}, ["epochs"]),
        ({**GOOD, "epochs": 2.5}, ["epochs"]),
        ({**GOOD, "epochs": 10_000_000}, ["epochs"]),
        ({**GOOD, "learning_rate": -1}, ["learning_rate"]),
        ({**GOOD, "learning_rate": "0.1"}, ["learning_rate"]),
        ({**GOOD, "input_scale": 0}, ["input_scale"]),
        ({**GOOD, "optimizer": "newton"}, ["optimizer"]),
        ({**GOOD, "init": {"w": True}}, ["init", "w"]),
        ({**GOOD, "labels": {"a": 1}}, ["labels", "a"]),
        ({**GOOD, "color": "red"}, ["color"]),
    ],
)
def test_invalid_fields_get_422_naming_the_field(client: FlaskClient, body: dict[str, Any], loc: list[Any]) -> None:
    err = problem(client.post("/v1/fits", json=body), 422)
    assert err["errors"][0]["loc"] == loc


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_get_422(client: FlaskClient, literal: str) -> None:
    raw = f'{{"t_u": [1, {literal}, 3], "t_c": [1, 2, 3]}}'
    err = problem(client.post("/v1/fits", data=raw, content_type="application/json"), 422)
    assert err["errors"][0]["loc"] == ["t_u", 1]


@pytest.mark.parametrize("raw", ["{bad json", "", "[1, 2"])
def test_malformed_json_gets_400(client: FlaskClient, raw: str) -> None:
    problem(client.post("/v1/fits", data=raw, content_type="application/json"), 400)


def test_not_an_object_gets_422(client: FlaskClient) -> None:
    problem(client.post("/v1/fits", json=[1, 2, 3]), 422)


def test_wrong_media_type_gets_415(client: FlaskClient) -> None:
    problem(client.post("/v1/fits", data="t_u=1", content_type="application/x-www-form-urlencoded"), 415)


def test_too_many_points_gets_413(make_client: Any) -> None:
    client = make_client(max_points_per_fit=5)
    err = problem(client.post("/v1/fits", json={"t_u": [1] * 6, "t_c": [1] * 6}), 413)
    assert err["errors"][0]["loc"] == ["t_u"]


def test_body_over_the_limit_gets_413(make_client: Any) -> None:
    problem(make_client(max_body_bytes=100).post("/v1/fits", json={"t_u": [1.0] * 50, "t_c": [1.0] * 50}), 413)


def test_unknown_fit_is_404_everywhere(client: FlaskClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    problem(client.get(f"/v1/fits/{missing}"), 404)
    problem(client.get(f"/v1/fits/{missing}/losses"), 404)
    problem(client.post(f"/v1/fits/{missing}/cancel"), 404)
    problem(client.post(f"/v1/fits/{missing}/predict", json={"t_u": [1]}), 404)


def test_wrong_method_is_405(client: FlaskClient) -> None:
    problem(client.delete("/v1/fits"), 405)


def test_idempotency_key_replays_or_conflicts(client: FlaskClient) -> None:
    first = client.post("/v1/fits", json=GOOD, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/fits", json=GOOD, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    problem(client.post("/v1/fits", json={**GOOD, "epochs": 7}, headers={"Idempotency-Key": "k1"}), 409)
    listed = client.get("/v1/fits").get_json()["items"]
    assert len(listed) == 1


def test_cancel_a_queued_fit_then_409(client: FlaskClient) -> None:
    fit = client.post("/v1/fits", json=GOOD).get_json()
    r = client.post(f"/v1/fits/{fit['id']}/cancel")
    assert r.status_code == 202 and r.get_json()["status"] == "cancelled"
    problem(client.post(f"/v1/fits/{fit['id']}/cancel"), 409)


def test_predict_needs_a_succeeded_fit(client: FlaskClient) -> None:
    fit = client.post("/v1/fits", json=GOOD).get_json()
    problem(client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [1.0]}), 409)


def test_a_prediction_past_float64_is_a_409_naming_the_reading(client: FlaskClient) -> None:
    steep = {"t_u": GOOD["t_u"], "t_c": [1000.0 * u for u in GOOD["t_u"]], "input_scale": 0.1, "learning_rate": "auto"}
    fit = client.post("/v1/fits", json=steep).get_json()
    run_fit(client, fit["id"])
    assert client.get(f"/v1/fits/{fit['id']}").get_json()["status"] == "succeeded"
    body = problem(client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [50.0, -1e306]}), 409)
    assert body["type"].endswith("prediction-out-of-range") and body["errors"][0]["loc"] == ["t_u", 1]


def test_list_is_newest_first_with_a_cursor_and_filters(client: FlaskClient) -> None:
    ids = [client.post("/v1/fits", json={**GOOD, "labels": {"n": str(i)}}).get_json()["id"] for i in range(5)]
    page = client.get("/v1/fits?limit=2").get_json()
    seen = [f["id"] for f in page["items"]]
    while page["next"]:
        page = client.get(page["next"]).get_json()
        seen += [f["id"] for f in page["items"]]
    assert seen == ids[::-1]
    only = client.get("/v1/fits?label=n:3").get_json()["items"]
    assert [f["id"] for f in only] == [ids[3]]
    assert client.get("/v1/fits?status=succeeded").get_json()["items"] == []
    assert problem(client.get("/v1/fits?status=bogus"), 422)["errors"][0]["loc"] == ["query", "status"]
    problem(client.get("/v1/fits?limit=0"), 422)
    problem(client.get("/v1/fits?cursor=!!!"), 422)


def test_losses_of_a_queued_fit_are_an_empty_page(client: FlaskClient) -> None:
    fit = client.post("/v1/fits", json=GOOD).get_json()
    page = client.get(f"/v1/fits/{fit['id']}/losses").get_json()
    assert page == {"fit_id": fit["id"], "epochs_done": 0, "start": 1, "loss": [], "next": None}
    problem(client.get(f"/v1/fits/{fit['id']}/losses?start=0"), 422)


def test_openapi_and_docs_are_served(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    for path in [
        "/v1/fits",
        "/v1/fits/{fit_id}",
        "/v1/fits/{fit_id}/losses",
        "/v1/fits/{fit_id}/cancel",
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/fits",
        "/v1/batches/{batch_id}/cancel",
        "/healthz",
        "/readyz",
    ]:
        assert path in doc["paths"]
    assert set(doc["components"]["schemas"]["FitCreate"]["properties"]) >= {
        "t_u",
        "t_c",
        "epochs",
        "learning_rate",
        "init",
        "input_scale",
        "optimizer",
        "labels",
    }
    assert client.get("/docs").status_code == 200


# The fields API.md names, the toolbox's included, in the schemas that carry them.
API_MD_FIELDS = {
    "FitCreate": {
        "t_u",
        "t_c",
        "epochs",
        "learning_rate",
        "init",
        "input_scale",
        "optimizer",
        "labels",
        "normalize",
        "gradient",
        "delta",
        "momentum",
        "betas",
        "eps",
        "validation",
        "early_stopping",
    },
    "Params": {
        "learning_rate",
        "init",
        "input_scale",
        "optimizer",
        "normalize",
        "gradient",
        "momentum",
        "betas",
        "eps",
        "validation",
        "early_stopping",
    },
    "FitPublic": {
        "id",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "epochs",
        "epochs_done",
        "n_points",
        "params",
        "labels",
        "batch_id",
        "result",
        "diverged_at_epoch",
        "error",
        "links",
        "stop_reason",
        "lr_max",
        "condition_number",
        "warnings",
        "losses_pruned",
    },
    "Result": {
        "w",
        "b",
        "loss",
        "w_raw",
        "b_raw",
        "w_opt",
        "b_opt",
        "gap",
        "se_w",
        "se_b",
        "cov_wb",
        "r2",
        "residual_sd",
        "val_loss",
        "last_epoch_loss",
        "last_epoch_val_loss",
    },
    "LossPage": {"fit_id", "epochs_done", "start", "loss", "val_loss", "next"},
    "LossBucket": {"first_epoch", "last_epoch", "min", "max", "last", "val_min", "val_max", "val_last"},
    "Prediction": {"t_c", "lower", "upper"},
    "BatchPublic": {"id", "count", "status", "counts", "created_at", "finished_at"},
    "Usage": {"tenant", "fits", "stored_loss_bytes", "in_flight_fit_epochs", "quotas"},
    "Problem": {"type", "title", "status", "detail", "errors", "quota", "limit", "requested", "remaining"},
}


def test_the_openapi_document_has_every_field_of_api_md_each_with_an_example(client: FlaskClient) -> None:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name, fields in API_MD_FIELDS.items():
        assert set(schemas[name]["properties"]) >= fields, (name, fields - set(schemas[name]["properties"]))
    missing = [
        (name, prop)
        for name, schema in schemas.items()
        for prop, spec in schema.get("properties", {}).items()
        if "example" not in spec and "examples" not in spec
    ]
    assert missing == []
    # The examples are true to their schemas (jsonschema_rs: schemathesis's validator).
    checked = 0
    for name, schema in schemas.items():
        if "example" in schema:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
            )
            assert [e.message for e in validator.iter_errors(schema["example"])] == [], name
            checked += 1
    assert checked >= 15


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json()["status"] == "ready"


@pytest.mark.parametrize(
    "limit, fits",
    [
        ({"max_fits_per_batch": 3}, [GOOD] * 4),
        ({"max_points_per_batch": 8}, [GOOD] * 3),
    ],
)
def test_batch_over_a_limit_gets_413_and_stores_nothing(
    make_client: Any, limit: dict[str, int], fits: list[dict[str, Any]]
) -> None:
    client = make_client(**limit)
    err = problem(client.post("/v1/batches", json={"fits": fits}), 413)
    assert err["errors"][0]["loc"] == ["fits"]
    assert client.get("/v1/fits").get_json()["items"] == []


def test_over_the_rate_limit_gets_429_with_retry_after(make_client: Any) -> None:
    limited = make_client(rate_limit="3/minute")
    for _ in range(3):
        assert limited.get("/v1/fits").status_code == 200
    err = problem(limited.get("/v1/fits"), 429)
    assert 0 < int(limited.get("/v1/fits").headers["Retry-After"]) <= 60
    assert "3 per 1 minute" in err["detail"]
    # The limit is per token: another token of the same app still gets through,
    # and the probes are never limited.
    other = make_client("tenant-b", rate_limit="3/minute")
    assert other.get("/v1/fits").status_code == 200
    assert limited.get("/readyz").status_code == 200


def test_json_never_carries_nan_or_infinity(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    # Python's json writes bare NaN and Infinity, which no JSON parser accepts; the app's
    # encoder serves them as null and logs that a figure escaped its own check.
    provider = client.application.json
    assert provider.dumps({"w": 1.5, "loss": [0.25, 2.0]}) == '{"w": 1.5, "loss": [0.25, 2.0]}'
    assert "non-finite" not in caplog.text
    served = provider.response({"w": float("inf"), "loss": (float("nan"), 2.0)}).get_data(as_text=True)
    assert served == '{"w":null,"loss":[null,2.0]}\n'
    assert "non-finite" in caplog.text


BOOK: dict[str, Any] = {
    "t_u": [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4],
    "t_c": [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0],
}


def test_the_preflight_says_the_books_defaults_diverge_and_stores_nothing(client: FlaskClient) -> None:
    checked = client.post("/v1/preflight", json=BOOK)
    assert checked.status_code == 200, checked.get_json()
    found = checked.get_json()
    # The book's lr 1e-2 on raw readings: 2/λ_max(H) of the raw data is 3.4e-4 (it diverges at epoch 11).
    assert found["stable"] is False and found["learning_rate"] == 0.01
    assert found["lr_max"] == pytest.approx(3.3994e-4, rel=1e-4)
    assert found["suggestion"] == {"learning_rate": "auto", "normalize": "standardize", "epochs": "auto"}
    assert any("will diverge" in w for w in found["warnings"])
    assert client.get("/v1/fits").get_json()["items"] == []
    scaled = client.post("/v1/preflight", json={**BOOK, "input_scale": 0.1}).get_json()
    assert scaled["stable"] is True and scaled["suggestion"] is None
    suggested = client.post("/v1/preflight", json={**BOOK, **found["suggestion"]}).get_json()
    assert suggested["stable"] is True and suggested["learning_rate"] == pytest.approx(0.5)
    # Momentum and Adam have other limits than plain gradient descent: no verdict.
    assert client.post("/v1/preflight", json={**BOOK, "optimizer": "adam"}).get_json()["stable"] is None
    problem(client.post("/v1/preflight", json={"t_u": [1.0], "t_c": [1.0, 2.0]}), 422)


def test_a_batchs_earlier_fingerprint_is_that_of_its_whole_request_hashed_a_fit_at_a_time() -> None:
    """The fingerprint batches were stored with before their readings were hashed as float64."""
    from services.api.submit import digest, earlier_batch_digest, fingerprinted
    from shared.contract.schemas import FitCreate

    specs = [
        FitCreate.model_validate({"t_u": [1, 2, 3], "t_c": [1, 2, 4], "labels": {"a": "b"}}),
        FitCreate.model_validate({"t_u": [1.5, 2], "t_c": [1, 2], "epochs": "auto"}),
    ]
    for callback in (None, "https://hooks.example.com/x"):
        # As the specs dumped before fits had a model: the default line is left out of the fingerprint.
        assert earlier_batch_digest(specs, callback) == digest([[fingerprinted(spec) for spec in specs], callback])
        assert {"model", "u_t_c"}.isdisjoint(fingerprinted(specs[0])) and "model" in specs[0].model_dump()


@pytest.mark.parametrize(
    "defaults",
    [
        {},
        {"epochs": 10, "learning_rate": 0.5, "init": {"w": 2, "b": -1}, "labels": {"site": "north"}},
        {"epochs": "auto", "max_epochs": 900, "normalize": "standardize", "learning_rate": "auto"},
        {"optimizer": "adam", "betas": [0.8, 0.9], "eps": 1e-7, "input_scale": 0.1, "normalize": "scale"},
        {"optimizer": "momentum", "momentum": 0.5, "validation": {"fraction": 0.25, "seed": 3}},
        {
            "model": {"kind": "polynomial", "degree": 2},
            "early_stopping": {"patience": 5},
            "validation": {"fraction": 0.2},
        },
        {"model": {"kind": "line"}, "optimizer": "gd", "gradient": "autograd", "u_t_c": 0.2},
    ],
)
def test_a_batchs_fingerprint_taken_the_quick_way_is_the_same(defaults: dict[str, Any]) -> None:
    """Fits that set only their readings, labels and instrument are fingerprinted from the first
    one's text: the digest must be the one a dump of every spec gives."""
    from services.api.submit import BatchFingerprint
    from shared.contract.schemas import FitCreate

    t_u = [20.0, 31.5, 40.0, 55.25, 60.0, 72.0, 80.0, 91.0, 99.5, 104.0]
    bodies = [
        {"t_u": t_u, "t_c": [0.5 * u - 17 + i / 7 + (u / 100) ** 2 for u in t_u]}
        | ({"labels": {"series": f"s{i}", "z": 'é"q'}} if i % 3 else {})
        | ({"instrument": f"sensor-{i}"} if i % 2 else {})
        for i in range(7)
    ]
    quick, full = BatchFingerprint(), BatchFingerprint()
    for body in bodies:
        spec = FitCreate.model_validate({**defaults, **body})
        quick.add(spec, given=body.keys())
        full.add(spec)
    for callback in (None, "https://hooks.example.com/x"):
        assert quick.hexdigest(callback) == full.hexdigest(callback)
    other = BatchFingerprint()
    for body in bodies[:-1] + [bodies[-1] | {"labels": {"series": "s6", "z": "other"}}]:
        other.add(FitCreate.model_validate({**defaults, **body}), given=body.keys())
    assert other.hexdigest(None) != quick.hexdigest(None)


def test_idempotency_keys_of_batches_stored_with_the_earlier_fingerprint_keep_matching(
    client: FlaskClient,
) -> None:
    import sqlalchemy as sa

    from services.api.submit import earlier_batch_digest
    from shared.contract.schemas import FitCreate
    from shared.store.models import Batch

    fits = [{"t_u": [1, 2, 3], "t_c": [1, 2, 4]}, {"t_u": [1.5, 2], "t_c": [1, 2]}]
    body = {"defaults": {"epochs": 10}, "fits": fits}
    first = client.post("/v1/batches", json=body, headers={"Idempotency-Key": "b1"})
    assert first.status_code == 202
    specs = [FitCreate.model_validate({"epochs": 10, **fit}) for fit in body["fits"]]
    with client.application.extensions["calib"].db.session(write=True) as session:
        stored = session.execute(sa.select(Batch.request_digest).where(Batch.id == first.get_json()["id"])).scalar()
        session.execute(sa.update(Batch).values(request_digest=earlier_batch_digest(specs, None)))
    assert stored != earlier_batch_digest(specs, None)  # this version stores the other fingerprint
    again = client.post("/v1/batches", json=body, headers={"Idempotency-Key": "b1"})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    other = {**body, "defaults": {"epochs": 11}}
    problem(client.post("/v1/batches", json=other, headers={"Idempotency-Key": "b1"}), 409)
