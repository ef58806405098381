"""/v1/instruments and /v1/apply: each instrument's calibration history with its drift verdicts,
its tolerance, and its current calibration applied to new readings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy.orm as so
from flask import Blueprint, Response, request

from services.api import applying
from services.api.bodies import spool
from services.api.extensions import Services, current_services
from services.api.listing import query_with
from services.api.memory import parsing
from services.api.predictions import prediction
from services.api.problems import Problem
from services.api.requests import json_body, parse, query
from services.api.tenancy import current_tenant
from shared import calibrations
from shared.models import Instrument
from shared.presenters import drifted, instrument_json, instrument_list, instruments_after
from shared.queries import ApplyQuery, AtQuery, InstrumentListQuery, InstrumentQuery
from shared.schemas import InstrumentUpdate, PredictRequest

bp = Blueprint("instruments", __name__)

# Instruments read per query while a drifted=true page fills up.
_SCAN = 500


def _instrument_or_404(session: so.Session, instrument_id: str) -> Instrument:
    found = session.get(Instrument, (current_tenant(), instrument_id))
    if found is None:
        raise Problem(404, f"no instrument {instrument_id!r}", slug="not-found")
    return found


@bp.get("/v1/instruments")
def list_instruments() -> dict[str, Any]:
    params = query(InstrumentListQuery)
    svc = current_services()
    tenant, threshold = current_tenant(), svc.settings.drift_threshold
    items: list[dict[str, Any]] = []
    after, more = params.cursor or "", True
    with svc.db.session() as session:
        # With drifted=true, instruments are read a few hundred at a time until the page is full.
        while more and len(items) < params.limit:
            want = _SCAN if params.drifted else params.limit - len(items)
            found = instruments_after(session, tenant, after, want, threshold)
            more = len(found) == want
            for position, fields in enumerate(found, start=1):
                after = fields["id"]
                if params.drifted and not drifted(fields):
                    continue
                items.append(fields)
                if len(items) == params.limit:
                    more = more or position < len(found)
                    break
    return instrument_list(items, f"/v1/instruments?{query_with(cursor=after)}" if more else None)


@bp.get("/v1/instruments/<instrument_id>")
def get_instrument(instrument_id: str) -> dict[str, Any]:
    svc = current_services()
    page = query(InstrumentQuery)
    with svc.db.session() as session:
        instrument = _instrument_or_404(session, instrument_id)
        return instrument_json(
            session, instrument, svc.settings.drift_threshold, page.history_limit, page.history_cursor
        )


@bp.put("/v1/instruments/<instrument_id>")
def put_instrument(instrument_id: str) -> dict[str, Any]:
    """Set the instrument's tolerance (an instrument exists from the first fit that names it)."""
    svc = current_services()
    with svc.db.session(write=True) as session:
        instrument = _instrument_or_404(session, instrument_id)
        instrument.tolerance = parse(InstrumentUpdate, json_body()).tolerance
    return get_instrument(instrument_id)


@bp.post("/v1/instruments/<instrument_id>/predict")
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
