"""How batch throughput grows with worker processes, and how much memory a worker takes.

`python -m benchmarks.scaling --workers 1 2 4`

For each worker count it starts the service as local processes (migrate, gunicorn,
N Celery workers: tests.stack, the same command lines as `calib stack`)
on a fresh PostgreSQL database and a Redis database it flushes (or, with
`--embedded`, on fresh SQLite files), runs the 10,000-fit batch of
benchmarks.service from POST to `completed`, reads the workers' peak resident set
(VmHWM of every worker process and its pool children), and stops the service.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.databases import started
from benchmarks.service import batch_to_completed

REDIS_DB = 14


def run_once(workers: int, fits: int, chunk_size: int, embedded: bool, tmp: Path) -> dict[str, Any]:
    with started(
        embedded, tmp / f"run-{workers}", workers, REDIS_DB, "calib_bench", CALIB_CHUNK_SIZE=str(chunk_size)
    ) as stack:
        times = batch_to_completed(stack.http, fits)
        peak = stack.worker_peak_rss()
    return {"workers": workers, **times, "fits_per_s": fits / times["completed_s"], "worker_peak_rss_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=1024,
        help="fits per chunk (one Celery task); smaller chunks let more workers share a batch",
    )
    parser.add_argument("--embedded", action="store_true", help="SQLite and the SQLite broker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="calib-scaling-") as tmp:
        rows = [run_once(n, args.fits, args.chunk_size, args.embedded, Path(tmp)) for n in args.workers]
    base = rows[0]["fits_per_s"]
    backend = "embedded" if args.embedded else "PostgreSQL + Redis"
    print(f"{args.fits} fits x 5000 epochs, chunks of {args.chunk_size}, {backend}")
    print("| workers | accepted | completed | fits/s | vs first | worker peak RSS |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['workers']} | {row['accepted_s']:.2f} s | {row['completed_s']:.2f} s | "
            f"{row['fits_per_s']:.0f} | {row['fits_per_s'] / base:.2f}x | {row['worker_peak_rss_mb']:.0f} MB |"
        )
    print(
        json.dumps(
            {
                "benchmark": "service.scaling",
                "backend": backend,
                "fits": args.fits,
                "chunk_size": args.chunk_size,
                "runs": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
