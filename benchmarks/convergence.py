"""The 300-sensor night of issue 16, against a running embedded stack: how many fits converge.

    python -m benchmarks.convergence [--sensors 300]

Three batches of the same long CSV (15 readings a sensor, t_u between 20 and 90, slopes near
0.55, offsets near -17.5): raw input with `learning_rate=auto` and 5000 epochs; the same
standardized; raw with `epochs=auto`. Prints how many converged, the median `epochs_needed`
on raw input, and the time from POST to `completed` of each batch.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.stack import Stack


def sensors_csv(count: int, readings: int = 15, seed: int = 7) -> str:
    rng = np.random.default_rng(seed)
    lines = ["series,t_u,t_c"]
    for i in range(count):
        t_u = np.round(rng.uniform(20, 90, readings), 2)
        t_c = np.round(rng.normal(0.55, 0.02) * t_u + rng.normal(-17.5, 0.5) + rng.normal(0, 0.3, readings), 3)
        lines += [f"TT-{i:03d},{u},{c}" for u, c in zip(t_u, t_c, strict=True)]
    return "\n".join(lines) + "\n"


def run(stack: Stack, body: str, query: str) -> tuple[dict[str, object], list[dict[str, str]], float]:
    started = time.perf_counter()
    batch_id = stack.http.post(f"/v1/batches?{query}", content=body, headers={"Content-Type": "text/csv"}).json()["id"]
    batch = stack.wait_batch(batch_id, timeout=600)
    seconds = time.perf_counter() - started
    rows = list(csv.DictReader(io.StringIO(stack.http.get(f"/v1/batches/{batch_id}/fits?format=csv").text)))
    return batch, rows, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sensors", type=int, default=300)
    args = parser.parse_args()
    body = sensors_csv(args.sensors)
    report: dict[str, object] = {"benchmark": "convergence", "sensors": args.sensors}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack({"CALIB_DATA_DIR": f"{tmp}/data"}, Path(tmp) / "logs", workers=1).start()
        try:
            for name, query in (
                ("raw_5000", "epochs=5000&learning_rate=auto"),
                ("standardized_5000", "epochs=5000&learning_rate=auto&normalize=standardize"),
                ("raw_auto", "epochs=auto&learning_rate=auto"),
            ):
                batch, rows, seconds = run(stack, body, query)
                converged = sum(row["converged"] == "true" for row in rows)
                line = f"{name:<18} {converged}/{len(rows)} converged, POST to completed {seconds:.2f} s"
                entry: dict[str, object] = {"converged": converged, "seconds": round(seconds, 3)}
                if name == "raw_5000":
                    # epochs_needed is on the fit, not in the CSV: one page of the batch's fits.
                    page = stack.http.get(f"/v1/batches/{batch['id']}/fits?limit=1000").json()
                    needed = [fit["result"]["convergence"]["epochs_needed"] for fit in page["items"]]
                    entry["median_epochs_needed"] = statistics.median(needed)
                    line += f"; median epochs_needed {statistics.median(needed):,.0f}"
                if name == "raw_auto":
                    done = [int(row["epochs_done"]) for row in rows]
                    entry["median_epochs_done"] = statistics.median(done)
                    line += f"; median epochs_done {statistics.median(done):,.0f}"
                print(line, flush=True)
                report[name] = entry
        finally:
            stack.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
