"""Oversize bodies against the real API (the stack's gunicorn, 2 processes), both backends:
eight at once, JSON and CSV, each refused with 413 while it is read, the API's memory flat."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from benchmarks.oversize import api_peak_rss, send
from tests.backends import backend_env
from tests.stack import Stack


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_eight_parallel_oversize_bodies_each_get_413_and_the_api_stays_up(kind: str, tmp_path: Path) -> None:
    with backend_env(kind, tmp_path) as env:
        # A lower batch limit, so that 40 MB of CSV rows pass it (the default needs 160 MB).
        stack = Stack({**env, "CALIB_MAX_POINTS_PER_BATCH": "2000000"}, tmp_path / "logs", workers=0).start()
        try:
            answers: list[dict[str, object]] = []
            threads = [
                threading.Thread(target=send, args=(stack.url, stack.token, kind, 40_000_000, answers))
                for kind in ["json", "csv"] * 4
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(a["status"] for a in answers) == [413] * 8, answers
            assert stack.http.get("/readyz").status_code == 200
            # Bodies of 320 MB in all; the API never holds more than a piece of each.
            assert api_peak_rss(stack) < 1_000_000_000
            fit = stack.http.post("/v1/fits", json={"t_u": [1.0, 2.0], "t_c": [3.0, 5.0]})
            assert fit.status_code == 202
        finally:
            stack.stop()
