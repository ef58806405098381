"""What a worker's pool process costs at its start: `python -m benchmarks.pool_process`.

Starts an embedded stack with one worker, waits 3 s, and reads from /proc, for the worker's main
process and each process it forked (the pool's, and beat's): the memory it does not share with its
parent (Private_Dirty), its minor page faults, and its CPU seconds so far.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from tests.backends import backend_env
from tests.stack import Stack, cpu_of, descendants, proc_stat


def read(pid: int) -> dict[str, float]:
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    kilobytes = {line.split(":")[0]: int(line.split(":")[1].split()[0]) for line in rollup}
    _, fields = proc_stat(pid)
    return {"private_dirty_kb": kilobytes["Private_Dirty"], "minor_faults": int(fields[7]), "cpu_s": cpu_of(fields)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, backend_env("embedded", Path(tmp)) as env:
        stack = Stack(env, Path(tmp) / "logs", workers=1, api_processes=1).start()
        try:
            time.sleep(3)
            worker = stack.children[1].pid
            for pid in [worker, *sorted(descendants({worker}) - {worker})]:
                print(json.dumps({"process": "main" if pid == worker else "forked", "pid": pid, **read(pid)}))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
