"""Instruments through HTTP, on a stack it starts on fresh databases (`--start postgres` or `embedded`):

- apply: 1,000 instruments calibrated in one CSV batch, then POST /v1/apply with 1,000,000 and
  5,000,000 readings (`instrument,t_u`, streamed from a file, the answer streamed to nothing):
  rows per second, and the API processes' peak resident memory after each (VmHWM: a flat figure
  means the rows are never all in memory);
- webhooks: fits and a batch with a callback_url to a receiver on 127.0.0.1, and the delay from the
  `finished_at` the service stamps to the POST's arrival (one machine, one clock).

    python -m benchmarks.instruments --start postgres
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.databases import started
from tests.receiver import receiving
from tests.stack import Stack, descendants, peak_rss

REDIS_DB = 10
INSTRUMENTS = 1000


def _calibrate(stack: Stack) -> list[str]:
    rng = np.random.default_rng(1)
    lines = ["series,t_u,t_c"]
    names = [f"TT-{i:04d}" for i in range(INSTRUMENTS)]
    for name in names:
        u = np.linspace(0, 100, 6)
        c = rng.uniform(0.4, 0.6) * u + rng.uniform(-20, -10) + rng.normal(0, 0.1, u.size)
        lines += [f"{name},{x:.4f},{y:.4f}" for x, y in zip(u, c, strict=True)]
    r = stack.http.post(
        "/v1/batches?epochs=auto&max_epochs=20000&normalize=standardize&learning_rate=auto",
        content="\n".join(lines) + "\n",
        headers={"Content-Type": "text/csv"},
    )
    r.raise_for_status()
    batch = stack.wait_batch(r.json()["id"], timeout=300)
    assert batch["counts"]["succeeded"] == INSTRUMENTS, batch
    return names


def _readings(path: Path, names: list[str], rows: int) -> None:
    rng = np.random.default_rng(rows)
    with path.open("w") as out:
        out.write("instrument,t_u\n")
        for start in range(0, rows, 200_000):
            count = min(200_000, rows - start)
            which = rng.integers(0, len(names), count)
            values = rng.uniform(-50, 150, count)
            out.write("".join(f"{names[i]},{v:.3f}\n" for i, v in zip(which, values, strict=True)))


def _api_peak(stack: Stack) -> int:
    api = stack.children[0].pid
    return max(peak_rss(pid) for pid in descendants({api}) - {api})  # gunicorn's workers


def apply_figures(stack: Stack, tmp: Path, sizes: list[int]) -> list[dict[str, Any]]:
    names = _calibrate(stack)
    print({"api_peak_rss_mb_before_apply": round(_api_peak(stack) / 1e6)}, flush=True)
    out = []
    for rows in sizes:
        path = tmp / f"readings-{rows}.csv"
        _readings(path, names, rows)
        started_at = time.perf_counter()
        received = 0
        with (
            path.open("rb") as body,
            stack.http.stream(
                "POST",
                "/v1/apply?interval=0.95",
                content=iter(lambda: body.read(1 << 20), b""),
                headers={"Content-Type": "text/csv"},
                timeout=600,
            ) as response,
        ):
            response.raise_for_status()
            first_byte = None
            for piece in response.iter_bytes():
                first_byte = first_byte or time.perf_counter() - started_at
                received += len(piece)
        seconds = time.perf_counter() - started_at
        out.append(
            {
                "rows": rows,
                "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds),
                "first_byte_s": round(first_byte or 0, 2),
                "in_mb": round(path.stat().st_size / 1e6, 1),
                "out_mb": round(received / 1e6, 1),
                "api_peak_rss_mb": round(_api_peak(stack) / 1e6),
            }
        )
        print(out[-1], flush=True)
    return out


def _when(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def webhook_figures(stack: Stack, fits: int) -> dict[str, Any]:
    body = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 1000}
    with receiving([]) as receiver:
        ids = []
        for _ in range(fits):
            ids.append(stack.submit({**body, "callback_url": receiver.url, "input_scale": 0.1})["id"])
            stack.wait(ids[-1])
        batch = stack.http.post(
            "/v1/batches", json={"fits": [body] * 1000, "defaults": {"input_scale": 0.1}, "callback_url": receiver.url}
        ).json()
        ended = stack.wait_batch(batch["id"], timeout=300)
        arrivals = receiver.wait_for(fits + 1, 60)
        finished = {fit_id: _when(stack.http.get(f"/v1/fits/{fit_id}").json()["finished_at"]) for fit_id in ids}
        delays, batch_delay = [], None
        for got in arrivals:
            event = got.headers["Calib-Event"]
            sent = json.loads(got.body)
            if event == "fit.ended":
                delays.append(got.wall - finished[sent["id"]])
            else:
                batch_delay = got.wall - _when(ended["finished_at"])
    delays.sort()
    return {
        "fits": fits,
        "fit_median_ms": round(statistics.median(delays) * 1000, 1),
        "fit_p95_ms": round(delays[int(0.95 * (len(delays) - 1))] * 1000, 1),
        "fit_max_ms": round(delays[-1] * 1000, 1),
        "batch_1000_ms": round((batch_delay or float("nan")) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", choices=["postgres", "embedded"], default="postgres")
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--webhook-fits", type=int, default=30)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        started(
            args.start == "embedded",
            Path(tmp),
            workers=1,
            redis_db=REDIS_DB,
            name="calib_bench_instruments",
            CALIB_WEBHOOK_ALLOWED_HOSTS="http://127.0.0.1:*",  # plain http on loopback, as the e2e receivers
            CALIB_RATE_LIMIT="100000/second",
        ) as stack,
    ):
        print(f"backend: {args.start}")
        apply_figures(stack, Path(tmp), args.rows)
        print(webhook_figures(stack, args.webhook_fits), flush=True)


if __name__ == "__main__":
    main()
