"""A block of the iterative engine when the machine gets busy during it: `python -m benchmarks.block_cut`.

The runner sizes each block from the last one's speed to take about a second (cancellation and
progress are seen between blocks). This sizes a block so on the quiet machine, starts `--busy`
processes that spin, and runs it: once with the number of epochs alone (the engine before the cut),
once with `seconds=1.0` as the runner now passes it. Prints one JSON line per run: the epochs the
block was sized for, the epochs it ran, and its wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.service import T_C, T_U
from services.worker.engine.iterative import Iterative
from services.worker.engine.series import SeriesBatch
from shared.contract.optimizers import options_of

WINDOW = 64  # the engine's stopping window: blocks are whole windows


def one_block(seconds: float | None, busy: int) -> dict[str, object]:
    batch = SeriesBatch.build(
        [np.array(T_U)],
        [np.array(T_C)],
        epochs=[10_000_000],
        learning_rate=[1e-2],
        input_scale=[0.1],
        w0=[1.0],
        b0=[0.0],
    )
    engine = Iterative(batch, "adam", [options_of("adam")])
    started = time.perf_counter()
    engine.run(10 * WINDOW)
    per_epoch = (time.perf_counter() - started) / (10 * WINDOW)
    sized = max(WINDOW, int(1.0 / per_epoch) // WINDOW * WINDOW)  # as the runner sizes it
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.3)
        started = time.perf_counter()
        block = engine.run(sized, seconds=seconds)
        took = time.perf_counter() - started
    finally:
        for process in spinning:
            process.kill()
            process.wait()
    return {"seconds": seconds, "sized_epochs": sized, "ran_epochs": block.last - block.first + 1, "wall_s": took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=4, help="processes spinning during the block")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for _ in range(args.runs):
        for seconds in (None, 1.0):
            print(json.dumps({"benchmark": "block_cut", "busy": args.busy, **one_block(seconds, args.busy)}))


if __name__ == "__main__":
    main()
