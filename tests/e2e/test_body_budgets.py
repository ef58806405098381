"""Every request within a memory budget, against the real API (the stack's gunicorn, 2 processes),
both backends: per-series limits refuse a body at the block that passes them, however large the
body; oversize bodies of every kind at once leave the API's memory flat; and past a process's
parse budget a request gets 503 with Retry-After naming it, never the out-of-memory killer."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.oversize import api_peak_rss
from tests.backends import backend_env
from tests.stack import Stack

_CSV, _JSON, _PARQUET = "text/csv", "application/json", "application/vnd.apache.parquet"
_LIMITS = {"CALIB_MAX_POINTS_PER_FIT": "100000", "CALIB_MAX_FITS_PER_BATCH": "1000"}
GOOD = {"t_u": [35.7, 55.9, 58.2, 81.9], "t_c": [0.5, 14.0, 15.0, 28.0]}


def _one_long_series(rows: int) -> bytes:
    return b"series,t_u,t_c\n" + b"a,1.5,2\n" * rows


def _parquet(rows: int) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({"series": ["a"] * rows, "t_u": [1.5] * rows, "t_c": [2.0] * rows}), out)
    return out.getvalue()


@pytest.fixture(params=["embedded", "postgres"])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with backend_env(request.param, tmp_path) as env:
        stack = Stack({**env, **_LIMITS}, tmp_path / "logs", workers=0).start()
        try:
            yield stack
        finally:
            stack.stop()


def _refused(stack: Stack, body: bytes, media: str) -> dict[str, Any]:
    answer = stack.http.post("/v1/batches?epochs=5", content=body, headers={"Content-Type": media}, timeout=120)
    assert answer.status_code == 413, answer.text
    problem: dict[str, Any] = answer.json()
    return problem


def test_per_series_limits_refuse_a_body_while_its_rows_are_read(limited: Stack) -> None:
    # 4,000,000 rows of one series (32 MB), past its 100,000 points at the first block.
    problem = _refused(limited, _one_long_series(4_000_000), _CSV)
    assert problem["errors"][0]["loc"] == ["series", "a", "t_u"] and "more than 100,000 points" in problem["detail"]
    problem = _refused(limited, _parquet(300_000), _PARQUET)
    assert problem["errors"][0]["loc"] == ["series", "a", "t_u"]
    many = b"series,t_u,t_c\n" + b"".join(f"s{i},1,2\ns{i},2,3\n".encode() for i in range(1500))
    assert _refused(limited, many, _CSV)["detail"] == "fits: more than 1000 series, the limit is 1000"
    # JSON: the second fit's t_u, and a fit that holds far more values than a fit of the largest size.
    long_fit = {"t_u": [1.5] * 200_000, "t_c": [2.0, 3.0]}
    problem = _refused(limited, json.dumps({"fits": [GOOD, long_fit]}).encode(), _JSON)
    assert problem["errors"][0]["loc"] == ["fits", 1] and "more than 100,000 points in one fit" in problem["detail"]
    padded = {**GOOD, "notes": [{"a": 0}] * 400_000}  # no long array, but far more values than a fit holds
    problem = _refused(limited, json.dumps({"fits": [GOOD, padded]}).encode(), _JSON)
    assert problem["errors"][0]["loc"] == ["fits", 1] and "more values than a fit" in problem["detail"]
    more = {"fits": [GOOD] * 1001}
    assert "more than 1,000 fits" in _refused(limited, json.dumps(more).encode(), _JSON)["detail"]
    # Within every limit, the same service takes a batch at once.
    fine = limited.http.post("/v1/batches?epochs=5", content=_one_long_series(100_000), headers={"Content-Type": _CSV})
    assert fine.status_code == 202


def test_oversize_bodies_of_every_kind_at_once_leave_the_api_flat(limited: Stack) -> None:
    """Eight bodies of 40 MB at once, CSV (one series), JSON (one fit's t_u) and Parquet: each a 413
    read whole by its client, the API's processes growing by far less than one body parsed whole."""
    csv_body = _one_long_series(5_000_000)
    json_body = b'{"fits": [{"t_c": [1, 2], "t_u": [' + b"12.5," * 8_000_000 + b"1]}]}"
    parquet_body = _parquet(2_000_000)
    bodies = [(csv_body, _CSV), (json_body, _JSON), (parquet_body, _PARQUET)] * 3
    before = api_peak_rss(limited)
    answers: list[int] = []

    def send(body: bytes, media: str) -> None:
        with httpx.Client(base_url=limited.url, headers=dict(limited.http.headers), timeout=120) as client:
            answers.append(client.post("/v1/batches", content=body, headers={"Content-Type": media}).status_code)

    threads = [threading.Thread(target=send, args=body) for body in bodies[:8]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [413] * 8
    assert limited.http.get("/readyz").status_code == 200
    # Parsed whole, one such CSV body cost the row-by-row reader about ten times its size.
    assert api_peak_rss(limited) - before < 256_000_000


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_past_the_parse_budget_a_request_gets_503_naming_it(kind: str, tmp_path: Path) -> None:
    """Budgets of 3 MB per process; six JSON batches of 200 fits of 1,000 points (2.4 MB) sent slowly,
    in 8 pieces 0.5 s apart (a batch's share grows with the fits read, to about 4 MB: alone each is
    admitted; two in one process are past its budget by their third piece, with 2.5 s of sending
    left, longer than a request waits for room): some wait and get 503 with Retry-After, naming the
    budget, read whole by the client; the API answers /readyz throughout, and a batch sent afterwards
    is accepted. (At 6 MB the two passed it only with 0.5-1 s of sending left, and on a loaded machine
    every wait got its room in time: six 202s, once.)"""
    with backend_env(kind, tmp_path) as env:
        stack = Stack({**env, "CALIB_PARSE_MEMORY_BYTES": "3000000"}, tmp_path / "logs", workers=0).start()
        try:
            fit = {"t_u": GOOD["t_u"] * 250, "t_c": GOOD["t_c"] * 250}
            body = json.dumps({"defaults": {"epochs": 5}, "fits": [fit] * 200}).encode()
            piece = len(body) // 8 + 1

            def slowly() -> Iterator[bytes]:
                for start in range(0, len(body), piece):
                    yield body[start : start + piece]
                    time.sleep(0.5)

            answers: list[httpx.Response] = []

            def send() -> None:
                headers = {**stack.http.headers, "Content-Type": _JSON, "Content-Length": str(len(body))}
                with httpx.Client(base_url=stack.url, timeout=60) as client:
                    answers.append(client.post("/v1/batches", content=slowly(), headers=headers))

            ready: list[int] = []
            threads = [threading.Thread(target=send) for _ in range(6)]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                ready.append(stack.http.get("/readyz").status_code)
                time.sleep(0.25)
            for thread in threads:
                thread.join()
            statuses = sorted(answer.status_code for answer in answers)
            assert set(statuses) <= {202, 503} and 202 in statuses and 503 in statuses, statuses
            for refused in (answer for answer in answers if answer.status_code == 503):
                assert int(refused.headers["Retry-After"]) > 0
                assert refused.json()["quota"] == "parse_memory_bytes" and refused.json()["limit"] == 3_000_000
            assert set(ready) == {200}
            after = stack.http.post("/v1/batches", content=body, headers={"Content-Type": _JSON})
            assert after.status_code == 202
        finally:
            stack.stop()
