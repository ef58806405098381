"""Every JSON body the API serves is its response model's serialization (both backends): each
route's body equals Model.model_validate(body) dumped again, and has no field the model, and
so /openapi.json, does not declare. The model is the one the route declares for that answer
(services/api/contract.py), so the document and the bodies cannot part."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from pydantic import BaseModel
from werkzeug.test import TestResponse

from services.api.contract import declared
from shared.contract.schemas import (
    BatchPublic,
    FitData,
    FitList,
    FitPublic,
    LossBuckets,
    LossPage,
    Prediction,
    Problem,
    Usage,
)
from tests.in_process import run_fit

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3, 48.9], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0, 8.0], "input_scale": 0.1}


def _as_served(model: type[BaseModel], body: Any) -> None:
    again = model.model_validate(body).model_dump(mode="json", exclude_unset=True)
    assert again == body, (model.__name__, body)


def _served(client: FlaskClient, model: type[BaseModel], method: str, path: str, response: TestResponse) -> None:
    """The body is `model`'s, and `model` is what the route declares for this status."""
    endpoint, _ = client.application.url_map.bind("localhost").match(path.split("?")[0], method.upper())
    operation = declared(client.application.view_functions[endpoint])
    assert operation is not None, path
    schema = operation.responses[str(response.status_code)]["content"]["application/json"]["schema"]
    names = [one["$ref"].rsplit("/", 1)[1] for one in schema.get("oneOf", [schema])]
    assert model.__name__ in names, (path, names)
    _as_served(model, response.get_json())


def test_every_route_serves_its_model(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("contract")
    created = client.post("/v1/fits", json=FIT | {"epochs": 3000, "validation": {"indices": [1]}})
    assert created.status_code == 202
    _served(client, FitPublic, "post", "/v1/fits", created)
    fit_id = created.get_json()["id"]
    run_fit(client, fit_id)
    bodies: list[tuple[type[BaseModel], str, Any]] = [
        (FitPublic, "get", f"/v1/fits/{fit_id}"),
        (FitList, "get", "/v1/fits?limit=5"),
        (LossPage, "get", f"/v1/fits/{fit_id}/losses?limit=100"),
        (LossBuckets, "get", f"/v1/fits/{fit_id}/losses?points=50"),
        (FitData, "get", f"/v1/fits/{fit_id}/data"),
        (Usage, "get", "/v1/usage"),
    ]
    for model, method, path in bodies:
        response = getattr(client, method)(path)
        assert response.status_code == 200, (path, response.get_json())
        _served(client, model, method, path, response)
    assert client.get(f"/v1/fits/{fit_id}").get_json()["result"]["val_loss"] is not None

    predicted = client.post(
        f"/v1/fits/{fit_id}/predict", json={"t_u": [40, 60], "interval": 0.95, "allow_unconverged": True}
    )
    assert predicted.status_code == 200
    _served(client, Prediction, "post", f"/v1/fits/{fit_id}/predict", predicted)

    queued = client.post("/v1/fits", json=FIT | {"optimizer": "adam", "betas": [0.8, 0.99]}).get_json()["id"]
    cancelled = client.post(f"/v1/fits/{queued}/cancel")
    assert cancelled.status_code == 202
    _served(client, FitPublic, "post", f"/v1/fits/{queued}/cancel", cancelled)

    batch = client.post("/v1/batches", json={"defaults": {"epochs": 100}, "fits": [FIT, FIT]})
    assert batch.status_code == 202
    _served(client, BatchPublic, "post", "/v1/batches", batch)
    batch_id = batch.get_json()["id"]
    for model, path in ((BatchPublic, f"/v1/batches/{batch_id}"), (FitList, f"/v1/batches/{batch_id}/fits")):
        _served(client, model, "get", path, client.get(path))
    stopped = client.post(f"/v1/batches/{batch_id}/cancel")
    assert stopped.status_code == 202
    _served(client, BatchPublic, "post", f"/v1/batches/{batch_id}/cancel", stopped)

    # Problems too, with their quota fields and with errors naming fields.
    for response in (
        client.get("/v1/fits/00000000-0000-0000-0000-000000000000"),
        client.post("/v1/fits", json={"t_u": [1, 2], "t_c": [1]}),
        client.post("/v1/fits", json=FIT | {"epochs": 10**12}),
    ):
        assert response.mimetype == "application/problem+json"
        _as_served(Problem, response.get_json())


def test_every_v1_route_declares_its_operation(make_client: Callable[..., FlaskClient]) -> None:
    """No route of the API escapes the document: each /v1 rule's view declares its operation,
    and the document holds each under its path, with the problems every /v1 route can answer."""
    client = make_client("contract")
    app = client.application
    document = client.get("/openapi.json").get_json()
    rules = [rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/v1/")]
    assert len(rules) >= 15
    for rule in rules:
        operation = declared(app.view_functions[rule.endpoint])
        assert operation is not None, rule.rule
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            served = document["paths"][path][method.lower()]
            assert served["operationId"] == operation.id
            assert {"401", "422", "429"} <= set(served["responses"]), path
