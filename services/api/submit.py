"""Accepting fits: commit first, then publish; idempotent under a key.

The fit is committed as `queued` before its wake-up message is published, so a
worker never looks for a row that does not exist yet, and a publish that fails
loses nothing: the reconciler publishes fits that stay queued (Services.dispatch).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy.orm as so

from services.api.admission import Ask, admit, require_broker
from services.api.extensions import Services
from services.api.idempotency import insert_or_replay
from shared.calibration import Values, data_stats, standardization, warnings_for
from shared.models import QUEUED, Fit, new_id, utcnow
from shared.packing import pack_f64
from shared.schemas import DEFAULT_BETAS, DEFAULT_DELTA, DEFAULT_EPS, DEFAULT_MOMENTUM, FitCreate
from shared.splits import split


def digest(request: Any) -> str:
    """The fingerprint an Idempotency-Key is checked against: of the request's canonical form, so
    keys in another order, or 1 written as 1.0, are the same request (and no spurious 409)."""
    text = json.dumps(_canonical(request), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def fit_rows(
    specs: Sequence[FitCreate],
    tenant: str,
    *,
    batch_id: str | None = None,
    chunk_ids: Sequence[str] | None = None,
    max_epochs: int = 1_000_000,
) -> list[dict[str, Any]]:
    """Every column of new queued fits, as dicts for one bulk INSERT or Fit(); the data's
    statistics (pre-flight, least squares) are computed for all of them in one pass."""
    held_out = [spec.held_out() for spec in specs]
    # Everything the data says (standardization, pre-flight, least squares) is about the
    # points the line is fitted to: the held-out ones must not leak in.
    training = [
        (split(spec.t_u, out)[0], split(spec.t_c, out)[0]) if out else (spec.t_u, spec.t_c)
        for spec, out in zip(specs, held_out, strict=True)
    ]
    shifts, scales = zip(*(model_input(spec, u) for spec, (u, _) in zip(specs, training, strict=True)), strict=True)
    stats = data_stats([u for u, _ in training], [c for _, c in training], scales, shifts)
    rows = []
    for i, (spec, st) in enumerate(zip(specs, stats, strict=True)):
        fit_id = new_id()
        rate = spec.learning_rate if spec.learning_rate != "auto" else (st.lr_auto or 0.01)
        rows.append(
            dict(
                id=fit_id,
                tenant=tenant,
                batch_id=batch_id,
                chunk_id=chunk_ids[i] if chunk_ids else fit_id,
                status=QUEUED,
                created_at=utcnow(),
                epochs_done=0,
                n_points=len(spec.t_u),
                # "auto": run until converged, at most max_epochs; the bound is what `epochs` stores.
                epochs=spec.epochs if spec.epochs != "auto" else (spec.max_epochs or max_epochs),
                epochs_auto=spec.epochs == "auto",
                convergence_tolerance=spec.convergence_tolerance,
                learning_rate=rate,
                init_w=spec.init.w,
                init_b=spec.init.b,
                input_scale=scales[i],
                input_shift=shifts[i],
                normalize=spec.normalize,
                optimizer=spec.optimizer,
                labels=spec.labels,
                gradient=spec.gradient,
                delta=(spec.delta or DEFAULT_DELTA) if spec.gradient == "finite_difference" else None,
                **optimizer_options(spec),
                validation=validation_record(spec, held_out[i]),
                early_stopping=early_stopping_rule(spec),
                t_u=pack_f64(spec.t_u),
                t_c=pack_f64(spec.t_c),
                attempt=0,
                idempotency_key=None,
                request_digest=None,
                lr_max=st.lr_max,
                condition_number=st.condition_number,
                w_opt=st.w_opt,
                b_opt=st.b_opt,
                se_w=st.se_w,
                se_b=st.se_b,
                cov_wb=st.cov_wb,
                r2=st.r2,
                residual_sd=st.residual_sd,
                t_u_mean=st.t_u_mean,
                t_u_sxx=st.t_u_sxx,
                t_c_var=st.t_c_var,
                warnings=warnings_for(st, rate),
            )
        )
    return rows


def model_input(spec: FitCreate, training_t_u: Values) -> tuple[float, float]:
    """(input_shift, input_scale) of x = (t_u - shift) * scale, as the fit's normalize says."""
    if spec.normalize == "scale":
        return 0.0, spec.input_scale
    if spec.normalize == "none":
        return 0.0, 1.0
    found = standardization(training_t_u)
    assert found is not None, "FitCreate refuses standardize for t_u without spread"
    return found


def validation_record(spec: FitCreate, indices: list[int] | None) -> dict[str, object] | None:
    """The split as requested, with the indices it picked (seed 0 when a fraction came without one)."""
    if spec.validation is None or indices is None:
        return None
    by_fraction = spec.validation.fraction is not None
    return {
        "fraction": spec.validation.fraction,
        "seed": (spec.validation.seed or 0) if by_fraction else None,
        "indices": indices,
    }


def early_stopping_rule(spec: FitCreate) -> dict[str, object] | None:
    """The rule with its monitor resolved: the validation loss when there is a split."""
    rule = spec.early_stopping
    if rule is None:
        return None
    monitor = rule.monitor or ("val_loss" if spec.validation is not None else "loss")
    return {"monitor": monitor, "min_delta": rule.min_delta, "patience": rule.patience}


def optimizer_options(spec: FitCreate) -> dict[str, float | None]:
    """The options torch.optim would use, resolved, as columns; None where they do not apply."""
    betas = spec.betas or DEFAULT_BETAS
    adam = spec.optimizer == "adam"
    return {
        "momentum": (DEFAULT_MOMENTUM if spec.momentum is None else spec.momentum)
        if spec.optimizer == "momentum"
        else None,
        "beta1": betas[0] if adam else None,
        "beta2": betas[1] if adam else None,
        "eps": (DEFAULT_EPS if spec.eps is None else spec.eps) if adam else None,
    }


def new_fit(spec: FitCreate, tenant: str, max_epochs: int) -> Fit:
    return Fit(**fit_rows([spec], tenant, max_epochs=max_epochs)[0])


def submit_fit(svc: Services, spec: FitCreate, ask: Ask, tenant: str, key: str | None) -> tuple[Fit, bool]:
    """Returns the fit and whether it was created now (False: an idempotent replay)."""
    request_digest = digest(spec.model_dump())

    def admitted() -> None:
        admit(svc, tenant, ask)
        require_broker(svc)

    def insert(session: so.Session) -> Fit:
        fit = new_fit(spec, tenant, svc.settings.max_epochs)
        fit.idempotency_key, fit.request_digest = key, request_digest
        session.add(fit)
        return fit

    fit, created = insert_or_replay(svc.db, Fit, tenant, key, request_digest, admit=admitted, insert=insert)
    if created:
        svc.dispatch([fit.chunk_id])
    return fit, created
