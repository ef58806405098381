"""A fit and a batch as the client hands them out: the service's JSON, and what can be done next."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .progress import Bar

if TYPE_CHECKING:
    import numpy as np

    from .client import Client

FIT_ENDS = ("succeeded", "diverged", "failed", "cancelled")
# How long one request waits (the service's most is 60 s); with a progress bar, a second, so it moves.
_WAIT_SECONDS = 30.0
_PROGRESS_SECONDS = 1.0
_SHORTEST_WAIT = 0.05
BATCH_ENDS = ("completed", "cancelled")


class _Resource:
    """An object of the service as last read: `data` is its JSON."""

    collection = ""
    ends: tuple[str, ...] = ()

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client, self.data = client, data

    id = property(lambda self: str(self.data["id"]))
    status = property(lambda self: str(self.data["status"]))

    @property
    def done(self) -> bool:
        return self.status in self.ends

    def refresh(self) -> Any:
        self.data = self.client.json("GET", f"/v1/{self.collection}/{self.id}")
        return self

    def _wait(self, total: int, unit: str, progressed: Any, progress: bool, timeout: float | None) -> None:
        """Ask the service to answer when this has ended (`?wait=`), until it has; with progress,
        a bar of `progressed()` out of `total` on stderr, redrawn at least every second."""
        bar = Bar(total, unit) if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if bar:
                    bar.show(progressed(), self.status)
                if self.done:
                    return
                seconds = _PROGRESS_SECONDS if bar else _WAIT_SECONDS
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"{self.collection[:-1]} {self.id} still {self.status} after {timeout} s")
                    seconds = max(_SHORTEST_WAIT, min(seconds, left))
                # The HTTP timeout past the wait: the answer may take all of it.
                asked = time.monotonic()
                self.data = self.client.json(
                    "GET", f"/v1/{self.collection}/{self.id}", params={"wait": round(seconds, 3)}, timeout=seconds + 30
                )
                if not self.done and time.monotonic() - asked < seconds / 2:
                    # Answered before its end: the service had no wait slot free for this tenant.
                    time.sleep(min(1.0, seconds))
        finally:
            if bar:
                bar.close()


class Fit(_Resource):
    collection, ends = "fits", FIT_ENDS

    def __repr__(self) -> str:
        return f"<Fit {self.id} {self.status} {self.epochs_done}/{self.epochs}>"

    epochs = property(lambda self: int(self.data["epochs"]))
    epochs_done = property(lambda self: int(self.data["epochs_done"]))
    result = property(lambda self: self.data.get("result"))
    labels = property(lambda self: dict(self.data.get("labels") or {}))

    def wait(self, progress: bool = False, timeout: float | None = None) -> Fit:
        """Until the fit ends (any status), told by the service as it ends; with progress, a bar of
        epochs done on stderr."""
        self._wait(self.epochs, "epochs", lambda: self.epochs_done, progress, timeout)
        return self

    def losses(self, as_array: bool = False, validation: bool = False) -> list[float] | np.ndarray:
        """Every recorded epoch's loss (or validation loss), following the pages."""
        loss, val_loss = self.curves()
        if validation and val_loss is None:
            raise ValueError(f"fit {self.id} has no validation split")
        values = val_loss if validation else loss
        assert values is not None
        if not as_array:
            return values
        import numpy as np  # an extra: `pip install calib-client[numpy]`

        return np.asarray(values, dtype=np.float64)

    def curves(self) -> tuple[list[float], list[float] | None]:
        """Every recorded epoch's training loss and, with a split, validation loss, in one walk of the pages."""
        loss: list[float] = []
        val_loss: list[float] | None = None
        for page in self.client.pages(f"/v1/fits/{self.id}/losses", {"limit": 100_000}):
            loss += page["loss"]
            if "val_loss" in page:
                val_loss = [] if val_loss is None else val_loss
                val_loss += [math.nan if v is None else v for v in page["val_loss"]]
        return loss, val_loss

    def loss_curve(self, points: int = 500, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
        """At most `points` buckets (first/last epoch, min, max, last loss; val_* with a split)."""
        params = {k: v for k, v in {"points": points, "start": start, "end": end}.items() if v is not None}
        return list(self.client.json("GET", f"/v1/fits/{self.id}/losses", params=params)["buckets"])

    def readings(self) -> dict[str, Any]:
        """The fit's data: t_u, t_c and the validation_indices held out."""
        return dict(self.client.json("GET", f"/v1/fits/{self.id}/data"))

    def predict(
        self,
        t_u: Sequence[float],
        interval: float | None = None,
        allow_unconverged: bool = False,
        u_t_u: float | Sequence[float] | None = None,
    ) -> dict[str, list[float]]:
        """Calibrated values for raw readings; with `interval` (e.g. 0.95), prediction intervals too
        (a fit that has not converged: a 409, unless `allow_unconverged`, then bounds that hold the gap);
        with `u_t_u` (each reading's standard uncertainty, or one for all), `u_t_c`."""
        body: dict[str, Any] = {"t_u": list(map(float, t_u))}
        if interval is not None:
            body["interval"] = interval
        if allow_unconverged:
            body["allow_unconverged"] = True
        if u_t_u is not None:
            body["u_t_u"] = _numbers(u_t_u)
        answer = self.client.json("POST", f"/v1/fits/{self.id}/predict", json=body)
        return {k: answer[k] for k in ("t_c", "lower", "upper", "u_t_c") if answer.get(k) is not None}

    def inverse(
        self, t_c: Sequence[float], u_t_c: float | Sequence[float] | None = None, allow_unconverged: bool = False
    ) -> dict[str, Any]:
        """The reading that gives each reference value, `t_u`, and its standard uncertainty `u_t_u`
        (None where the fit has no covariance); `u_t_c` each value's own uncertainty, or one for all."""
        body: dict[str, Any] = {"t_c": list(map(float, t_c))}
        if u_t_c is not None:
            body["u_t_c"] = _numbers(u_t_c)
        if allow_unconverged:
            body["allow_unconverged"] = True
        answer = self.client.json("POST", f"/v1/fits/{self.id}/inverse", json=body)
        return {"t_u": answer["t_u"], "u_t_u": answer["u_t_u"]}

    def cancel(self) -> Fit:
        self.data = self.client.json("POST", f"/v1/fits/{self.id}/cancel")
        return self


RESULT_TYPES = {
    "w": float,
    "b": float,
    "w_raw": float,
    "b_raw": float,
    "loss": float,
    "epochs_done": int,
    "diverged_at_epoch": int,
}


class Batch(_Resource):
    collection, ends = "batches", BATCH_ENDS

    def __repr__(self) -> str:
        return f"<Batch {self.id} {self.status} {self.finished}/{self.count}>"

    @property
    def count(self) -> int:
        return int(self.data["count"])

    @property
    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.data["counts"].items()}

    @property
    def finished(self) -> int:
        return self.count - self.counts.get("queued", 0) - self.counts.get("running", 0)

    def wait(self, progress: bool = False, timeout: float | None = None) -> Batch:
        """Until no fit is queued or running, told by the service as it happens; with progress, a bar
        of fits finished."""
        self._wait(self.count, "fits", lambda: self.finished, progress, timeout)
        return self

    def fits(self, status: str | None = None, page_size: int = 1000) -> Iterator[Fit]:
        params: dict[str, Any] = {"limit": page_size, **({"status": status} if status else {})}
        for page in self.client.pages(f"/v1/batches/{self.id}/fits", params):
            yield from (Fit(self.client, item) for item in page["items"])

    def results_csv(self) -> str:
        """One line per fit: fit_id,series,status,w,b,w_raw,b_raw,loss,epochs_done,diverged_at_epoch."""
        return self.client.request("GET", f"/v1/batches/{self.id}/fits", params={"format": "csv"}).text

    def results(self, as_frame: bool | None = None) -> Any:
        """One row per fit, typed (None where a value is empty); a pandas DataFrame when pandas is
        installed (or as_frame=True), else a list of dicts."""
        rows: list[dict[str, Any]] = []
        for row in csv.DictReader(io.StringIO(self.results_csv())):
            rows.append({k: (RESULT_TYPES[k](v) if v else None) if k in RESULT_TYPES else v for k, v in row.items()})
        if as_frame is False:
            return rows
        try:
            import pandas as pd
        except ImportError:
            if as_frame:
                raise
            return rows
        return pd.DataFrame(rows)

    def cancel(self) -> Batch:
        self.data = self.client.json("POST", f"/v1/batches/{self.id}/cancel")
        return self


def _numbers(given: float | Sequence[float]) -> float | list[float]:
    """One number for all values, or one per value, as the API takes them."""
    return float(given) if isinstance(given, int | float) else list(map(float, given))
