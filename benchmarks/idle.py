"""What the service costs doing nothing: the CPU seconds each of its processes spends over a
quiet interval, after it has started and settled (`python -m benchmarks.idle [--seconds 20]`).

A laptop running the embedded default all day, or a test suite keeping a stack up while other
tests run, pays this; on the embedded default it is mostly the worker polling its broker file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.databases import started
from benchmarks.load import cpu_seconds

PARTS = ("api", "workers")  # the service's own processes (load.cpu_seconds also reads the servers')


def measure(embedded: bool, seconds: float, settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, started(embedded, Path(tmp), 1, 14, "calib_idle") as stack:
        time.sleep(settle)
        before = cpu_seconds(stack)
        time.sleep(seconds)
        after = cpu_seconds(stack)
    return {part: round((after[part] - before[part]) / seconds * 100, 2) for part in PARTS}  # % of one core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--settle", type=float, default=3)
    args = parser.parse_args()
    for embedded in (True, False):
        shares = measure(embedded, args.seconds, args.settle)
        backend = "embedded" if embedded else "postgres"
        print(json.dumps({"backend": backend, "seconds": args.seconds, "percent_of_a_core": shares}))


if __name__ == "__main__":
    main()
