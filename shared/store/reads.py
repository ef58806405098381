"""What a body needs, read from the database: the queries behind the presenters' bodies
(shared/store/presenters.py formats rows already loaded and runs none)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.store import calibrations
from shared.store.models import CANCELLED, RUNNING, STATUSES, SUCCEEDED, Batch, DriftVerdict, Fit, Instrument
from shared.store.presenters import BatchProgress, batch_json, instrument_fields, instrument_json


def batch_progress(session: so.Session, batch: Batch) -> BatchProgress:
    """Two counting queries over the batch's fits: cheap enough to read again while waiting."""
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
    # Succeeded as asked, but not at the least-squares line (shared/domain/convergence.py).
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
    return BatchProgress(status, counts, None if active else finished)


def batch_body(session: so.Session, batch: Batch, drift_threshold: float) -> dict[str, Any]:
    """The batch's body. Its `drifted` count reads the stored verdicts (shared/store/calibrations.py)."""
    return batch_json(
        batch, batch_progress(session, batch), calibrations.drifted_count(session, batch.id, drift_threshold)
    )


def instruments_after(
    session: so.Session, tenant: str, after: str, limit: int, drift_threshold: float
) -> list[dict[str, Any]]:
    """The bodies of the tenant's next `limit` instruments by id after `after` (the API's pages and
    the dashboard's list), without their history: each one's current calibration and its verdict,
    and two columns of each calibration for the as-found trend."""
    rows = session.scalars(
        sa.select(Instrument)
        .where(Instrument.tenant == tenant, Instrument.id > after)
        .order_by(Instrument.id)
        .limit(limit)
    ).all()
    found = calibrations.standings(session, tenant, [row.id for row in rows])
    currents = [standing.current.id for standing in found.values() if standing.current is not None]
    verdicts = calibrations.stored_drift_of(session, currents, drift_threshold)
    return [instrument_fields(row, found[row.id], [], verdicts) for row in rows]


def instrument_body(
    session: so.Session, instrument: Instrument, drift_threshold: float, limit: int = 100, after: str | None = None
) -> dict[str, Any]:
    """An instrument's body with a page of its history: `limit` calibrations, newest first, from the
    one after `after` (a fit id). Only the page's calibrations and the current one are read whole;
    an instrument calibrated nightly for years has thousands."""
    standing = calibrations.standings(session, instrument.tenant, [instrument.id])[instrument.id]
    page = calibrations.history_page(session, instrument.tenant, instrument.id, limit + 1, after)
    wanted = [row.id for row in page[:limit]] + ([standing.current.id] if standing.current is not None else [])
    verdicts = calibrations.stored_drift_of(session, wanted, drift_threshold)
    return instrument_json(instrument, standing, page, limit, verdicts)


def verdict_event(session: so.Session, fit_id: str) -> dict[str, Any]:
    """The body of an instrument.verdict webhook: the instrument, the calibration whose decision found
    the one before it failing (or conditionally), and that decision with the limits it was made against."""
    fit = session.get(Fit, fit_id)
    verdict = session.get(DriftVerdict, fit_id)
    if fit is None or verdict is None or fit.instrument is None:
        return {"event": "instrument.verdict", "fit_id": fit_id}
    instrument = session.get(Instrument, (fit.tenant, fit.instrument))
    return {
        "event": "instrument.verdict",
        "instrument": fit.instrument,
        "fit_id": fit_id,
        "previous_id": verdict.previous_id,
        "verdict": verdict.verdict,
        "limits": (
            {"lower": instrument.limit_lower, "upper": instrument.limit_upper}
            if instrument is not None and instrument.limit_lower is not None
            else None
        ),
        "decision_rule": (instrument.decision_rule or "simple") if instrument is not None else None,
        "decision": verdict.decision,
        "links": {"instrument": f"/v1/instruments/{quote(fit.instrument, safe='')}", "fit": f"/v1/fits/{fit_id}"},
    }
