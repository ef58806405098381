"""The CPU one process spends on a single fit's requests and its run, without HTTP or Celery:
`python -m benchmarks.request_cpu [--rounds 8] [--embedded]`.

In rounds of 100 seed fits (thermometer data, 5000 epochs), on a fresh PostgreSQL database and
Redis database 14 (`--embedded`: SQLite files and the SQLite broker), through the Flask test client:
- POST: the submissions (token, rate limit, admission, the INSERT, the wake-up);
- run: each fit's chunk claimed, computed and written (the worker's runner), run right after its
  POST, so every chunk holds one fit;
- GET: each ended fit read (`?wait=30`, answered at once).
Reports the median and the least of the rounds' CPU per request (or per run), after a first
round that warms up. CPU time is this process's only: the database's and Redis's are not in it.
The figures of the served load (benchmarks.load) add gunicorn, gevent and Celery to these.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks.databases import fresh_postgres
from benchmarks.service import SEED_FIT
from migrations.apply import upgrade
from services.api import create_app
from shared.runtime import collector
from shared.runtime.settings import Settings
from shared.store import tokens
from shared.store.db import Database
from tests.in_process import run_fit

REDIS_DB = 14
PER_ROUND = 100


def cpu_ms(step: Callable[[], object]) -> float:
    """This process's CPU milliseconds for one call of `step`."""
    started = time.process_time()
    step()
    return 1000 * (time.process_time() - started)


def measure(settings: Settings, rounds: int) -> dict[str, list[float]]:
    upgrade(settings)
    db = Database.from_settings(settings)
    headers = {"Authorization": f"Bearer {tokens.create(db, 'bench').token}"}
    client = create_app(settings).test_client()
    collector.settle_after_start()  # as the served processes do once started

    def submit(ids: list[str]) -> None:
        created: dict[str, Any] = client.post("/v1/fits", json=SEED_FIT, headers=headers).get_json()
        ids.append(created["id"])

    def run(fit_id: str) -> None:
        # Each fit is run before the next is submitted: a chunk of one fit, as a client waiting
        # alone gets. Submitted all first, the first run took the round's fits in one chunk
        # (coalescing) and the other 99 claimed nothing: a figure of a 100-fit chunk, not of one.
        claimed = run_fit(client, fit_id)
        assert claimed == 1, claimed

    def read(fit_id: str) -> None:
        answer: dict[str, Any] = client.get(f"/v1/fits/{fit_id}?wait=30", headers=headers).get_json()
        assert answer["status"] == "succeeded", answer

    spent: dict[str, list[float]] = {"POST": [], "run": [], "GET": []}
    for round_ in range(rounds + 1):
        ids: list[str] = []
        post = ran = 0.0
        for _ in range(PER_ROUND):
            post += cpu_ms(functools.partial(submit, ids))
            ran += cpu_ms(functools.partial(run, ids[-1]))
        got = sum(cpu_ms(functools.partial(read, fit_id)) for fit_id in ids)
        if round_:  # the first round warms up
            for name, value in (("POST", post), ("run", ran), ("GET", got)):
                spent[name].append(value / PER_ROUND)
    db.dispose()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--embedded", action="store_true", help="SQLite files and the SQLite broker")
    args = parser.parse_args()
    # The benchmark sends faster than a tenant's request budget allows.
    unlimited = "100000/second"
    with tempfile.TemporaryDirectory(prefix="calib-request-cpu-") as tmp:
        if args.embedded:
            spent = measure(Settings(data_dir=Path(tmp), rate_limit=unlimited), args.rounds)
        else:
            broker = f"redis://127.0.0.1:6379/{REDIS_DB}"
            redis.Redis.from_url(broker).flushdb()
            with fresh_postgres("calib_request_cpu") as url:
                settings = Settings(data_dir=Path(tmp), database_url=url, broker_url=broker, rate_limit=unlimited)
                spent = measure(settings, args.rounds)
    backend = "SQLite" if args.embedded else "PostgreSQL + Redis"
    print(f"CPU of one process per request, {backend}, {args.rounds} rounds of {PER_ROUND}:")
    print("| step | median ms | least ms |\n|---|---|---|")
    for name, values in spent.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")
    summary = {name: round(statistics.median(values), 3) for name, values in spent.items()}
    print(json.dumps({"benchmark": "request_cpu", "backend": backend, "median_ms": summary}))


if __name__ == "__main__":
    main()
