"""Every gd case of thermometer.json, submitted over HTTP to real processes, on both backends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.cli.local_stack import Stack
from tests.conftest import DATA
from tests.tolerance import loss_close, param_close

REFERENCE = json.loads((DATA / "thermometer.json").read_text())
CASES = [c for c in REFERENCE["cases"] if c["request"]["optimizer"] == "gd"]


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
    assert result["loss"] == pytest.approx(losses[-1], rel=1e-7)
    if "params" in case:
        assert param_close(result["w"], case["params"]["w"])
        assert param_close(result["b"], case["params"]["b"])
    if "params_raw_units" in case:
        assert param_close(result["w_raw"], case["params_raw_units"]["w"])
        assert param_close(result["b_raw"], case["params_raw_units"]["b"])


def test_losses_as_csv_and_predict(stack: Stack) -> None:
    seed = next(c for c in CASES if c["request"]["epochs"] == 5000)
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
def test_bad_requests_over_http_get_problems_never_500(stack: Stack, raw: str, status: int,
                                                        loc: list[Any] | None) -> None:
    r = stack.http.post("/v1/fits", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    if loc is not None:
        assert r.json()["errors"][0]["loc"] == loc


def test_cancel_before_it_runs_keeps_it_cancelled(stack: Stack) -> None:
    body = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"], "epochs": 10}
    fit = stack.submit(body)
    r = stack.http.post(f"/v1/fits/{fit['id']}/cancel")
    if r.status_code == 409:  # the worker was faster than the cancel
        assert stack.wait(fit["id"])["status"] == "succeeded"
        return
    assert r.status_code == 202
    assert stack.wait(fit["id"])["status"] == "cancelled"
