"""Database rows to the bodies of API.md, each through its response model."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from services.api.responses import serve
from shared.models import CANCELLED, RUNNING, STATUSES, SUCCEEDED, Batch, Fit
from shared.schemas import BatchPublic, FitList, FitPublic


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fit_json(fit: Fit) -> dict[str, Any]:
    """A fit's body, as FitPublic serializes it."""
    return serve(FitPublic, fit_fields(fit))


def fit_list(fits: list[Fit], next_link: str | None) -> dict[str, Any]:
    """A page of fits, as FitList serializes it (each fit validated once, in the page)."""
    return serve(FitList, {"items": [fit_fields(fit) for fit in fits], "next": next_link})


def fit_fields(fit: Fit) -> dict[str, Any]:
    result = None
    raw = fit.raw_params()
    if raw is not None and fit.w is not None and fit.b is not None:
        w_raw, b_raw = raw
        gap = (
            {"w": w_raw - fit.w_opt, "b": b_raw - fit.b_opt}
            if fit.w_opt is not None and fit.b_opt is not None
            else None
        )
        result = {
            "w": fit.w,
            "b": fit.b,
            "loss": fit.loss,
            "w_raw": w_raw,
            "b_raw": b_raw,
            "w_opt": fit.w_opt,
            "b_opt": fit.b_opt,
            "gap": gap,
            "se_w": fit.se_w,
            "se_b": fit.se_b,
            "cov_wb": fit.cov_wb,
            "r2": fit.r2,
            "residual_sd": fit.residual_sd,
            "val_loss": fit.val_loss,
            "converged": fit.converged,
            "convergence": {
                "gap_se_w": fit.gap_se_w,
                "gap_se_b": fit.gap_se_b,
                "excess_loss": fit.excess_loss,
                "epochs_needed": fit.epochs_needed,
            },
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
            "normalize": fit.normalize,
            **({"input_shift": fit.input_shift} if fit.normalize == "standardize" else {}),
            "optimizer": fit.optimizer,
            "gradient": fit.gradient,
            **({"delta": fit.delta} if fit.delta is not None else {}),
            **({"momentum": fit.momentum} if fit.momentum is not None else {}),
            **({"betas": [fit.beta1, fit.beta2], "eps": fit.eps} if fit.beta1 is not None else {}),
            **({"validation": fit.validation} if fit.validation else {}),
            **({"early_stopping": fit.early_stopping} if fit.early_stopping else {}),
            "convergence_tolerance": fit.convergence_tolerance,
            "epochs_auto": bool(fit.epochs_auto),
        },
        "labels": fit.labels or {},
        "batch_id": fit.batch_id,
        "result": result,
        "diverged_at_epoch": fit.diverged_at_epoch,
        "stop_reason": fit.stop_reason,
        "losses_pruned": bool(fit.losses_pruned),
        "lr_max": fit.lr_max,
        "condition_number": fit.condition_number,
        "warnings": fit.warnings or [],
        "error": error,
        "links": {
            "self": f"/v1/fits/{fit.id}",
            "losses": f"/v1/fits/{fit.id}/losses",
            "data": f"/v1/fits/{fit.id}/data",
        },
    }


def batch_json(session: so.Session, batch: Batch) -> dict[str, Any]:
    rows = session.execute(
        sa.select(Fit.status, sa.func.count(), sa.func.max(Fit.finished_at))
        .where(Fit.batch_id == batch.id)
        .group_by(Fit.status)
    ).all()
    counts = dict.fromkeys(STATUSES, 0)
    finished = None
    for status, count, last in rows:
        counts[status] = count
        finished = max(finished, last) if finished and last else (last or finished)
    # Succeeded as asked, but not at the least-squares line (shared/convergence.py).
    counts["not_converged"] = (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Fit)
            .where(Fit.batch_id == batch.id, Fit.status == SUCCEEDED, Fit.converged.is_(False))
        )
        or 0
    )
    active = counts["queued"] + counts["running"]
    if batch.cancelled and not active:
        status = CANCELLED
    elif not active:
        status = "completed"
    elif counts[RUNNING] or active < batch.count:
        status = "running"
    else:
        status = "queued"
    return serve(
        BatchPublic,
        {
            "id": batch.id,
            "count": batch.count,
            "status": status,
            "counts": counts,
            "created_at": iso(batch.created_at),
            "finished_at": iso(finished) if not active else None,
            "links": {"self": f"/v1/batches/{batch.id}", "fits": f"/v1/batches/{batch.id}/fits"},
        },
    )
