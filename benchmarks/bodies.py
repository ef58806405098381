"""Large request bodies against the running API (issue 28, and issue 22's hostile Parquet file):
the largest legal batch of each kind alone and eight at once, eight oversize bodies of each kind at
once, and the API's processes' memory through each.

    python -m benchmarks.bodies [--series 14000] [--points 1000] [--parallel 8] [--budget BYTES]
                                [--phases legal,parallel,oversize,hostile]

The stack's API (gunicorn, 2 processes, no worker) on the embedded default, or on PostgreSQL +
Redis with CALIB_DATABASE_URL / CALIB_BROKER_URL set; CALIB_PARSE_MEMORY_BYTES is `budget` if
given. The bodies:
- legal: `series` × `points` readings (14M rows at the defaults: the issue's 234 MB CSV) as CSV,
  as JSON (one fit per series) and as Parquet;
- oversize: 200 MB of CSV whose one series has 18M points, 200 MB of JSON whose one fit's t_u
  never ends, and a Parquet file of one series of 2M points (each past max_points_per_fit);
- hostile: issue 22's Parquet file (500,000 rows and a 1,000-byte column on every row).
Each phase starts from each API process's peak RSS reset to its RSS (/proc/PID/clear_refs), and
prints each answer's status and time, each process's RSS before and its peak after, and whether
/readyz answered 200 throughout (asked every 0.25 s).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tests.stack import Stack, descendants, peak_rss

_MEDIA = {"csv": "text/csv", "json": "application/json", "parquet": "application/vnd.apache.parquet"}


def legal_table(series: int, points: int) -> pa.Table:
    """Readings written as a lab writes them (two decimals), `points` per series."""
    rng = np.random.default_rng(28)
    t_u = np.round(rng.uniform(20.0, 90.0, series * points), 2)
    return pa.table(
        {
            "series": pa.array(np.repeat(np.arange(series), points).astype(str)),
            "t_u": t_u,
            "t_c": np.round(0.5 * t_u - 17.0, 2),
        }
    )


def as_csv(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pacsv.write_csv(table, out, pacsv.WriteOptions(quoting_style="none"))
    return out.getvalue()


def as_json(table: pa.Table, points: int) -> bytes:
    t_u, t_c = table.column("t_u").to_numpy(), table.column("t_c").to_numpy()
    fits = (
        json.dumps({"t_u": t_u[i : i + points].tolist(), "t_c": t_c[i : i + points].tolist()})
        for i in range(0, len(t_u), points)
    )
    return b'{"defaults": {"epochs": 10}, "fits": [' + ",".join(fits).encode() + b"]}"


def as_parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def oversize(kind: str) -> bytes:
    if kind == "csv":
        return b"series,t_u,t_c\n" + b"a,12.5,2.25\n" * 18_000_000
    if kind == "json":
        return b'{"fits": [{"t_c": [1, 2], "t_u": [' + b"12.5," * 40_000_000 + b"1]}]}"
    rows = 2_000_000
    return as_parquet(pa.table({"series": ["a"] * rows, "t_u": np.full(rows, 12.5), "t_c": np.full(rows, 2.25)}))


def hostile_parquet(rows: int = 500_000) -> bytes:
    series = np.repeat(np.arange(rows // 10), 10).astype(str)
    t_u = np.tile(np.linspace(20.0, 90.0, 10), rows // 10)
    table = pa.table({"series": series, "t_u": t_u, "t_c": 0.5 * t_u - 17, "notes": pa.array(["x" * 1000] * rows)})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def api_pids(stack: Stack) -> list[int]:
    return sorted(descendants({stack.children[0].pid}))


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peaks(pids: list[int]) -> None:
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def _post(stack: Stack, body: bytes, kind: str, answers: list[tuple[int, float, str]]) -> None:
    started = time.perf_counter()
    with httpx.Client(base_url=stack.url, headers=dict(stack.http.headers), timeout=600) as client:
        r = client.post("/v1/batches?epochs=10", content=body, headers={"Content-Type": _MEDIA[kind]})
    detail = "" if r.status_code == 202 else f"{r.json().get('detail', '')} Retry-After={r.headers.get('Retry-After')}"
    answers.append((r.status_code, time.perf_counter() - started, detail))


def phase(stack: Stack, name: str, bodies: list[tuple[bytes, str]]) -> dict[str, Any]:
    """POST every body at once; the answers, each API process's RSS before and peak after, /readyz."""
    pids = api_pids(stack)
    _reset_peaks(pids)
    before = {pid: _rss(pid) for pid in pids}
    answers: list[tuple[int, float, str]] = []
    threads = [threading.Thread(target=_post, args=(stack, body, kind, answers)) for body, kind in bodies]
    ready: list[int] = []
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        try:
            ready.append(stack.http.get("/readyz", timeout=10).status_code)
        except httpx.HTTPError:
            ready.append(0)
        time.sleep(0.25)
    for thread in threads:
        thread.join()
    peaks = {pid: peak_rss(pid) for pid in pids}
    result = {
        "phase": name,
        "answers": sorted((status, round(seconds, 1)) for status, seconds, _ in answers),
        "details": sorted({detail for _, _, detail in answers if detail}),
        "rss_mb_before": [round(before[pid] / 1e6) for pid in pids],
        "peak_mb": [round(peaks[pid] / 1e6) for pid in pids],
        "growth_mb": [round((peaks[pid] - before[pid]) / 1e6) for pid in pids],
        "readyz_all_200": set(ready) <= {200},
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=14_000)
    parser.add_argument("--points", type=int, default=1_000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--budget", type=int, default=0, help="CALIB_PARSE_MEMORY_BYTES (0: the default)")
    parser.add_argument("--phases", default="legal,parallel,oversize,hostile")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    table = legal_table(args.series, args.points)
    legal: dict[str, Callable[[], bytes]] = {
        "csv": lambda: as_csv(table),
        "json": lambda: as_json(table, args.points),
        "parquet": lambda: as_parquet(table),
    }
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CALIB_DATA_DIR": f"{tmp}/data"}
        for name in ("CALIB_DATABASE_URL", "CALIB_BROKER_URL"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        if args.budget:
            env["CALIB_PARSE_MEMORY_BYTES"] = str(args.budget)
        stack = Stack(env, Path(tmp) / "logs", workers=0).start()
        try:
            for kind in ("csv", "json", "parquet"):
                if phases & {"legal", "parallel"}:
                    body = legal[kind]()
                    print(f"{kind}: the largest legal batch is {len(body):,} bytes", flush=True)
                    if "legal" in phases:
                        phase(stack, f"{kind} legal alone", [(body, kind)])
                    if "parallel" in phases:
                        phase(stack, f"{kind} legal x{args.parallel}", [(body, kind)] * args.parallel)
                    del body
                if "oversize" in phases:
                    body = oversize(kind)
                    print(f"{kind}: oversize body of {len(body):,} bytes", flush=True)
                    phase(stack, f"{kind} oversize x{args.parallel}", [(body, kind)] * args.parallel)
                    del body
            if "hostile" in phases:
                body = hostile_parquet()
                phase(stack, "hostile parquet alone", [(body, "parquet")])
                phase(stack, f"hostile parquet x{args.parallel}", [(body, "parquet")] * args.parallel)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
