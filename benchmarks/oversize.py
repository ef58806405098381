"""Oversize request bodies against a running API: every one refused (413), the API's memory flat.

    python -m benchmarks.oversize [--parallel 8] [--megabytes 200]

Starts the embedded stack (or PostgreSQL + Redis with CALIB_DATABASE_URL / CALIB_BROKER_URL
set) with the stack's API (2 gunicorn processes: 16 threads each embedded, gevent on
PostgreSQL), sends `parallel` bodies at once, half JSON (one
fit whose t_u never ends) and half CSV (rows past the batch's points limit), each declaring
`megabytes` MB in Content-Length and streamed as it is generated, and reports each answer,
the time to it, and the peak RSS (VmHWM) of the API's processes, summed, before and after.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.stack import Stack, descendants, peak_rss

_PIECE = 1 << 16


def json_body(size: int) -> tuple[Iterator[bytes], int]:
    head, numbers = b'{"t_c": [1, 2], "t_u": [', b"12.5," * (_PIECE // 5)
    tail = b"1]}"
    count = (size - len(head) - len(tail)) // len(numbers)
    return _pieces(head, numbers, count, tail), len(head) + count * len(numbers) + len(tail)


def csv_body(size: int) -> tuple[Iterator[bytes], int]:
    head, rows = b"series,t_u,t_c\n", b"s,1.5,2\n" * (_PIECE // 8)
    count = (size - len(head)) // len(rows)
    return _pieces(head, rows, count, b""), len(head) + count * len(rows)


def _pieces(head: bytes, middle: bytes, count: int, tail: bytes) -> Iterator[bytes]:
    yield head
    for _ in range(count):
        yield middle
    yield tail


def send(url: str, token: str, kind: str, size: int, out: list[dict[str, object]]) -> None:
    body, length = json_body(size) if kind == "json" else csv_body(size)
    path, media = ("/v1/fits", "application/json") if kind == "json" else ("/v1/batches", "text/csv")
    started = time.perf_counter()
    try:
        r = httpx.post(
            url + path,
            content=body,
            timeout=120,
            headers={"Authorization": f"Bearer {token}", "Content-Type": media, "Content-Length": str(length)},
        )
        out.append(
            {
                "kind": kind,
                "status": r.status_code,
                "seconds": time.perf_counter() - started,
                "detail": r.json().get("detail"),
            }
        )
    except httpx.HTTPError as exc:  # the server may close the connection once it has answered
        out.append({"kind": kind, "status": type(exc).__name__, "seconds": time.perf_counter() - started})


def refuse_big_batch(url: str, token: str) -> tuple[int, float, int]:
    """The 100,000 two-point fits × 1,000,000 epochs batch of issue 11: (status, seconds, body bytes)."""
    body = json.dumps(
        {"defaults": {"epochs": 1_000_000}, "fits": [{"t_u": [1.0, 2.0], "t_c": [3.0, 5.0]}] * 100_000}
    ).encode()
    started = time.perf_counter()
    r = httpx.post(
        url + "/v1/batches",
        content=body,
        timeout=120,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return r.status_code, time.perf_counter() - started, len(body)


def api_peak_rss(stack: Stack) -> int:
    api = stack.children[0].pid
    return sum(peak_rss(pid) for pid in descendants({api}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack({"CALIB_DATA_DIR": f"{tmp}/data"}, Path(tmp) / "logs", workers=0).start()
        try:
            idle = api_peak_rss(stack)
            refusals = [refuse_big_batch(stack.url, stack.token) for _ in range(5)]
            answers: list[dict[str, object]] = []
            threads = [
                threading.Thread(
                    target=send,
                    args=(stack.url, stack.token, "json" if i % 2 == 0 else "csv", args.megabytes * 1_000_000, answers),
                )
                for i in range(args.parallel)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            ready = stack.http.get("/readyz").status_code
            peak = api_peak_rss(stack)
        finally:
            stack.stop()
    for answer in sorted(answers, key=lambda a: str(a["kind"])):
        seconds = float(str(answer["seconds"]))
        print(f"{answer['kind']:<5} {answer['status']}  {seconds:.2f} s  {answer.get('detail', '')}")
    seconds = sorted(r[1] for r in refusals)
    print(
        f"100,000 fits × 1,000,000 epochs ({refusals[0][2] / 1e6:.1f} MB): {refusals[0][0]} in "
        f"{seconds[2]:.3f} s (median of 5)"
    )
    print(
        f"API peak RSS, all processes: {idle / 1e6:.0f} MB idle, {peak / 1e6:.0f} MB after; "
        f"/readyz {ready}; {wall:.2f} s for all"
    )
    print(
        json.dumps(
            {
                "benchmark": "oversize",
                "parallel": args.parallel,
                "megabytes": args.megabytes,
                "statuses": sorted(str(a["status"]) for a in answers),
                "api_peak_rss_bytes": peak,
                "api_idle_rss_bytes": idle,
                "readyz": ready,
                "seconds": wall,
                "big_batch_status": refusals[0][0],
                "big_batch_refused_seconds": seconds[2],
            }
        )
    )


if __name__ == "__main__":
    main()
