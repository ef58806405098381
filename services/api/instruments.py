"""/v1/instruments and /v1/apply: each instrument's calibration history with its drift verdicts,
its tolerance, and its current calibration applied to new readings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy.orm as so
from flask import Blueprint, Response, request

from services.api import applying
from services.api.bodies import spool
from services.api.contract import CSV_TEXT, NUMBER, json_content, operation
from services.api.extensions import Services, current_services
from services.api.listing import query_with
from services.api.memory import parsing
from services.api.predictions import prediction
from services.api.problems import Problem
from services.api.requests import json_body, parse, query
from services.api.tenancy import current_tenant
from shared.contract.queries import ApplyQuery, AtQuery, InstrumentListQuery, InstrumentQuery
from shared.contract.schemas import InstrumentUpdate, PredictRequest
from shared.store import calibrations
from shared.store.models import Instrument
from shared.store.presenters import drifted, instrument_list
from shared.store.reads import instrument_body, instruments_after

bp = Blueprint("instruments", __name__)

# A readings CSV as POST /v1/apply reads it: the header, then instrument,t_u rows (numbers written
# plainly here; the API also reads exponents).
_NAME = r"[A-Za-z0-9_.-]{1,32}"
_UNCERTAINTY = r"(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,6})?"
APPLY_PATTERN = (
    rf"^(?:instrument,t_u\r?\n(?:{_NAME},{NUMBER}\r?\n)+"
    rf"|instrument,t_u,u_t_u\r?\n(?:{_NAME},{NUMBER},{_UNCERTAINTY}\r?\n)+)$"
)
INSTRUMENT = {"description": "The instrument", "content": json_content("InstrumentPublic")}

# Instruments read per query while a drifted=true page fills up.
_SCAN = 500


def _instrument_or_404(session: so.Session, instrument_id: str) -> Instrument:
    found = session.get(Instrument, (current_tenant(), instrument_id))
    if found is None:
        raise Problem(404, f"no instrument {instrument_id!r}", slug="not-found")
    return found


@bp.get("/v1/instruments")
@operation(
    "listInstruments",
    "The tenant's instruments by id, each with its current calibration",
    {"200": {"description": "A page", "content": json_content("InstrumentList")}},
    description="An instrument exists from the first fit that names it. `drifted=true`: only "
    "those whose current calibration is flagged (its drift p-value below the service's threshold). "
    "`verdict=fail` (or `pass`, `conditional pass`, `conditional fail`): only those whose current "
    "calibration's conformity decision has that verdict.",
    query=InstrumentListQuery,
    problems=("422",),
)
def list_instruments() -> dict[str, Any]:
    params = query(InstrumentListQuery)
    svc = current_services()
    tenant, threshold = current_tenant(), svc.settings.drift_threshold
    items: list[dict[str, Any]] = []
    after, more = params.cursor or "", True
    with svc.db.session() as session:
        # With a filter, instruments are read a few hundred at a time until the page is full.
        filtered = params.drifted or params.verdict is not None
        while more and len(items) < params.limit:
            want = _SCAN if filtered else params.limit - len(items)
            found = instruments_after(session, tenant, after, want, threshold)
            more = len(found) == want
            for position, fields in enumerate(found, start=1):
                after = fields["id"]
                if params.drifted and not drifted(fields):
                    continue
                if params.verdict is not None and fields["verdict"] != params.verdict:
                    continue
                items.append(fields)
                if len(items) == params.limit:
                    more = more or position < len(found)
                    break
    return instrument_list(items, f"/v1/instruments?{query_with(cursor=after)}" if more else None)


@bp.get("/v1/instruments/<instrument_id>")
@operation(
    "getInstrument",
    "An instrument's calibrations, newest first, each with its drift from the one before",
    {"200": INSTRUMENT},
    description="A calibration is a succeeded fit naming the instrument, in the order the fits "
    "were submitted (`calibrated_at`). chi2 and p_value: (Δw_raw, Δb_raw) under the sum of the "
    "two covariances, 2 degrees of freedom; as_found_rms: the previous line on the new data; "
    "as_left_rms: the new line on it (both over the points the line was fitted to). The history "
    "comes in pages of `history_limit` (100), newest first; `history_next` links the next.",
    query=InstrumentQuery,
    problems=("404", "422"),
)
def get_instrument(instrument_id: str) -> dict[str, Any]:
    svc = current_services()
    page = query(InstrumentQuery)
    with svc.db.session() as session:
        instrument = _instrument_or_404(session, instrument_id)
        return instrument_body(
            session, instrument, svc.settings.drift_threshold, page.history_limit, page.history_cursor
        )


@bp.put("/v1/instruments/<instrument_id>")
@operation(
    "updateInstrument",
    "Set the instrument's tolerance, its limits of error and its decision rule",
    {"200": INSTRUMENT},
    body=json_content("InstrumentUpdate"),
    problems=("400", "404", "415", "422"),
)
def put_instrument(instrument_id: str) -> dict[str, Any]:
    """Set what the instrument is held to (an instrument exists from the first fit that names it): each
    field given is set, each left out stays."""
    svc = current_services()
    with svc.db.session(write=True) as session:
        # Another tenant's instrument is a 404 whatever the body: nothing is said about its request.
        instrument = _instrument_or_404(session, instrument_id)
        update = parse(InstrumentUpdate, json_body())
        given = update.model_fields_set
        if "tolerance" in given:
            instrument.tolerance = update.tolerance
        if "limits" in given:
            limits = update.limits
            instrument.limit_lower = limits.lower if limits is not None else None
            instrument.limit_upper = limits.upper if limits is not None else None
        if update.decision_rule is not None:
            instrument.decision_rule = update.decision_rule
        if update.coverage_factor is not None:
            instrument.coverage_factor = update.coverage_factor
    return get_instrument(instrument_id)


@bp.post("/v1/instruments/<instrument_id>/predict")
@operation(
    "predictInstrument",
    "Calibrated values on the instrument's current calibration (or the one current `at`)",
    {"200": {"description": "Calibrated values", "content": json_content("Prediction")}},
    description="As POST /v1/fits/{fit_id}/predict on that calibration's fit; `fit_id` says "
    "which. 409 (`no-calibration`) when it had none at that time.",
    query=AtQuery,
    body=json_content("PredictRequest"),
    problems=("400", "404", "409", "415", "422"),
)
def predict(instrument_id: str) -> dict[str, Any]:
    body = parse(PredictRequest, json_body())
    at = query(AtQuery).at
    if at is not None and at.microsecond % 1000 == 0:
        # Times are shown to the millisecond (calibrated_at): one given so covers its whole
        # millisecond, so a calibration's own calibrated_at names it.
        at += dt.timedelta(microseconds=999)
    with current_services().db.session() as session:
        instrument = _instrument_or_404(session, instrument_id)
        current = calibrations.current_of(session, current_tenant(), [instrument.id], at).get(instrument.id)
    if current is None:
        when = f" at {at.isoformat()}" if at else ""
        raise Problem(409, f"instrument {instrument_id!r} had no calibration{when}", slug="no-calibration")
    return prediction(current, body)


@bp.post("/v1/apply")
@operation(
    "apply",
    "Calibrate readings: CSV instrument,t_u[,u_t_u] in, instrument,t_u,t_c,lower,upper,fit_id[,u_t_c] out",
    {"200": {"description": "Calibrated rows", "content": CSV_TEXT}},
    description="Each reading on its instrument's current calibration, streamed in blocks "
    "(millions of rows in constant memory). Every row is checked before the first byte of the "
    "answer: an instrument unknown to the tenant (or not yet calibrated) is 422 naming its `row` "
    "(row 1 is the first reading); with `interval`, a calibration that has not converged or "
    "cannot give bounds is 409 naming the row (a weighted one, fitted to stated u_t_c, gives none: "
    "`no-interval`, as its instrument's predict answers; one without a covariance `no-uncertainty`). "
    "Without `interval`, lower and upper are empty. "
    "With a third column `u_t_u` (each reading's standard uncertainty, a finite number ≥ 0), each row "
    "adds `u_t_c` after fit_id: sqrt(u²(b) + t_u²·u²(w) + 2·t_u·cov(w, b) + w²·u_t_u²), the GUM's "
    "propagation through the calibration; a calibration without a covariance (fewer than 3 points) "
    "is 409 `no-uncertainty` naming the row, one that has not converged 409 `not-converged`. "
    "The CSV is read as a batch's (a byte-order mark, quoted names, LF, CRLF or CR alone; numbers "
    "as Python's float() reads them): a row whose cells do not match the header is 400 naming the "
    "row, a header naming instrument, t_u or u_t_u twice 400 naming the column. "
    "At most `max_fits_per_batch` instruments in one request (413); each apply has a share of "
    "its API process's parse budget while it reads (503 with Retry-After past it).",
    query=ApplyQuery,
    body={
        "text/csv": {
            "schema": {"type": "string", "pattern": APPLY_PATTERN},
            "example": "instrument,t_u\nTT-101,35.7\nTT-101,55.9\n",
        }
    },
    problems=("400", "409", "413", "415", "422", "503"),
)
def apply() -> Response:
    interval = query(ApplyQuery).interval
    if request.mimetype != "text/csv":
        raise Problem(
            415, "POST /v1/apply takes text/csv with the columns instrument,t_u", slug="unsupported-media-type"
        )
    svc = current_services()
    # Rows are read a block at a time: what an apply holds is its blocks and its instruments' figures,
    # not its body's size, and it has its share of the process's parse budget while it reads them.
    with parsing(svc.parse_budget, svc.settings, expansion=0, fixed=applying.HELD_BYTES):
        return _apply(svc, interval)


def _apply(svc: Services, interval: float | None) -> Response:
    body = spool(lambda piece: None, svc.settings)  # the body's size limit only; rows are read after
    try:
        readings = applying.survey(body, svc.settings.max_fits_per_batch)
        names = list(readings.first_row)
        with svc.db.session() as session:
            current = calibrations.current_of(session, current_tenant(), names)
            known = calibrations.known(session, current_tenant(), [n for n in names if n not in current])
        lines = applying.lines_for(readings, current, known, interval)
    except BaseException:
        body.close()
        raise
    return Response(
        applying.calibrated(body, lines),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="calibrated.csv"', "X-Calib-Rows": str(readings.rows)},
    )
