"""Stopping the real API (SIGTERM, as a deploy or `docker compose stop` does), both backends: a
request in flight still gets its answer, and a client holding an idle keep-alive connection does
not hold the stop up (gunicorn's gevent worker waited its whole 30 s graceful timeout for it)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stacks import T_C, T_U, running

pytestmark = pytest.mark.e2e

FIT = {"t_u": T_U, "t_c": T_C, "epochs": 100, "input_scale": 0.1}


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_the_api_stops_promptly_and_answers_what_is_in_flight(kind: str, tmp_path: Path) -> None:
    with running(kind, tmp_path, api_processes=2, workers=0) as stack:
        fit = stack.submit(FIT)  # no worker runs: it stays queued, so ?wait= answers after its seconds
        idle = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.token}"})
        assert idle.get("/healthz").status_code == 200  # its connection stays open, idle, in the pool
        answer: dict[str, Any] = {}

        def in_flight() -> None:
            with httpx.Client(base_url=stack.url, headers=idle.headers, timeout=30) as http:
                answer["response"] = http.get(f"/v1/fits/{fit['id']}", params={"wait": 3})

        waiting = threading.Thread(target=in_flight)
        waiting.start()
        time.sleep(1.0)  # the wait is open
        api = stack.children[0]
        stopped_at = time.monotonic()
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(40)
        took = time.monotonic() - stopped_at
        waiting.join(10)
        idle.close()
        # The request in flight had its answer; the stop waited for it (about 2 s), not for the
        # idle connection (30 s, gunicorn's graceful timeout, before).
        response = answer["response"]
        assert response.status_code == 200 and response.json()["status"] == "queued"
        assert took < 10, f"the API took {took:.1f} s to stop"
