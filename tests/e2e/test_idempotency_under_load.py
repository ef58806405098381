"""Idempotency-Key under concurrency, over HTTP to the real gunicorn API on both backends:
racing duplicates give the original fit or 409, never a second fit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.stack import Stack

BODY = {"t_u": [35.7, 55.9, 58.2], "t_c": [0.5, 14.0, 15.0], "epochs": 100}


def test_racing_duplicates_create_one_fit(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token}", "Idempotency-Key": f"race-{stack.port}"}

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            return http.post("/v1/fits", json=BODY, headers=headers)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(submit, range(32)))
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {200, 202, 409}, statuses
    assert statuses.count(202) == 1, statuses
    ids = {r.json()["id"] for r in answers if r.status_code in (200, 202)}
    assert len(ids) == 1
    listed = stack.http.get("/v1/fits?limit=1000").json()["items"]
    assert [f["id"] for f in listed].count(ids.pop()) == 1
    # Another body under the same key is a conflict, not a new fit.
    other = stack.http.post("/v1/fits", json={**BODY, "epochs": 101}, headers=headers)
    assert other.status_code == 409


def test_racing_duplicate_batches_create_one_batch(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token}", "Idempotency-Key": f"batch-race-{stack.port}"}
    body = {"fits": [BODY] * 5}

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            return http.post("/v1/batches", json=body, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(16)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 202, 409} and statuses.count(202) == 1, statuses
    assert len({r.json()["id"] for r in answers if r.status_code in (200, 202)}) == 1
