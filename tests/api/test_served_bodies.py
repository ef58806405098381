"""Every JSON body the API serves is its response model's serialization (both backends): each
route's body equals Model.model_validate(body) dumped again, and has no field the model, and
so /openapi.json, does not declare."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from pydantic import BaseModel

from shared.schemas import (
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


def test_every_route_serves_its_model(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("contract")
    created = client.post("/v1/fits", json=FIT | {"epochs": 3000, "validation": {"indices": [1]}})
    assert created.status_code == 202
    _as_served(FitPublic, created.get_json())
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
        _as_served(model, response.get_json())
    assert client.get(f"/v1/fits/{fit_id}").get_json()["result"]["val_loss"] is not None

    predicted = client.post(
        f"/v1/fits/{fit_id}/predict", json={"t_u": [40, 60], "interval": 0.95, "allow_unconverged": True}
    )
    assert predicted.status_code == 200
    _as_served(Prediction, predicted.get_json())

    queued = client.post("/v1/fits", json=FIT | {"optimizer": "adam", "betas": [0.8, 0.99]}).get_json()["id"]
    cancelled = client.post(f"/v1/fits/{queued}/cancel")
    assert cancelled.status_code == 202
    _as_served(FitPublic, cancelled.get_json())

    batch = client.post("/v1/batches", json={"defaults": {"epochs": 100}, "fits": [FIT, FIT]})
    assert batch.status_code == 202
    _as_served(BatchPublic, batch.get_json())
    batch_id = batch.get_json()["id"]
    _as_served(BatchPublic, client.get(f"/v1/batches/{batch_id}").get_json())
    _as_served(FitList, client.get(f"/v1/batches/{batch_id}/fits").get_json())
    stopped = client.post(f"/v1/batches/{batch_id}/cancel")
    assert stopped.status_code == 202
    _as_served(BatchPublic, stopped.get_json())

    # Problems too, with their quota fields and with errors naming fields.
    for response in (
        client.get("/v1/fits/00000000-0000-0000-0000-000000000000"),
        client.post("/v1/fits", json={"t_u": [1, 2], "t_c": [1]}),
        client.post("/v1/fits", json=FIT | {"epochs": 10**12}),
    ):
        assert response.mimetype == "application/problem+json"
        _as_served(Problem, response.get_json())
