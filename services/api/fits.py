"""/v1/fits: submit, read, list, losses, cancel, predict."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from services.api.admission import ask_of, refuse_oversize
from services.api.cancel import cancel_active
from services.api.contract import CSV_TEXT, IDEMPOTENCY_KEY, json_content, operation, ref
from services.api.extensions import Services, current_services
from services.api.idempotency import request_key
from services.api.listing import list_fits_query, query_with
from services.api.losses import csv_lines, downsample, json_floats
from services.api.memory import TEXT_EXPANSION_PARSED_WHOLE, parsing
from services.api.predictions import inverse, prediction
from services.api.problems import Problem
from services.api.requests import json_body, parse, query
from services.api.resolved import preflight, resolve
from services.api.submit import submit_fit
from services.api.telemetry import bind_fit
from services.api.tenancy import current_tenant, owned_or_404
from shared.contract.queries import FitListQuery, LossesQuery, WaitQuery
from shared.contract.responses import serve
from shared.contract.schemas import (
    FitCreate,
    FitData,
    FitPreflight,
    InverseRequest,
    LossBuckets,
    LossPage,
    PredictRequest,
)
from shared.domain.packing import unpack_f64
from shared.store import ended
from shared.store.loss_blocks import Curves
from shared.store.models import ACTIVE, Fit
from shared.store.presenters import fit_json, fit_list

bp = Blueprint("fits", __name__, url_prefix="/v1/fits")

FIT = {"description": "The fit", "content": json_content("FitPublic")}


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
    losses = current_services().db.losses
    return losses.read_range(session, fit.id, start, stop, with_val=bool(fit.validation))


@bp.post("")
@operation(
    "createFit",
    "Submit a fit; it is queued and runs on a worker",
    {
        "202": {**FIT, "description": "Accepted and queued", "headers": {"Location": {"schema": {"type": "string"}}}},
        "200": {**FIT, "description": "An idempotent replay: the original fit"},
    },
    description=lambda limits: (
        "Commits the fit, then wakes a worker; the answer never waits for the fit. "
        f"Limits: 2 to {limits['points']} points, 1 to {limits['epochs']} epochs, "
        f"{limits['labels']} labels, a body of at most {limits['body']} bytes. "
        "With an `Idempotency-Key`, the same key and body answer 200 with the "
        "original fit; the same key with another body is 409."
    ),
    headers=(IDEMPOTENCY_KEY,),
    body=json_content("FitCreate"),
    problems=("400", "409", "413", "415", "422", "503", "507"),
)
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
@operation(
    "preflightFit",
    "Check a fit before submitting it: will its learning rate diverge?",
    {"200": {"description": "The pre-flight", "content": json_content("FitPreflight")}},
    description="Takes the body of `POST /v1/fits` and stores nothing. Answers the learning "
    "rate the fit would run with, the data's stable limit `lr_max` and condition number, whether "
    "plain gradient descent (gd, sgd) stays stable at that rate, the warnings the fit would carry, "
    "and, when it would diverge, the options that converge (`learning_rate` and `epochs` "
    '`"auto"`, `normalize` `"standardize"`). The CLI and the Python client ask it before '
    "each fit.",
    body=json_content("FitCreate"),
    problems=("400", "413", "415", "422"),
)
def preflight_fit() -> dict[str, Any]:
    """The fit's pre-flight without submitting it (API.md's computation, shared/domain/calibration.py): the
    CLI and the client ask it first, so a newcomer's first fit does not diverge unannounced."""
    svc = current_services()
    body = json_body()
    refuse_oversize(svc.settings, ask_of([body] if isinstance(body, dict) else [], {}, svc.settings.max_epochs))
    spec = parse(FitCreate, body, {"settings": svc.settings})
    return serve(FitPreflight, preflight(resolve([spec], svc.settings.max_epochs)[0]))


@bp.get("/<fit_id>")
@operation(
    "getFit",
    "A fit, with its progress and result",
    {"200": FIT},
    description="With `?wait=S` the answer waits until the fit has ended (or S seconds): "
    "a client learns of the end at once without polling. Another tenant's id is 404 at once.",
    query=WaitQuery,
    problems=("404",),
)
def get_fit(fit_id: str) -> dict[str, Any]:
    svc = current_services()
    seconds = query(WaitQuery).wait

    def read() -> tuple[dict[str, Any], bool]:
        with svc.db.reading() as session:  # one row, read again on each wake-up of a wait
            fit = _get_fit(session, fit_id)
            return fit_json(fit), fit.status not in ACTIVE

    return svc.waits.answer(ended.fit_key(fit_id), read, seconds, current_tenant())


@bp.get("")
@operation(
    "listFits",
    "List fits, newest first",
    {"200": {"description": "A page of fits", "content": json_content("FitList")}},
    query=FitListQuery,
    problems=("422",),
)
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
@operation(
    "getFitLosses",
    "The loss of every epoch recorded so far",
    {
        "200": {
            "description": "A page of losses, or with `points` the buckets",
            "content": {
                "application/json": {"schema": {"oneOf": [ref("LossPage"), ref("LossBuckets")]}},
                **CSV_TEXT,
            },
        }
    },
    description="`loss[i]` is the loss of epoch `start + i`, taken before that epoch's update "
    "(the book's order: epoch 1's is the loss of the initial parameters, and the last epoch's is "
    "the result's `last_epoch_loss`, not its `loss`). `?format=csv` or "
    "`Accept: text/csv` streams the whole series as `epoch,loss`, or epochs `start` to `end` where the "
    "query names them (`limit` and `points` shape JSON only: the CSV is every epoch of the range). "
    "`?points=N` (with `start`, `end`) returns at most N consecutive "
    "buckets covering every epoch of the range instead, each with its "
    "first and last epoch and the min, max and last loss. A fit with a "
    "validation split also has `val_loss` (same indexing; a `val_loss` "
    "CSV column; `val_min`, `val_max`, `val_last` per bucket).",
    query=LossesQuery,
    problems=("404", "410", "422"),
)
def get_losses(fit_id: str) -> Any:
    db = current_services().db
    params = query(LossesQuery)
    if _wants_csv(params.format):
        with db.session() as session:
            fit = _fit_with_losses(session, fit_id)
            # The whole series, or epochs start..end where the query names them; limit and points shape
            # JSON only (buckets have no CSV form, and a schema-valid query is not refused for them).
            curves = _epochs(session, fit, params.start, params.end)
        return Response(
            stream_with_context(csv_lines(curves, params.start)),
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
            "loss": json_floats(curves.loss),
            **({"val_loss": json_floats(curves.val_loss)} if curves.val_loss is not None else {}),
            "next": f"/v1/fits/{fit.id}/losses?{query_with(start=end, limit=limit)}" if more else None,
        },
    )


def _epochs(session: Any, fit: Fit, start: int, end: int | None) -> Curves:
    """Epochs start..end of the fit's losses (end: the last recorded where None or past it). An end
    before start is an empty range, like a start past the last epoch."""
    last = min(fit.epochs_done if end is None else end, fit.epochs_done)
    return fit_curves(session, fit, start, max(last + 1, start))


def _downsampled(fit_id: str, start: int, end: int | None, points: int) -> dict[str, Any]:
    with current_services().db.session() as session:
        fit = _fit_with_losses(session, fit_id)
        done = fit.epochs_done
        curves = _epochs(session, fit, start, end)
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
@operation(
    "getFitData",
    "The readings the fit was given (t_u, t_c) and the indices held out for validation",
    {"200": {"description": "The fit's data", "content": json_content("FitData")}},
    problems=("404",),
)
def get_data(fit_id: str) -> dict[str, Any]:
    """The readings the fit was given, and which of them were held out (for plots)."""
    with current_services().db.session() as session:
        fit = _get_fit(session, fit_id)
        t_u, t_c = unpack_f64(fit.t_u), unpack_f64(fit.t_c)
        stated = {
            name: unpack_f64(blob).tolist()
            for name, blob in (("u_t_c", fit.u_t_c), ("u_t_u", fit.u_t_u))
            if blob is not None
        }
    body = {"fit_id": fit.id, "t_u": t_u.tolist(), "t_c": t_c.tolist(), "validation_indices": fit.held_out()}
    return serve(FitData, {**body, **stated})


@bp.post("/<fit_id>/cancel")
@operation(
    "cancelFit",
    "Cancel a queued or running fit (a running one stops at its next checkpoint; its losses so far stay readable)",
    {"202": FIT},
    problems=("404", "409"),
)
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
@operation(
    "predict",
    "t_c = w_raw * t_u + b_raw",
    {"200": {"description": "Calibrated values", "content": json_content("Prediction")}},
    description=(
        "With `interval` (e.g. 0.95), also `lower` and `upper`: the "
        "least-squares prediction interval for a new reading, centred on "
        "the fit's line (Student's t, n - 2 degrees of freedom). A reading whose "
        "prediction or interval on this fit's line would pass float64's range is 409 "
        "(`prediction-out-of-range`) naming it (`t_u[3]`). Every answer carries the fit's `converged`. "
        "An `interval` on a fit that has not converged is 409 (the interval belongs "
        "to the least-squares line, not to this one) unless `allow_unconverged` is "
        "true: then `lower` and `upper` span the least-squares prediction's interval "
        "and the fit's own prediction widened by the same half-width, so the gap "
        "between the two lines is inside them (`bounds_include_gap`: true). An `interval` on "
        "a fit with fewer than 3 points, or with t_u all equal, is 409 (`no-interval`): its data "
        "do not determine one."
    ),
    body=json_content("PredictRequest"),
    problems=("400", "404", "409", "415", "422"),
)
def predict(fit_id: str) -> dict[str, Any]:
    body = parse(PredictRequest, json_body())  # a bad body is a 422 before the fit is looked up
    return prediction(_fit_read(fit_id), body)


@bp.post("/<fit_id>/inverse")
@operation(
    "inverse",
    "The reading that gives each reference value: t_u = (t_c - b_raw) / w_raw on a line",
    {"200": {"description": "Readings", "content": json_content("Inverse")}},
    description=(
        "ISO/TS 28037's prediction of x from y on the fit's line. `u_t_u` is each reading's standard "
        "uncertainty, sqrt(u_t_c² + u²(b) + t_u²·u²(w) + 2·t_u·cov(w, b)) / |w_raw|, from the fit's "
        "covariance (`result.covariance`, least squares) and `u_t_c` (one number for all, or one per "
        "t_c; none: 0); null where the fit has no covariance (fewer than 3 points, or t_u all equal). "
        "409 where the fit has not succeeded (`not-succeeded`), has not converged (`not-converged`, "
        "unless `allow_unconverged` is true), has a flat line (`no-reading`, naming `t_c[0]`), or where "
        "a reading would pass float64's range (`prediction-out-of-range`, naming it). Any other model: the "
        "one reading within the range of the fit's own readings where its function equals t_c, found on "
        "a grid of that range and refined by bisection, with u_t_u = sqrt(u_t_c² + ∂_θfᵀ·V·∂_θf) / |∂f/∂t_u| "
        "(the GUM's law for the implicit function); a value that no reading in the range gives, or that "
        "several give, is a 409 `no-reading` naming each such t_c."
    ),
    body=json_content("InverseRequest"),
    problems=("400", "404", "409", "415", "422"),
)
def inverse_of(fit_id: str) -> dict[str, Any]:
    body = parse(InverseRequest, json_body())
    with current_services().db.session() as session:
        fit = _get_fit(session, fit_id)
        # Another model's inverse searches the range of the fit's readings: read them while bound.
        readings = unpack_f64(fit.t_u) if fit.model is not None else None
    return inverse(fit, body, readings)


def _fit_read(fit_id: str) -> Fit:
    """The tenant's fit as it stands, read in a session of its own (404 if it is not theirs)."""
    with current_services().db.session() as session:
        return _get_fit(session, fit_id)
