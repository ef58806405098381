"""What operators get from the running stack (both backends): /metrics with the API's requests
summed over its gunicorn processes, the state of the fits and the queue, and the workers'
counters; and JSON logs in which one fit can be followed from its request to its worker."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.stack import Stack

# Its own stack (tests/e2e/conftest.py): it reads process-wide figures (metrics, the queue, the workers).
OWN_STACK = True

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def json_lines(path: Any) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_metrics_of_requests_fits_queue_and_workers(stack: Stack) -> None:
    fit = stack.wait(stack.submit({"t_u": T_U, "t_c": T_C, "epochs": 500, "input_scale": 0.1})["id"])
    before = stack.metrics()
    route = "/v1/fits/<fit_id>"
    for _ in range(20):  # spread over both gunicorn processes; /metrics must sum them
        assert stack.http.get(f"/v1/fits/{fit['id']}").status_code == 200
    # Fits by status are read at most every CALIB_QUEUE_SNAPSHOT_SECONDS (2 s) per process.
    time.sleep(2.1)
    after = stack.metrics()
    assert (
        value(after, "calib_http_requests_total", method="GET", route=route, status="200")
        == value(before, "calib_http_requests_total", method="GET", route=route, status="200") + 20
    )
    assert value(after, "calib_http_request_duration_seconds_count", method="GET", route=route) >= 20
    assert value(after, "calib_http_requests_total", method="POST", route="/v1/fits", status="202") >= 1
    assert value(after, "calib_fits", status="succeeded") >= 1
    assert ("calib_queue_depth", ()) in after
    # The workers' counters, read from the database.
    assert value(after, "calib_worker_fits_finished_total", status="succeeded") >= 1
    assert value(after, "calib_worker_epochs_total") >= 500
    assert value(after, "calib_chunk_duration_seconds_count") >= 1
    fit_count = value(after, "calib_fit_duration_seconds_count")
    assert value(after, "calib_fit_duration_seconds_bucket", le="+Inf") == fit_count >= 1
    unauthorised = stack.http.get("/v1/fits", headers={"Authorization": "Bearer calib_nobody"})
    assert unauthorised.status_code == 401
    assert value(stack.metrics(), "calib_http_requests_total", method="GET", route="/v1/fits", status="401") >= 1


def test_json_logs_follow_a_fit_from_its_request_to_its_worker(stack: Stack) -> None:
    r = stack.http.post("/v1/fits", json={"t_u": T_U, "t_c": T_C, "epochs": 200}, headers={"X-Request-ID": "trace-17"})
    assert r.status_code == 202 and r.headers["X-Request-ID"] == "trace-17"
    fit_id = r.json()["id"]
    stack.wait(fit_id)
    assert len(stack.http.get(f"/v1/fits/{fit_id}").headers["X-Request-ID"]) == 32  # one of its own
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        api = json_lines(stack.logs / "api.log")  # every line is JSON, gunicorn's own included
        workers = [line for path in stack.logs.glob("worker*.log") for line in json_lines(path)]
        submitted = [line for line in api if line.get("request_id") == "trace-17"]
        ran = [line for line in workers if line.get("fit_id") == fit_id]
        if submitted and ran:
            break
        time.sleep(0.2)
    assert submitted[0]["fit_id"] == fit_id and submitted[0]["status"] == 202 and submitted[0]["method"] == "POST"
    assert {"ts", "level", "service", "logger", "msg"} <= set(submitted[0])
    assert any("claimed 1 fits" in line["msg"] for line in ran) and all(line["chunk_id"] for line in ran)
    assert any(line.get("fit_id") == fit_id and line.get("path") == f"/v1/fits/{fit_id}" for line in api)


def test_each_worker_process_runs_torch_on_one_thread(stack: Stack) -> None:
    """By default (CALIB_TORCH_THREADS=1): the host's cores go to the worker processes, and two
    processes' parallel ops no longer wait for each other's threads (benchmarks/README.md,
    twenty-second sitting). Each pool process logs its engine's device and threads at start."""
    lines = [line for path in stack.logs.glob("worker*.log") for line in json_lines(path)]
    started = [line["msg"] for line in lines if line["msg"].startswith("engine device:")]
    assert started, "no worker process logged its engine"
    assert all("torch threads: 1;" in msg for msg in started), started
