"""A one-line progress bar on stderr, and waiting for a fit with it."""

from __future__ import annotations

import sys
import time
from typing import Any

from services.cli.http import Service

TERMINAL = {"succeeded", "diverged", "failed", "cancelled"}


class Bar:
    def __init__(self, total: int, label: str, width: int = 30) -> None:
        self.total, self.label, self.width = max(total, 1), label, width
        self.tty = sys.stderr.isatty()

    def show(self, done: int, note: str = "") -> None:
        filled = int(self.width * min(done, self.total) / self.total)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {note}"
        sys.stderr.write(("\r" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def wait_for_fit(service: Service, fit_id: str, progress: bool = True, timeout: float = 3600,
                 interval: float = 0.1) -> dict[str, Any]:
    fit = service.json("GET", f"/v1/fits/{fit_id}")
    bar = Bar(fit["epochs"], "epochs") if progress else None
    deadline = time.monotonic() + timeout
    shown = -1
    while fit["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fit {fit_id} still {fit['status']} after {timeout} s")
        if bar and fit["epochs_done"] != shown:
            bar.show(fit["epochs_done"], fit["status"])
            shown = fit["epochs_done"]
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)
        fit = service.json("GET", f"/v1/fits/{fit_id}")
    if bar:
        bar.show(fit["epochs_done"], fit["status"])
        bar.close()
    return fit


def wait_for_batch(service: Service, batch_id: str, progress: bool = True,
                   timeout: float = 24 * 3600) -> dict[str, Any]:
    batch = service.json("GET", f"/v1/batches/{batch_id}")
    bar = Bar(batch["count"], "fits") if progress else None
    deadline = time.monotonic() + timeout
    interval, shown = 0.1, -1
    while True:
        finished = batch["count"] - batch["counts"]["queued"] - batch["counts"]["running"]
        if bar and finished != shown:
            bar.show(finished, batch["status"])
            shown = finished
        if batch["status"] in ("completed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch['status']} after {timeout} s")
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)
        batch = service.json("GET", f"/v1/batches/{batch_id}")
    if bar:
        bar.close()
    return batch
