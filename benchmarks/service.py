"""Through HTTP against a running service: `python -m benchmarks.service --url http://127.0.0.1:8000`,
or one it starts itself on fresh databases: `--start postgres` (PostgreSQL + Redis) or `--start
embedded` (tests.stack's processes, 2 workers, the request budget raised above the benchmark's pace).

Submits the seed's final fit (thermometer data, input_scale 0.1, lr 1e-2, 5000
epochs) N times, one after the other, and reports the time from POST to the answer that
says `succeeded`: by waiting (`GET /v1/fits/{id}?wait=30`) and, N times more, by polling
every 2 ms. Then a batch of 10,000 such fits, from POST to `completed` (waited for).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from benchmarks.databases import started
from services.cli.demo import T_C, T_U  # the book's thermometer data, as the demo sends it
from shared.runtime.settings import get_settings
from shared.store.tokens import read_local_token

REDIS_DB = 11
SEED_FIT = {"t_u": T_U, "t_c": T_C, "epochs": 5000, "learning_rate": 1e-2, "input_scale": 0.1}


def submit_to_succeeded(http: httpx.Client, wait: bool = True, timeout: float = 60) -> float:
    start = time.perf_counter()
    fit = http.post("/v1/fits", json=SEED_FIT).json()
    while fit["status"] in ("queued", "running"):
        if time.perf_counter() - start > timeout:
            raise TimeoutError(fit["id"])
        if wait:
            fit = http.get(f"/v1/fits/{fit['id']}", params={"wait": 30}).json()
            continue
        time.sleep(0.002)
        fit = http.get(f"/v1/fits/{fit['id']}").json()
    if fit["status"] != "succeeded":
        raise RuntimeError(fit)
    return time.perf_counter() - start


def batch_body(fits: int) -> dict[str, Any]:
    """A batch of thermometer fits with small per-series noise (the same every run)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "defaults": {"epochs": 5000, "learning_rate": 1e-2, "input_scale": 0.1},
        "fits": [
            {
                "t_u": T_U,
                "t_c": (np.asarray(T_C) + rng.normal(0, 0.3, 11)).round(4).tolist(),
                "labels": {"series": f"s{i}"},
            }
            for i in range(fits)
        ],
    }


def csv_body(fits: int) -> bytes:
    """The same series as a CSV batch, each series an instrument of its own (a nightly run of a fleet)."""
    body = batch_body(fits)
    lines = ["series,instrument,t_u,t_c"]
    for i, fit in enumerate(body["fits"]):
        lines += [f"s{i},sensor-{i},{u},{c}" for u, c in zip(fit["t_u"], fit["t_c"], strict=True)]
    return ("\n".join(lines) + "\n").encode()


def batch_to_completed(
    http: httpx.Client, fits: int, timeout: float = 600, csv: bool = False, key: bool = False
) -> dict[str, float]:
    """batch_body(fits) (or, `csv`, csv_body(fits)), from POST to `completed`; with `key`, under an
    Idempotency-Key (a pipeline that retries sends one: the request is then fingerprinted)."""
    content = csv_body(fits) if csv else None
    body = None if csv else batch_body(fits)
    keyed = {"Idempotency-Key": f"benchmark-{uuid.uuid4()}"} if key else {}
    start = time.perf_counter()
    if content is not None:
        r = http.post(
            "/v1/batches",
            params={"epochs": 5000, "learning_rate": 1e-2, "input_scale": 0.1},
            content=content,
            headers={"Content-Type": "text/csv", **keyed},
            timeout=120,
        )
    else:
        r = http.post("/v1/batches", json=body, headers=keyed, timeout=120)
    r.raise_for_status()
    accepted = time.perf_counter() - start
    batch = r.json()
    while batch["status"] not in ("completed", "cancelled"):
        if time.perf_counter() - start > timeout:
            raise TimeoutError(batch)
        batch = http.get(f"/v1/batches/{batch['id']}", params={"wait": 60}, timeout=90).json()
    total = time.perf_counter() - start
    assert batch["counts"]["succeeded"] == fits, batch
    return {"accepted_s": accepted, "completed_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--token", default=None, help="bearer token (default: CALIB_TOKEN, else the local token `calib up` writes)"
    )
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10_000, help="fits in the batch run (0: skip)")
    parser.add_argument("--start", choices=["postgres", "embedded"], help="start the service on fresh databases")
    parser.add_argument("--csv", action="store_true", help="the batch as CSV, each series an instrument")
    parser.add_argument("--pooler", action="store_true", help="with --start postgres: through PgBouncer")
    parser.add_argument("--key", action="store_true", help="the batch under an Idempotency-Key")
    args = parser.parse_args()
    with ExitStack() as cleanup:
        if args.start:
            tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="calib-service-")))
            stack = cleanup.enter_context(
                started(
                    args.start == "embedded",
                    tmp,
                    2,
                    REDIS_DB,
                    "calib_service",
                    pooled=args.pooler,
                    CALIB_RATE_LIMIT="100000/second",
                )
            )
            url, token = stack.url, stack.token
        else:
            settings = get_settings()
            url, token = args.url, args.token or settings.token or read_local_token(settings.token_file)
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as http:
            submit_to_succeeded(http)  # warm-up: worker imports, connection pools
            times = [submit_to_succeeded(http) for _ in range(args.n)]
            polled = sorted(submit_to_succeeded(http, wait=False) * 1000 for _ in range(args.n))
            batch = batch_to_completed(http, args.batch, csv=args.csv, key=args.key) if args.batch else None
    ms = sorted(t * 1000 for t in times)
    if batch:
        print(
            f"{'CSV ' if args.csv else ''}batch of {args.batch} fits x 5000 epochs{' (keyed)' if args.key else ''}: "
            f"accepted in {batch['accepted_s']:.2f} s, "
            f"completed with all losses stored in {batch['completed_s']:.2f} s"
        )
    print(
        f"seed fit, submit to succeeded (waiting), n={args.n}: median {statistics.median(ms):.1f} ms, "
        f"min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms"
    )
    print(
        f"seed fit, submit to succeeded (polling every 2 ms), n={args.n}: median {statistics.median(polled):.1f} ms, "
        f"min {polled[0]:.1f} ms, max {polled[-1]:.1f} ms"
    )
    print(
        json.dumps(
            {
                "benchmark": "service.seed_fit",
                "url": url,
                "n": args.n,
                "median_ms": statistics.median(ms),
                "min_ms": ms[0],
                "max_ms": ms[-1],
                "polling_median_ms": statistics.median(polled),
                "batch_fits": args.batch,
                "batch": batch,
            }
        )
    )


if __name__ == "__main__":
    main()
