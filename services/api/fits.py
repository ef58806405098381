"""/v1/fits: submit, read, list, losses, cancel, predict."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from services.api.admission import ask_of, refuse_oversize
from services.api.extensions import Services, current_services
from services.api.idempotency import request_key
from services.api.listing import list_fits_query, query_with
from services.api.losses import csv_lines, downsample, finite_or_none
from services.api.memory import TEXT_EXPANSION_PARSED_WHOLE, parsing
from services.api.predictions import prediction
from services.api.problems import Problem
from services.api.requests import json_body, parse, query
from services.api.submit import submit_fit
from services.api.telemetry import bind_fit
from services.api.tenancy import current_tenant, owned_or_404
from shared import ended
from shared.cancel import cancel_active
from shared.loss_blocks import Curves, read_range
from shared.models import ACTIVE, Fit
from shared.packing import unpack_f64
from shared.presenters import fit_json, fit_list
from shared.queries import FitListQuery, LossesQuery, WaitQuery
from shared.resolved import preflight, resolve
from shared.responses import serve
from shared.schemas import FitCreate, FitData, FitPreflight, LossBuckets, LossPage, PredictRequest

bp = Blueprint("fits", __name__, url_prefix="/v1/fits")


def _get_fit(session: Any, fit_id: str) -> Fit:
    return owned_or_404(session, Fit, fit_id, "fit")


def _fit_with_losses(session: Any, fit_id: str) -> Fit:
    """The fit, if its losses are still kept: retention's pruned fits answer 410."""
    fit = _get_fit(session, fit_id)
    if fit.losses_pruned:
        raise Problem(
            410, f"the losses of fit {fit_id} were pruned by retention; its result is kept", slug="losses-pruned"
        )
    return fit


def fit_curves(session: Any, fit: Fit, start: int, stop: int) -> Curves:
    """Epochs start..stop-1 of the fit's losses, with its validation losses when it has a split."""
    return read_range(session, fit.id, start, stop, with_val=bool(fit.validation))


@bp.post("")
def create_fit() -> tuple[dict[str, Any], int, dict[str, str]]:
    svc = current_services()
    with parsing(svc.parse_budget, svc.settings, TEXT_EXPANSION_PARSED_WHOLE):
        return _create_fit(svc)


def _create_fit(svc: Services) -> tuple[dict[str, Any], int, dict[str, str]]:
    body = json_body()
    ask = ask_of([body] if isinstance(body, dict) else [], {}, svc.settings.max_epochs)
    refuse_oversize(svc.settings, ask)
    spec = parse(FitCreate, body, {"settings": svc.settings})
    fit, created = submit_fit(svc, spec, ask, current_tenant(), request_key())
    bind_fit(fit.id)
    return fit_json(fit), 202 if created else 200, {"Location": f"/v1/fits/{fit.id}"}


# Its own path: under /v1/fits/ it would share `/v1/fits/{fit_id}` (and its GET) with the fits.
preflight_bp = Blueprint("preflight", __name__, url_prefix="/v1/preflight")


@preflight_bp.post("")
def preflight_fit() -> dict[str, Any]:
    """The fit's pre-flight without submitting it (API.md's computation, shared/calibration.py): the
    CLI and the client ask it first, so a newcomer's first fit does not diverge unannounced."""
    svc = current_services()
    body = json_body()
    refuse_oversize(svc.settings, ask_of([body] if isinstance(body, dict) else [], {}, svc.settings.max_epochs))
    spec = parse(FitCreate, body, {"settings": svc.settings})
    return serve(FitPreflight, preflight(resolve([spec], svc.settings.max_epochs)[0]))


@bp.get("/<fit_id>")
def get_fit(fit_id: str) -> dict[str, Any]:
    svc = current_services()
    seconds = query(WaitQuery).wait

    def read() -> tuple[dict[str, Any], bool]:
        with svc.db.session() as session:
            fit = _get_fit(session, fit_id)
            return fit_json(fit), fit.status not in ACTIVE

    return svc.waits.answer(ended.fit_key(fit_id), read, seconds, current_tenant())


@bp.get("")
def list_fits() -> dict[str, Any]:
    fits, cursor = list_fits_query(query(FitListQuery))
    return fit_list(fits, f"/v1/fits?{query_with(cursor=cursor)}" if cursor else None)


def _wants_csv(fmt: str | None) -> bool:
    if fmt:
        return fmt == "csv"
    return request.accept_mimetypes.best_match(
        ["application/json", "text/csv"]
    ) == "text/csv" and "text/csv" in request.headers.get("Accept", "")


@bp.get("/<fit_id>/losses")
def get_losses(fit_id: str) -> Any:
    db = current_services().db
    params = query(LossesQuery)
    if _wants_csv(params.format):
        with db.session() as session:
            fit = _fit_with_losses(session, fit_id)
            curves = fit_curves(session, fit, 1, fit.epochs_done + 1)
        return Response(
            stream_with_context(csv_lines(curves)),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{fit_id}-losses.csv"'},
        )
    if params.points is not None:
        return _downsampled(fit_id, params.start, params.end, params.points)
    start, limit = params.start, params.limit
    with db.session() as session:
        fit = _fit_with_losses(session, fit_id)
        done = fit.epochs_done
        curves = fit_curves(session, fit, start, min(start + limit, done + 1))
    end = start + len(curves)
    more = end <= done and len(curves) == limit
    return serve(
        LossPage,
        {
            "fit_id": fit.id,
            "epochs_done": done,
            "start": start,
            "loss": curves.loss.tolist(),
            **({"val_loss": finite_or_none(curves.val_loss)} if curves.val_loss is not None else {}),
            "next": f"/v1/fits/{fit.id}/losses?{query_with(start=end, limit=limit)}" if more else None,
        },
    )


def _downsampled(fit_id: str, start: int, end: int | None, points: int) -> dict[str, Any]:
    with current_services().db.session() as session:
        fit = _fit_with_losses(session, fit_id)
        done = fit.epochs_done
        # An end before start is an empty range, like a start past the last epoch.
        last = min(done if end is None else end, done)
        curves = fit_curves(session, fit, start, max(last + 1, start))
    return serve(
        LossBuckets,
        {
            "fit_id": fit.id,
            "epochs_done": done,
            "start": start,
            "end": start + len(curves) - 1,
            "buckets": downsample(curves, start, points),
        },
    )


@bp.get("/<fit_id>/data")
def get_data(fit_id: str) -> dict[str, Any]:
    """The readings the fit was given, and which of them were held out (for plots)."""
    with current_services().db.session() as session:
        fit = _get_fit(session, fit_id)
        t_u, t_c = unpack_f64(fit.t_u), unpack_f64(fit.t_c)
    return serve(
        FitData, {"fit_id": fit.id, "t_u": t_u.tolist(), "t_c": t_c.tolist(), "validation_indices": fit.held_out()}
    )


@bp.post("/<fit_id>/cancel")
def cancel_fit(fit_id: str) -> tuple[dict[str, Any], int]:
    db = current_services().db
    with db.session(write=True) as session:
        fit = _get_fit(session, fit_id)
        changed = cancel_active(session, Fit.id == fit.id)
    if not changed:
        raise Problem(
            409, f"fit {fit_id} is {fit.status}: only queued or running fits can be cancelled", slug="not-cancellable"
        )
    with db.session() as session:
        return fit_json(_get_fit(session, fit_id)), 202


@bp.post("/<fit_id>/predict")
def predict(fit_id: str) -> dict[str, Any]:
    body = parse(PredictRequest, json_body())
    with current_services().db.session() as session:
        fit = _get_fit(session, fit_id)
    return prediction(fit, body)
