"""The Python client against the running stack (both backends), and its retry policy against a
real HTTP server that answers 503 and 429 before it accepts."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.client import CalibError, Client, WouldDiverge
from tests.conftest import DATA, ROOT
from tests.stack import Stack
from tests.venvs import bare_venv, pip, run_alone

REFERENCE = json.loads((DATA / "thermometer.json").read_text())
T_U, T_C = REFERENCE["t_u"], REFERENCE["t_c"]


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.url, token=stack.token) as calib:
        yield calib


def test_fit_wait_losses_predict(client: Client) -> None:
    fit = client.fit(T_U, T_C, epochs=5000, input_scale=0.1, labels={"sensor": "client"})
    assert fit.status == "queued"
    assert fit.wait(timeout=60) is fit and fit.status == "succeeded"
    losses = fit.losses(as_array=True)
    assert isinstance(losses, np.ndarray) and losses.shape == (5000,)
    assert abs(losses[0] - 80.364342) < 1e-4 and fit.losses()[:1] == [losses[0]]
    assert abs(fit.result["w_raw"] - 0.53671) < 1e-5
    predicted = fit.predict([51.8, 90.0], interval=0.95)
    assert set(predicted) == {"t_c", "lower", "upper"} and predicted["lower"][0] < predicted["t_c"][0]
    # Both ways, with uncertainties: the reading that gives a predicted value is the reading.
    forward = fit.predict([51.8], u_t_u=0.1)
    back = fit.inverse(forward["t_c"], u_t_c=forward["u_t_c"])
    assert back["t_u"][0] == pytest.approx(51.8, rel=1e-9) and back["u_t_u"][0] > 0.1
    assert fit.readings() == {"fit_id": fit.id, "t_u": T_U, "t_c": T_C, "validation_indices": []}
    buckets = fit.loss_curve(points=50)
    assert len(buckets) == 50 and buckets[-1]["last_epoch"] == 5000
    assert [f.id for f in client.fits(label="sensor:client")] == [fit.id]
    assert client.get_fit(fit.id).data == fit.data
    with pytest.raises(ValueError):
        fit.losses(validation=True)


def test_validation_losses_and_early_stopping(client: Client) -> None:
    split = REFERENCE["validation_split_run"]["request"]
    fit = client.fit(T_U, T_C, **split, early_stopping={"min_delta": 1e-3, "patience": 10}).wait(timeout=60)
    assert fit.data["stop_reason"] == "early_stopped"
    assert len(fit.losses(validation=True)) == fit.epochs_done < 3000


def _newest(client: Client) -> list[str]:
    # A fit stored since would be the newest: the first page says it (the stack is shared, and its
    # tenant has thousands of fits of other modules).
    return [f.id for f in itertools.islice(client.fits(), 100)]


def test_fit_refuses_a_learning_rate_that_diverges_before_submitting(client: Client) -> None:
    before = _newest(client)
    with pytest.raises(WouldDiverge) as caught:
        client.fit(T_U, T_C, epochs=100)  # the book's lr 1e-2 on raw readings
    assert caught.value.suggestion == {"learning_rate": "auto", "normalize": "standardize", "epochs": "auto"}
    assert "stable limit 0.00034" in caught.value.detail
    assert _newest(client) == before
    assert client.fit(T_U, T_C, **caught.value.suggestion).wait(timeout=60).result["converged"] is True
    forced = client.fit(T_U, T_C, epochs=100, allow_divergence=True).wait(timeout=60)
    assert forced.status == "diverged" and forced.data["diverged_at_epoch"] == 11


def test_errors_carry_the_problem(client: Client, stack: Stack) -> None:
    with pytest.raises(CalibError) as caught:
        client.fit(T_U, T_C[:3])
    assert caught.value.status == 422 and caught.value.errors[0]["loc"] == ["t_c"]
    assert caught.value.problem["type"].endswith("invalid-field")
    with pytest.raises(CalibError) as missing:
        client.get_fit("00000000-0000-4000-8000-000000000000")
    assert missing.value.status == 404
    with Client(stack.url, token="calib_not-a-token") as stranger, pytest.raises(CalibError) as refused:
        stranger.get_fit("x")
    assert refused.value.status == 401
    with Client("http://127.0.0.1:9", token="t") as nowhere, pytest.raises(CalibError) as unreachable:
        nowhere.get_fit("x")
    assert unreachable.value.status == 0


def test_batches_from_a_mapping_and_from_csv(client: Client, tmp_path: Path) -> None:
    series = {f"S{i}": (T_U, [c + 0.1 * i for c in T_C]) for i in range(4)}
    batch = client.submit_batch(series, epochs=3000, input_scale=0.1).wait(timeout=60)
    assert batch.status == "completed" and batch.finished == 4
    frame = batch.results()
    assert isinstance(frame, pd.DataFrame) and sorted(frame["series"]) == sorted(series)
    assert (frame["status"] == "succeeded").all() and frame["epochs_done"].tolist() == [3000] * 4
    rows = batch.results(as_frame=False)
    assert isinstance(rows, list) and isinstance(rows[0]["w_raw"], float)
    assert len(list(batch.fits())) == 4

    path = tmp_path / "sensors.csv"
    path.write_text("series,t_u,t_c\n" + "".join(f"A,{u},{c}\n" for u, c in zip(T_U, T_C, strict=True)))
    from_csv = client.submit_batch(
        path, epochs=3000, input_scale=0.1, optimizer="sgd", validation={"fraction": 0.2, "seed": 3}
    ).wait(timeout=60)
    fit = next(from_csv.fits())
    assert fit.data["params"]["validation"]["seed"] == 3 and len(fit.data["params"]["validation"]["indices"]) == 2


class Flaky(BaseHTTPRequestHandler):
    """Answers each path's first requests with the statuses queued for it, then 202."""

    answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(f"{self.path} {self.headers.get('Idempotency-Key')}")
        queue = self.answers.get(self.path, [])
        status, headers = queue.pop(0) if queue else (202, {})
        body = json.dumps(
            {"id": "f1", "status": "queued", "epochs": 1, "epochs_done": 0}
            if status == 202
            else {"type": "urn:calib:problem:x", "title": "x", "status": status, "detail": "try later"}
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Flaky.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_429_and_503_are_retried_with_backoff_and_nothing_else_is(flaky: str) -> None:
    Flaky.answers = {"/v1/fits": [(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"})], "/v1/batches": [(422, {})]}
    with Client(flaky, token="t", backoff=0.01) as calib:
        assert calib.fit([1, 2], [3, 4]).id == "f1"
        fits = [line for line in Flaky.seen if line.startswith("/v1/fits ")]  # the submission, not its pre-flight
        assert len(fits) == 3 and len(set(fits)) == 1  # one Idempotency-Key for all three tries
        with pytest.raises(CalibError) as caught:
            calib.submit_batch({"A": ([1, 2], [3, 4])})
        assert caught.value.status == 422 and sum(line.startswith("/v1/batches") for line in Flaky.seen) == 1
    Flaky.answers = {"/v1/fits": [(503, {})] * 5}
    with Client(flaky, token="t", backoff=0.01, max_retries=2) as calib, pytest.raises(CalibError) as gave_up:
        calib.fit([1, 2], [3, 4])
    assert gave_up.value.status == 503 and gave_up.value.detail == "try later"


INSTALLED_ALONE = """
import json, sys
from calib_client import Client
with Client(sys.argv[1], token=sys.argv[2]) as calib:
    fit = calib.fit({t_u}, {t_c}, epochs=5000, input_scale=0.1).wait(timeout=60)
    print(json.dumps({{"status": fit.status, "w_raw": fit.result["w_raw"],
                       "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                         ("services", "shared", "numpy", "sqlalchemy", "torch"))}}))
"""


def test_the_client_installed_alone_submits_and_waits(stack: Stack, tmp_path: Path) -> None:
    """`pip install ./services/client` into a bare venv: httpx and nothing of the server."""
    bare = bare_venv(tmp_path / "venv", str(ROOT / "services" / "client"))
    installed = {package["name"].lower() for package in json.loads(pip(bare, "list", "--format=json"))}
    assert "calib-client" in installed and not installed & {"calib", "numpy", "sqlalchemy", "torch", "flask"}
    script = INSTALLED_ALONE.format(t_u=T_U, t_c=T_C)
    stdout = run_alone(bare, script, stack.url, stack.token, cwd=tmp_path, timeout=120)
    answer = json.loads(stdout)
    assert answer["status"] == "succeeded" and abs(answer["w_raw"] - 0.53671) < 1e-5
    assert answer["modules"] == []
