"""What the service costs doing nothing: the CPU seconds each of its processes spends over a
quiet interval, after it has started and settled (`python -m benchmarks.idle [--seconds 20]`).

A laptop running the embedded default all day, or a test suite keeping a stack up while other
tests run, pays this; on the embedded default it is mostly the worker polling its broker file.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.databases import started
from tests.stack import descendants

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return "?"
    return "api" if "gunicorn" in " ".join(command[:2]) else "worker"


def measure(embedded: bool, seconds: float, settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, started(embedded, Path(tmp), 1, 14, "calib_idle") as stack:
        time.sleep(settle)
        pids = descendants({child.pid for child in stack.children})
        before = {pid: cpu_seconds(pid) for pid in pids}
        time.sleep(seconds)
        spent: dict[str, float] = {}
        for pid in pids:
            spent[role(pid)] = spent.get(role(pid), 0.0) + cpu_seconds(pid) - before[pid]
    return {name: round(value / seconds * 100, 2) for name, value in spent.items()}  # % of one core


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
