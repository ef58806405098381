"""The OpenAPI document's request examples are requests the API accepts (both backends): each
is submitted as it stands, and the predict example runs on the fit the fit example made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from tests.in_process import run_fit


def _example(document: dict[str, Any], media: dict[str, Any]) -> Any:
    if "example" in media:
        return media["example"]
    schema = media["schema"]
    if "$ref" not in schema:
        return None  # a binary body (Parquet) has no example to show
    name = schema["$ref"].rsplit("/", 1)[1]
    return document["components"]["schemas"][name]["example"]


def test_every_request_example_is_accepted(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client("examples")
    document = client.get("/openapi.json").get_json()
    bodies = {
        (path, media_type): _example(document, media)
        for path, item in document["paths"].items()
        for operation in item.values()
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items()
    }
    assert set(bodies) == {
        ("/v1/fits", "application/json"),
        ("/v1/preflight", "application/json"),
        ("/v1/batches", "application/json"),
        ("/v1/batches", "text/csv"),
        # Binary: no example in the document; tests/api/test_parquet.py sends it.
        ("/v1/batches", "application/vnd.apache.parquet"),
        ("/v1/fits/{fit_id}/predict", "application/json"),
        ("/v1/fits/{fit_id}/inverse", "application/json"),
        ("/v1/instruments/{instrument_id}", "application/json"),
        ("/v1/instruments/{instrument_id}/predict", "application/json"),
        ("/v1/apply", "text/csv"),
    }
    checked = client.post("/v1/preflight", json=bodies["/v1/preflight", "application/json"])
    assert checked.status_code == 200 and checked.get_json()["stable"] is True, checked.get_json()
    fit = client.post("/v1/fits", json=bodies["/v1/fits", "application/json"])
    assert fit.status_code == 202, fit.get_json()
    batch = client.post("/v1/batches", json=bodies["/v1/batches", "application/json"])
    assert batch.status_code == 202, batch.get_json()
    csv = client.post("/v1/batches", data=bodies["/v1/batches", "text/csv"], content_type="text/csv")
    assert csv.status_code == 202, csv.get_json()

    fit_id = fit.get_json()["id"]
    run_fit(client, fit_id)
    assert client.get(f"/v1/fits/{fit_id}").get_json()["result"]["converged"] is True
    predicted = client.post(f"/v1/fits/{fit_id}/predict", json=bodies["/v1/fits/{fit_id}/predict", "application/json"])
    assert predicted.status_code == 200, predicted.get_json()
    readings = client.post(f"/v1/fits/{fit_id}/inverse", json=bodies["/v1/fits/{fit_id}/inverse", "application/json"])
    assert readings.status_code == 200 and readings.get_json()["u_t_u"] is not None, readings.get_json()

    # The fit's instrument (the example names one): its tolerance, a prediction, readings applied.
    instrument = fit.get_json()["instrument"]
    put = client.put(
        f"/v1/instruments/{instrument}", json=bodies["/v1/instruments/{instrument_id}", "application/json"]
    )
    assert put.status_code == 200, put.get_json()
    on_it = bodies["/v1/instruments/{instrument_id}/predict", "application/json"]
    assert client.post(f"/v1/instruments/{instrument}/predict", json=on_it).status_code == 200
    applied = client.post("/v1/apply", data=bodies["/v1/apply", "text/csv"], content_type="text/csv")
    assert applied.status_code == 200, applied.get_json()
