"""Database rows to the bodies of API.md, each through its response model. Presenters take rows
already loaded and run no query: shared/store/reads.py reads what a body needs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from shared.contract.model_kinds import model_from_stored
from shared.contract.optimizers import FLAT_OPTIONS
from shared.contract.responses import serve
from shared.contract.schemas import (
    BatchPublic,
    FitList,
    FitPublic,
    InstrumentList,
    InstrumentPublic,
    WebhookDeliveryList,
)
from shared.domain.finite import finite_or_none
from shared.domain.functions import Function, function_of
from shared.domain.model_stats import uncertainty_of
from shared.domain.predictions import line_covariance
from shared.store import calibrations
from shared.store.drift import Calibration, Drift, next_due
from shared.store.models import (
    CANCELLED,
    Batch,
    Fit,
    Instrument,
    WebhookAttempt,
    WebhookDelivery,
)

# The batch's fits as CSV and Parquet columns (GET /v1/batches/{id}/fits?format=csv|parquet).
RESULT_COLUMNS = [
    "fit_id",
    "series",
    "status",
    "w",
    "b",
    "w_raw",
    "b_raw",
    "loss",
    "last_epoch_loss",
    "epochs_done",
    "diverged_at_epoch",
    "converged",
    "w_opt",
    "b_opt",
    "se_w",
    "se_b",
    "r2",
    "instrument",
    "drift_p_value",
    "drift_flagged",
    "as_found_rms",
    "chi2_obs",
    "consistent",
]


def parameter_columns(names: Sequence[str]) -> list[str]:
    """The columns a batch's results add for its models' parameters (API.md "Models beyond a line"):
    each parameter's value in raw units (`p_<name>`), then each one's standard uncertainty (`u_<name>`)."""
    return [f"p_{name}" for name in names] + [f"u_{name}" for name in names]


def parameter_cells(fit: Fit, names: Sequence[str]) -> list[float | None]:
    """A fit's parameter_columns cells: its parameters by name (None for a name its model lacks)."""
    values: dict[str, float | None] = {}
    uncertainties: dict[str, float | None] = {}
    if fit.model is None:
        raw = fit.raw_params()
        if raw is not None:
            values = {"w": raw[0], "b": raw[1]}
        uncertainties = {"w": fit.se_w, "b": fit.se_b}
    else:
        general = model_parameters(fit)
        if general is not None:
            values, uncertainties = general["parameters"], general["standard_uncertainties"]
    return [values.get(name) for name in names] + [uncertainties.get(name) for name in names]


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


def optimizer_fields(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The optimizer as params shows it: its name, every option in `optimizer_options` (the object
    form, less its kind), and the first API's flat fields where they belong to it."""
    flat = {option: value for option, value in options.items() if FLAT_OPTIONS.get(option) == name}
    return {"optimizer": name, "gradient": "analytic", **flat, "optimizer_options": options}


def line_parameters(
    w: float,
    b: float,
    w_opt: float | None,
    b_opt: float | None,
    se_w: float | None,
    se_b: float | None,
    cov_wb: float | None,
) -> dict[str, Any]:
    """A line's result in the general form of every model kind: its parameters by name (raw units),
    the least-squares ones, their standard uncertainties and covariance (rows in name order)."""
    covariance = None
    if se_w is not None and se_b is not None and cov_wb is not None:
        covariance = line_covariance(se_w, se_b, cov_wb).tolist()
    return {
        "parameter_names": ["w", "b"],
        "parameters": {"w": w, "b": b},
        "parameters_opt": {"w": w_opt, "b": b_opt} if w_opt is not None and b_opt is not None else None,
        "standard_uncertainties": {"w": se_w, "b": se_b},
        "covariance": covariance,
    }


def model_parameters(fit: Fit) -> dict[str, Any] | None:
    """A fit of a model other than the line: its result's general form and its line fields (null),
    from the `solution` computed at submission and the `parameters` written when it ended."""
    solution, fitted = fit.solution or {}, fit.parameters
    if fitted is None or fit.status != "succeeded":
        return None
    names = list(solution.get("names") or [])
    values, gaps = fitted.get("values") or [], fitted.get("gap_se")
    opt, covariance = solution.get("parameters_opt") or [], solution.get("covariance")
    function = function_of(fit.model)
    if function is not None:
        names, values, opt, covariance, gaps = _presented(function, values, opt, covariance, gaps)
    u = [uncertainty_of(row[j]) for j, row in enumerate(covariance)] if covariance else [None] * len(names)
    return {
        **dict.fromkeys(("w", "b", "w_raw", "b_raw", "w_opt", "b_opt", "gap", "se_w", "se_b", "cov_wb")),
        "convergence": {
            "gap_se_w": None,
            "gap_se_b": None,
            "excess_loss": fit.excess_loss,
            "epochs_needed": fit.epochs_needed,
            "gap_se": dict(zip(names, gaps, strict=True)) if gaps is not None else None,
        },
        "parameter_names": names,
        "parameters": dict(zip(names, values, strict=True)),
        "parameters_opt": dict(zip(names, opt, strict=True)) if opt and None not in opt else None,
        "standard_uncertainties": dict(zip(names, u, strict=True)),
        "covariance": covariance if covariance and all(v is not None for row in covariance for v in row) else None,
    }


def _presented(
    function: Function,
    values: list[float | None],
    opt: list[float | None],
    covariance: list[list[float | None]] | None,
    gaps: list[float | None] | None,
) -> tuple[list[str], list[float | None], list[float | None], list[list[float | None]] | None, Any]:
    """A transformed function's coefficients as the parameters users read (Callendar–Van Dusen's A,
    B, C, R0), the covariance through the map's Jacobian at the least-squares coefficients, and each
    gap in the presented parameters' standard uncertainties."""
    names, shown, _ = function.presented(np.array([math.nan if v is None else v for v in values]))
    out_values = [finite_or_none(v) for v in shown]
    if not opt or None in opt:
        return list(names), out_values, [], None, None
    at_opt = np.array(opt, dtype=np.float64)
    _, shown_opt, _ = function.presented(at_opt)
    out_opt = [finite_or_none(v) for v in shown_opt]
    if not covariance or any(v is None for row in covariance for v in row):
        return list(names), out_values, out_opt, None, None
    matrix = function.presented_covariance(at_opt, np.array(covariance, dtype=np.float64))
    u = np.sqrt(np.clip(np.diag(matrix), 0, None))
    shown_gaps = (
        [finite_or_none((v - o) / s) if s > 0 else None for v, o, s in zip(shown, shown_opt, u, strict=True)]
        if gaps is not None
        else None
    )
    return list(names), out_values, out_opt, [[finite_or_none(v) for v in row] for row in matrix], shown_gaps


def _result_common(fit: Fit) -> dict[str, Any]:
    """The result's fields every model kind shares."""
    return {
        "loss": fit.loss,
        "last_epoch_loss": fit.last_epoch_loss,
        "r2": fit.r2,
        "residual_sd": fit.residual_sd,
        "val_loss": fit.val_loss,
        "last_epoch_val_loss": fit.last_epoch_val_loss,
        "converged": fit.converged,
        **(fit.chi2 or {}),
    }


def fit_fields(fit: Fit) -> dict[str, Any]:
    result = None
    raw = fit.raw_params()
    general = model_parameters(fit) if fit.model is not None else None
    if general is not None:
        result = {**_result_common(fit), **general}
    elif raw is not None and fit.w is not None and fit.b is not None:
        w_raw, b_raw = raw
        gap = (
            {"w": w_raw - fit.w_opt, "b": b_raw - fit.b_opt}
            if fit.w_opt is not None and fit.b_opt is not None
            else None
        )
        result = {
            **_result_common(fit),
            "w": fit.w,
            "b": fit.b,
            "w_raw": w_raw,
            "b_raw": b_raw,
            "w_opt": fit.w_opt,
            "b_opt": fit.b_opt,
            "gap": gap,
            "se_w": fit.se_w,
            "se_b": fit.se_b,
            "cov_wb": fit.cov_wb,
            "convergence": {
                "gap_se_w": fit.gap_se_w,
                "gap_se_b": fit.gap_se_b,
                "excess_loss": fit.excess_loss,
                "epochs_needed": fit.epochs_needed,
                "gap_se": {"w": fit.gap_se_w, "b": fit.gap_se_b},
            },
            **line_parameters(w_raw, b_raw, fit.w_opt, fit.b_opt, fit.se_w, fit.se_b, fit.cov_wb),
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
            "model": fit.model or {"kind": "line"},
            **({"input_shift": fit.input_shift} if fit.normalize == "standardize" else {}),
            **optimizer_fields(fit.optimizer, fit.optimizer_options),
            **({"validation": fit.validation} if fit.validation else {}),
            **({"early_stopping": fit.early_stopping} if fit.early_stopping else {}),
            "convergence_tolerance": fit.convergence_tolerance,
            "epochs_auto": bool(fit.epochs_auto),
        },
        "labels": fit.labels or {},
        "instrument": fit.instrument,
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


@dataclasses.dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands: its status, its fits by status, and when its last fit ended."""

    status: str
    counts: dict[str, int]
    finished_at: dt.datetime | None

    @property
    def ended(self) -> bool:
        return self.status in BATCH_ENDED


BATCH_ENDED = ("completed", CANCELLED)


def batch_json(batch: Batch, progress: BatchProgress, drifted: int) -> dict[str, Any]:
    """The batch's body, from its row, where it stands (shared/store/reads.batch_progress) and how
    many of its calibrations drifted (the stored verdicts)."""
    return serve(
        BatchPublic,
        {
            "id": batch.id,
            "count": batch.count,
            "status": progress.status,
            "counts": progress.counts,
            "drifted": drifted,
            "created_at": iso(batch.created_at),
            "finished_at": iso(progress.finished_at),
            "links": {"self": f"/v1/batches/{batch.id}", "fits": f"/v1/batches/{batch.id}/fits"},
        },
    )


def calibration_fields(cal: Calibration, found: Drift | None, decision: dict[str, Any] | None = None) -> dict[str, Any]:
    names, values, u = calibration_parameters(cal)
    return {
        "fit_id": cal.fit_id,
        "calibrated_at": iso(cal.calibrated_at),
        "model": model_from_stored(cal.model).model_dump(),
        "parameters": dict(zip(names, values, strict=True)),
        "standard_uncertainties": dict(zip(names, u, strict=True)),
        "w_raw": cal.w_raw,
        "b_raw": cal.b_raw,
        "se_w": cal.se_w,
        "se_b": cal.se_b,
        "cov_wb": cal.cov_wb,
        "r2": cal.r2,
        "n_points": cal.n_points,
        "converged": cal.converged,
        "drift": None if found is None else dataclasses.asdict(found),
        "decision": decision,
    }


def calibration_parameters(cal: Calibration) -> tuple[list[str], list[float | None], list[float | None]]:
    """A calibration's parameters as users read them, with their standard uncertainties: the line's w
    and b; a polynomial's a1 … a0; a transformed function's (Callendar–Van Dusen's A, B, C, R0
    through the Jacobian of its coefficients)."""
    if cal.model is None:
        return ["w", "b"], [cal.w_raw, cal.b_raw], [cal.se_w, cal.se_b]
    coefficients, covariance = cal.parameters(), cal.covariance()
    function = function_of(cal.model)
    if function is None:
        names: list[str] = list(model_from_stored(cal.model).parameter_names)
        values = coefficients
    else:
        shown, values, _ = function.presented(coefficients)
        names = list(shown)
        covariance = function.presented_covariance(coefficients, covariance) if covariance is not None else None
    u: list[float | None] = [None] * len(names)
    if covariance is not None:
        u = [uncertainty_of(float(v)) for v in np.diag(covariance)]
    return names, [finite_or_none(v) for v in values], u


def instrument_fields(
    instrument: Instrument,
    standing: calibrations.Standing,
    newest_first: Sequence[calibrations.Calibrated],
    verdicts: Mapping[str, calibrations.StoredDrift],
) -> dict[str, Any]:
    """An instrument's body: its current calibration, these calibrations of its history (newest
    first), each with its stored drift verdict, and when it is next due from the as-found trend."""

    def fields(row: calibrations.Calibrated) -> dict[str, Any]:
        found = verdicts.get(row.id)
        return calibration_fields(
            Calibration.of(row), found.drift if found else None, found.decision if found else None
        )

    due = next_due(standing.calibrations, standing.as_found, instrument.tolerance)
    current = verdicts.get(standing.current.id) if standing.current is not None else None
    current_verdict = current.decision["verdict"] if current is not None and current.decision else None
    return {
        "id": instrument.id,
        "calibrations": standing.calibrations,
        "current": fields(standing.current) if standing.current is not None else None,
        "history": [fields(row) for row in newest_first],
        "tolerance": instrument.tolerance,
        "limits": (
            {"lower": instrument.limit_lower, "upper": instrument.limit_upper}
            if instrument.limit_lower is not None and instrument.limit_upper is not None
            else None
        ),
        "decision_rule": instrument.decision_rule or "simple",
        "coverage_factor": instrument.coverage_factor or 2.0,
        "verdict": current_verdict,
        "next_due": due.isoformat() if due else None,
        "links": {"self": f"/v1/instruments/{quote(instrument.id, safe='')}"},
    }


def drifted(instrument: dict[str, Any]) -> bool:
    """Whether an instrument's body (instrument_fields) says its current calibration drifted."""
    current = instrument["current"]
    return bool(current and current["drift"] and current["drift"]["flagged"])


def instrument_json(
    instrument: Instrument,
    standing: calibrations.Standing,
    page: Sequence[calibrations.Calibrated],
    limit: int,
    verdicts: Mapping[str, calibrations.StoredDrift],
) -> dict[str, Any]:
    """An instrument's body with a page of its history: the first `limit` of `page` (read one
    longer, newest first: one more means a next page), with their stored verdicts."""
    shown = page[:limit]
    fields = instrument_fields(instrument, standing, shown, verdicts)
    link = fields["links"]["self"]
    fields["history_next"] = (
        f"{link}?history_limit={limit}&history_cursor={shown[-1].id}" if len(page) > limit else None
    )
    return serve(InstrumentPublic, fields)


def instrument_list(items: list[dict[str, Any]], next_link: str | None) -> dict[str, Any]:
    """A page of instruments (fields as instrument_fields gives them), each without its history."""
    summaries = [{k: v for k, v in item.items() if k != "history"} for item in items]
    return serve(InstrumentList, {"items": summaries, "next": next_link})


def _delivery_status(delivery: WebhookDelivery) -> str:
    if delivery.delivered_at is not None:
        return "delivered"
    return "failed" if delivery.gave_up_at is not None else "pending"


def delivery_list(
    deliveries: list[WebhookDelivery], attempts: list[WebhookAttempt], next_link: str | None
) -> dict[str, Any]:
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(
            {
                "number": attempt.number,
                "started_at": iso(attempt.started_at),
                "status_code": attempt.status_code,
                "error": attempt.error,
                "seconds": attempt.seconds,
            }
        )
    items = [
        {
            "id": d.id,
            "event": d.event,
            "subject_id": d.subject_id,
            "url": d.url,
            "status": _delivery_status(d),
            "created_at": iso(d.created_at),
            "next_attempt_at": iso(d.next_attempt_at),
            "delivered_at": iso(d.delivered_at),
            "attempts": by_delivery.get(d.id, []),
        }
        for d in deliveries
    ]
    return serve(WebhookDeliveryList, {"items": items, "next": next_link})
