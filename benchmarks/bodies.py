"""Issue 22's hostile Parquet file, and the API's memory while it parses it alone and eight at once.

    python -m benchmarks.bodies [--rows 500000] [--parallel 8] [--budget BYTES]

The file is a legal long table (`rows` readings of rows/10 series) with an extra column holding one
1,000-byte value on every row: about 190 KB on the wire, 500 MB if that column were decoded. It is
POSTed once, then `parallel` times at once, to the stack's API (2 processes; the embedded default,
or PostgreSQL + Redis with CALIB_DATABASE_URL / CALIB_BROKER_URL set), with CALIB_PARSE_MEMORY_BYTES
set to `budget` if given. Printed: each answer's status and time, and the API processes' peak RSS
(VmHWM, summed) before, after the one, and after the eight.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.oversize import api_peak_rss
from tests.stack import Stack


def hostile_parquet(rows: int) -> bytes:
    series = np.repeat(np.arange(rows // 10), 10).astype(str)
    t_u = np.tile(np.linspace(20.0, 90.0, 10), rows // 10)
    table = pa.table({"series": series, "t_u": t_u, "t_c": 0.5 * t_u - 17, "notes": pa.array(["x" * 1000] * rows)})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def post(stack: Stack, body: bytes, answers: list[tuple[int, float]]) -> None:
    started = time.perf_counter()
    r = stack.http.post(
        "/v1/batches?epochs=10",
        content=body,
        headers={"Content-Type": "application/vnd.apache.parquet"},
        timeout=httpx.Timeout(600),
    )
    answers.append((r.status_code, time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--budget", type=int, default=0, help="CALIB_PARSE_MEMORY_BYTES (0: the default)")
    args = parser.parse_args()
    body = hostile_parquet(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CALIB_DATA_DIR": f"{tmp}/data"}
        for name in ("CALIB_DATABASE_URL", "CALIB_BROKER_URL"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        if args.budget:
            env["CALIB_PARSE_MEMORY_BYTES"] = str(args.budget)
        stack = Stack(env, Path(tmp) / "logs", workers=0).start()
        try:
            before = api_peak_rss(stack)
            one: list[tuple[int, float]] = []
            post(stack, body, one)
            after_one = api_peak_rss(stack)
            many: list[tuple[int, float]] = []
            threads = [threading.Thread(target=post, args=(stack, body, many)) for _ in range(args.parallel)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after_many = api_peak_rss(stack)
        finally:
            stack.stop()
    print(f"file: {len(body):,} bytes, {args.rows:,} rows, {args.rows // 10:,} series")
    print(f"alone: {one[0][0]} in {one[0][1]:.1f} s; API peak RSS {before / 1e6:.0f} -> {after_one / 1e6:.0f} MB")
    statuses = sorted(status for status, _ in many)
    slowest = max(seconds for _, seconds in many)
    print(
        f"{args.parallel} at once: {statuses}, the last in {slowest:.1f} s; API peak RSS -> {after_many / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    main()
