"""Load: N clients submitting and waiting for a fixed time against the local stack.

`python -m benchmarks.load --clients 50 --seconds 120` starts the service as local
processes (tests.stack: migrate, gunicorn, 2 Celery workers) on a
fresh PostgreSQL database and Redis database 13 (`--embedded`: SQLite files),
gives every client a token of its own tenant, and runs the clients: each submits
a seed fit (thermometer data, 5000 epochs), waits for it to end
(`GET /v1/fits/{id}?wait=30`; `--mode poll`: a GET every 100 ms, the old client), and
submits the next. First, the same generator measures the service's floor: `GET /healthz` as
fast as the clients go for `--floor-seconds`. While the clients run, the CPU seconds of the
API, the workers, PostgreSQL, Redis and the generator are counted (from /proc). Afterwards
every accepted id is read back: lost = accepted but unknown or not finished 60 s after the
load stopped. Prints a table and a JSON line; submit latency is the time from POST to its
202; completed fits/s counts the fits seen ended before the time was up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.databases import started
from benchmarks.service import SEED_FIT
from tests.stack import Stack, cpu_by_part, descendants

REDIS_DB = 13
TERMINAL = {"succeeded", "diverged", "failed", "cancelled"}


class Tally:
    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.answers: Counter[str] = Counter()
        self.submit_ms: list[float] = []
        self.requests = 0
        self.completed = 0


async def client(url: str, token: str, until: float, tally: Tally, mode: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
        while time.monotonic() < until:
            start = time.perf_counter()
            try:
                r = await http.post("/v1/fits", json=SEED_FIT)
            except httpx.TransportError as exc:
                tally.requests += 1
                tally.answers[type(exc).__name__] += 1
                continue
            tally.requests += 1
            tally.answers[str(r.status_code)] += 1
            if r.status_code != 202:
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            tally.submit_ms.append((time.perf_counter() - start) * 1000)
            fit = r.json()
            tally.accepted.append(fit["id"])
            while fit["status"] not in TERMINAL and time.monotonic() < until:
                if mode == "poll":
                    await asyncio.sleep(0.1)
                    p = await http.get(f"/v1/fits/{fit['id']}")
                else:
                    p = await http.get(f"/v1/fits/{fit['id']}", params={"wait": 30})
                tally.requests += 1
                tally.answers[str(p.status_code)] += 1
                if p.status_code == 200:
                    fit = p.json()
            if fit["status"] in TERMINAL and time.monotonic() < until:
                tally.completed += 1


async def floor(url: str, clients: int, seconds: float) -> float:
    """Requests per second of `GET /healthz` from the same generator: the most any route can give."""
    until = time.monotonic() + seconds
    counts = [0] * clients

    async def one(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while time.monotonic() < until:
                if (await http.get("/healthz")).status_code == 200:
                    counts[i] += 1

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return sum(counts) / (time.monotonic() - started)


async def read_back(url: str, tokens: list[str], owners: dict[str, int], deadline: float) -> list[str]:
    """Accepted ids that are unknown, or not finished by the deadline."""
    pending = dict(owners)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while pending and time.monotonic() < deadline:
            for fit_id, who in list(pending.items()):
                r = await http.get(f"/v1/fits/{fit_id}", headers={"Authorization": f"Bearer {tokens[who]}"})
                if r.status_code == 200 and r.json()["status"] in TERMINAL:
                    del pending[fit_id]
            if pending:
                await asyncio.sleep(1)
    return list(pending)


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far (user + system, from /proc) by the API's processes, the workers'
    (with their pool children), PostgreSQL's and Redis's, and this generator."""
    api, workers = stack.children[0].pid, {child.pid for child in stack.children[1:]}
    parts = {pid: "api" for pid in descendants({api})} | {pid: "workers" for pid in descendants(workers)}

    def part_of(pid: int, name: str) -> str | None:
        return parts.get(pid) or next((p for p in ("postgres", "redis") if name.startswith(p)), None)

    used = cpu_by_part(part_of, ("api", "workers", "postgres", "redis"))
    own = resource.getrusage(resource.RUSAGE_SELF)
    used["generator"] = own.ru_utime + own.ru_stime
    return used


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else float("nan")


async def run(stack: Stack, clients: int, seconds: float, mode: str, floor_seconds: float) -> dict[str, Any]:
    tokens = [stack.create_token(f"load-{i}") for i in range(clients)]
    healthz_rps = await floor(stack.url, clients, floor_seconds) if floor_seconds > 0 else float("nan")
    tallies = [Tally() for _ in range(clients)]
    until = time.monotonic() + seconds
    before = cpu_seconds(stack)
    await asyncio.gather(*(client(stack.url, tokens[i], until, tallies[i], mode) for i in range(clients)))
    after = cpu_seconds(stack)
    owners = {fit_id: i for i, t in enumerate(tallies) for fit_id in t.accepted}
    lost = await read_back(stack.url, tokens, owners, time.monotonic() + 60)
    answers: Counter[str] = sum((t.answers for t in tallies), Counter())
    requests = sum(t.requests for t in tallies)
    errors = sum(n for code, n in answers.items() if not code.startswith("2"))
    submit_ms = [ms for t in tallies for ms in t.submit_ms]
    completed_per_s = sum(t.completed for t in tallies) / seconds
    return {
        "clients": clients,
        "seconds": seconds,
        "mode": mode,
        "healthz_rps": healthz_rps,
        "completed_fits_per_s": completed_per_s,
        # Where the machine's time went during the load: CPU seconds by part.
        "cpu_s": {part: round(after[part] - before.get(part, 0.0), 1) for part in after},
        "ratio_to_floor": completed_per_s / healthz_rps,
        "requests": requests,
        "accepted": len(owners),
        "lost": len(lost),
        "errors": errors,
        "error_ratio": errors / max(requests, 1),
        "answers": dict(answers),
        "submit_p50_ms": statistics.median(submit_ms),
        "submit_p95_ms": percentile(submit_ms, 95),
        "submit_p99_ms": percentile(submit_ms, 99),
        "fits_per_s": len(owners) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--embedded", action="store_true", help="SQLite and the SQLite broker")
    parser.add_argument("--mode", choices=["wait", "poll"], default="wait", help="how clients learn a fit ended")
    parser.add_argument("--floor-seconds", type=float, default=20, help="GET /healthz phase first (0: skip)")
    parser.add_argument("--pooler", action="store_true", help="through PgBouncer in transaction mode")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="calib-load-") as tmp,
        started(args.embedded, Path(tmp), args.workers, REDIS_DB, "calib_load", pooled=args.pooler) as stack,
    ):
        result = asyncio.run(run(stack, args.clients, args.seconds, args.mode, args.floor_seconds))
    backend = "embedded" if args.embedded else "PostgreSQL + Redis"
    result["backend"] = backend
    print(f"{args.clients} clients ({args.mode}) for {args.seconds:.0f} s, {backend}, {args.workers} workers")
    print(
        "| /healthz rps | requests | accepted | lost | error ratio | submit p50 | submit p95 | submit p99 "
        "| completed fits/s | ÷ floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['healthz_rps']:.0f} | {result['requests']} | {result['accepted']} | {result['lost']} | "
        f"{result['error_ratio']:.4%} | {result['submit_p50_ms']:.1f} ms | {result['submit_p95_ms']:.1f} ms | "
        f"{result['submit_p99_ms']:.1f} ms | {result['completed_fits_per_s']:.1f} | {result['ratio_to_floor']:.3f} |"
    )
    print("CPU seconds during the load:", ", ".join(f"{part} {s:.1f}" for part, s in result["cpu_s"].items()))
    print(json.dumps({"benchmark": "service.load", **result}))


if __name__ == "__main__":
    main()
