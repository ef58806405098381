"""Database rows to the JSON of API.md."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shared.models import SUCCEEDED, Fit


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fit_json(fit: Fit) -> dict[str, Any]:
    result = None
    if fit.status == SUCCEEDED and fit.w is not None and fit.b is not None:
        result = {
            "w": fit.w,
            "b": fit.b,
            "loss": fit.loss,
            "w_raw": fit.w * fit.input_scale,
            "b_raw": fit.b,
        }
    error = {"type": fit.error_type, "detail": fit.error_detail} if fit.error_type else None
    return {
        "id": fit.id,
        "status": fit.status,
        "created_at": iso(fit.created_at),
        "started_at": iso(fit.started_at),
        "finished_at": iso(fit.finished_at),
        "epochs": fit.epochs,
        "epochs_done": fit.epochs_done,
        "n_points": fit.n_points,
        "attempt": fit.attempt,
        "params": {
            "learning_rate": fit.learning_rate,
            "init": {"w": fit.init_w, "b": fit.init_b},
            "input_scale": fit.input_scale,
            "optimizer": fit.optimizer,
        },
        "labels": fit.labels or {},
        "batch_id": fit.batch_id,
        "result": result,
        "diverged_at_epoch": fit.diverged_at_epoch,
        "error": error,
        "links": {"self": f"/v1/fits/{fit.id}", "losses": f"/v1/fits/{fit.id}/losses"},
    }
