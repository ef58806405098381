"""Every case of thermometer.json (gd, and the later sections' torch.optim SGD and Adam runs),
submitted over HTTP to real processes, on both backends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import DATA
from tests.oracles import mse_at_line
from tests.stack import Stack
from tests.tolerance import loss_close, param_close

REFERENCE = json.loads((DATA / "thermometer.json").read_text())
CASES = [c for c in REFERENCE["cases"] if c["request"]["optimizer"] == "gd"]
CASES += REFERENCE["later_sections_of_the_chapter"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case_ends_as_the_book_says(stack: Stack, case: dict[str, Any]) -> None:
    body = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], **case["request"]}
    fit = stack.wait(stack.submit(body)["id"])
    losses = stack.losses(fit["id"])
    assert len(losses) == fit["epochs_done"]
    for epoch, expected in case["losses"].items():
        assert loss_close(losses[int(epoch) - 1], expected), (epoch, losses[int(epoch) - 1])
    if case.get("expected_status") == "diverged":
        assert fit["status"] == "diverged"
        assert fit["diverged_at_epoch"] == case["diverged_at_epoch"]
        assert fit["epochs_done"] == case["diverged_at_epoch"] - 1
        assert fit["result"] is None
        return
    assert fit["status"] == "succeeded", fit
    assert fit["epochs_done"] == case["request"]["epochs"]
    result = fit["result"]
    # The series keeps the book's order (each epoch's loss before its update); the result's loss is
    # the loss at the returned line (API.md "The loss of a result").
    assert result["last_epoch_loss"] == pytest.approx(losses[-1], rel=1e-7)
    at_line = mse_at_line(REFERENCE["t_u"], REFERENCE["t_c"], result["w_raw"], result["b_raw"])
    assert result["loss"] == pytest.approx(at_line, rel=1e-9)
    if "params" in case:
        assert param_close(result["w"], case["params"]["w"])
        assert param_close(result["b"], case["params"]["b"])
    if "params_raw_units" in case:
        assert param_close(result["w_raw"], case["params_raw_units"]["w"])
        assert param_close(result["b_raw"], case["params_raw_units"]["b"])


def test_losses_as_csv_and_predict(stack: Stack) -> None:
    seed = next(c for c in CASES if c["request"]["epochs"] == 5000 and c["request"]["optimizer"] == "gd")
    body = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], **seed["request"]}
    fit = stack.wait(stack.submit(body)["id"])
    csv = stack.http.get(f"/v1/fits/{fit['id']}/losses", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == "epoch,loss" and len(lines) == 5001
    assert lines[5000].startswith("5000,")
    same = stack.http.get(f"/v1/fits/{fit['id']}/losses", headers={"Accept": "text/csv"})
    assert same.text == csv.text
    page = stack.http.get(f"/v1/fits/{fit['id']}/losses?start=4999&limit=1").json()
    assert page["start"] == 4999 and len(page["loss"]) == 1 and page["next"].endswith("start=5000&limit=1")
    predicted = stack.http.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [0.0, 100.0]}).json()
    w_raw, b_raw = fit["result"]["w_raw"], fit["result"]["b_raw"]
    assert predicted["t_c"] == pytest.approx([b_raw, 100 * w_raw + b_raw])


@pytest.mark.parametrize(
    ("raw", "status", "loc"),
    [
        ('{"t_u": [1, 2, NaN], "t_c": [1, 2, 3]}', 422, ["t_u", 2]),
        ('{"t_u": [1, 2, 3], "t_c": [1, 2]}', 422, ["t_c"]),
        ('{"t_u": ["a", 2], "t_c": [1, 2]}', 422, ["t_u", 0]),
        ('{"t_u": [], "t_c": []}', 422, ["t_u"]),
        ("{not json", 400, None),
    ],
)
def test_bad_requests_over_http_get_problems_never_500(
    stack: Stack, raw: str, status: int, loc: list[Any] | None
) -> None:
    r = stack.http.post("/v1/fits", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    if loc is not None:
        assert r.json()["errors"][0]["loc"] == loc


def test_a_request_line_past_the_servers_limit_is_a_documented_414_on_every_route(stack: Stack) -> None:
    # gunicorn refuses it before the app reads it (schemathesis found the 414 with a long query);
    # the document lists it for every operation, whatever its path.
    document = stack.http.get("/openapi.json").json()
    for path, item in document["paths"].items():
        assert all("414" in operation["responses"] for operation in item.values()), path
    for path in ("/v1/fits", "/healthz"):
        answer = stack.http.get(path, params={"limit": "9" * 5000})
        assert answer.status_code == 414, (path, answer.status_code)


def test_cancel_before_it_runs_keeps_it_cancelled(stack: Stack) -> None:
    body = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], "epochs": 10}
    fit = stack.submit(body)
    r = stack.http.post(f"/v1/fits/{fit['id']}/cancel")
    if r.status_code == 409:  # the worker was faster than the cancel
        assert stack.wait(fit["id"])["status"] == "succeeded"
        return
    assert r.status_code == 202
    assert stack.wait(fit["id"])["status"] == "cancelled"


def test_a_batch_mixing_optimizers_gives_each_fit_its_own_status(stack: Stack) -> None:
    data = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"]}
    fits = [
        {**data, "optimizer": "gd", "learning_rate": 1e-2, "input_scale": 0.1, "labels": {"k": "gd"}},
        {**data, "optimizer": "sgd", "learning_rate": 1e-2, "input_scale": 0.1, "labels": {"k": "sgd"}},
        {
            **data,
            "optimizer": "momentum",
            "momentum": 0.5,
            "learning_rate": 1e-2,
            "input_scale": 0.1,
            "labels": {"k": "momentum"},
        },
        {**data, "optimizer": "adam", "learning_rate": 0.1, "epochs": 2000, "labels": {"k": "adam"}},
        {
            **data,
            "optimizer": "adam",
            "betas": [0.8, 0.99],
            "eps": 1e-6,
            "learning_rate": 0.1,
            "epochs": 2000,
            "labels": {"k": "adam-options"},
        },
        {**data, "optimizer": "sgd", "learning_rate": 1e-2, "labels": {"k": "sgd-diverges"}},
    ]
    batch = stack.http.post("/v1/batches", json={"defaults": {"epochs": 5000}, "fits": fits}).json()
    assert stack.wait_batch(batch["id"])["status"] == "completed"
    got = {f["labels"]["k"]: f for f in stack.http.get(f"/v1/batches/{batch['id']}/fits").json()["items"]}
    assert {k: f["status"] for k, f in got.items()} == {
        "gd": "succeeded",
        "sgd": "succeeded",
        "momentum": "succeeded",
        "adam": "succeeded",
        "adam-options": "succeeded",
        "sgd-diverges": "diverged",
    }
    assert got["sgd-diverges"]["diverged_at_epoch"] == 11  # as gd does: same step, same data
    assert got["gd"]["result"]["w"] == pytest.approx(got["sgd"]["result"]["w"], rel=1e-9)
    assert got["momentum"]["params"]["momentum"] == 0.5
    assert got["adam-options"]["params"]["betas"] == [0.8, 0.99] and got["adam-options"]["params"]["eps"] == 1e-6
    assert got["adam"]["params"]["betas"] == [0.9, 0.999]
    for k in ("momentum", "adam"):  # both near the least-squares line
        assert got[k]["result"]["w_raw"] == pytest.approx(got[k]["result"]["w_opt"], rel=2e-3), k


def test_optimizer_options_must_match_the_optimizer(stack: Stack) -> None:
    data = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"]}
    for extra, loc in (
        ({"momentum": 0.9}, ["momentum"]),
        ({"optimizer": "sgd", "betas": [0.9, 0.99]}, ["betas"]),
        ({"optimizer": "momentum", "momentum": 1.0}, ["momentum"]),
        ({"optimizer": "adam", "eps": 0}, ["eps"]),
    ):
        r = stack.http.post("/v1/fits", json={**data, **extra})
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == loc, (extra, r.text)


@pytest.mark.parametrize("gradient", ["autograd", "finite_difference"])
def test_the_seed_fit_with_each_gradient_mode(stack: Stack, gradient: str) -> None:
    seed = next(c for c in CASES if c["request"]["epochs"] == 5000 and c["request"]["optimizer"] == "gd")
    body = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], **seed["request"], "gradient": gradient}
    fit = stack.wait(stack.submit(body)["id"])
    assert fit["status"] == "succeeded" and fit["params"]["gradient"] == gradient
    assert ("delta" in fit["params"]) == (gradient == "finite_difference")
    losses = stack.losses(fit["id"])
    for epoch, expected in seed["losses"].items():
        assert loss_close(losses[int(epoch) - 1], expected), (epoch, losses[int(epoch) - 1])
    assert param_close(fit["result"]["w"], seed["params"]["w"])
    bad = stack.http.post("/v1/fits", json={**body, "optimizer": "adam"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["gradient"]


def test_readings_too_large_for_any_loss_diverge_at_epoch_1(stack: Stack) -> None:
    # Found by schemathesis: |t_u| near the float64 maximum made every loss NaN, stored as a
    # "succeeded" fit with NaN in its JSON. Its squares overflow, so it diverges at epoch 1.
    for optimizer in ("gd", "adam"):
        fit = stack.wait(
            stack.submit({"t_u": [-5.9e16, -1.7976931348623157e308], "t_c": [1.1e16, 6.9e16], "optimizer": optimizer})[
                "id"
            ]
        )
        assert fit["status"] == "diverged" and fit["diverged_at_epoch"] == 1 and fit["epochs_done"] == 0, fit
        page = stack.http.get(f"/v1/fits/{fit['id']}/losses")
        assert page.json()["loss"] == [] and "NaN" not in page.text
        assert "NaN" not in stack.http.get(f"/v1/fits/{fit['id']}").text
