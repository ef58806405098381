"""Oversize bodies against the real API (the stack's gunicorn, 2 processes), both backends:
eight at once, JSON and CSV, each refused with 413 while it is read, the API's memory flat."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import httpx
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


def _plain_post(url: str, token: str, path: Path, size: int) -> tuple[int, dict[str, object]]:
    """POST a file's bytes with urllib, which sends the whole body before it reads the answer."""
    headers = {"Content-Type": "application/json", "Content-Length": str(size), "Authorization": f"Bearer {token}"}
    with path.open("rb") as body:
        request = urllib.request.Request(f"{url}/v1/batches", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_clients_that_send_their_whole_body_first_read_their_413(kind: str, tmp_path: Path) -> None:
    """A body refused from its Content-Length is read to its end and discarded (in pieces), so urllib
    and httpx, which send everything before reading, get the 413 problem instead of a reset."""
    mib = 1 << 20
    with backend_env(kind, tmp_path) as env:
        stack = Stack({**env, "CALIB_MAX_BODY_BYTES": str(64 * mib)}, tmp_path / "logs", workers=0).start()
        try:
            big, huge = tmp_path / "80MiB.json", tmp_path / "200MB.json"
            for path, size in ((big, 80 * mib), (huge, 200_000_000)):
                with path.open("wb") as out:
                    out.truncate(size)  # sparse: no disk, and nothing held in memory by the test
            status, problem = _plain_post(stack.url, stack.token, big, 80 * mib)
            assert status == 413 and "limit is 67,108,864" in str(problem["detail"]), problem
            with big.open("rb") as body:
                answer = httpx.post(
                    f"{stack.url}/v1/batches",
                    content=iter(lambda: body.read(mib), b""),
                    headers={
                        "Content-Type": "application/json",
                        "Content-Length": str(80 * mib),
                        "Authorization": f"Bearer {stack.token}",
                    },
                    timeout=120,
                )
            assert answer.status_code == 413 and answer.headers["content-type"] == "application/problem+json"
            answers: list[tuple[int, dict[str, object]]] = []
            threads = [
                threading.Thread(target=lambda: answers.append(_plain_post(stack.url, stack.token, huge, 200_000_000)))
                for _ in range(8)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert [status for status, _ in answers] == [413] * 8, answers
            assert api_peak_rss(stack) < 1_000_000_000
        finally:
            stack.stop()
