"""The dashboard at /ui: recent batches and fits, a fit's loss curve and data, a batch's progress
and the distribution of its fitted lines, the instruments (drifted first) with each one's history,
and a printable calibration report per fit. Server-rendered HTML; the two charts of a fit page are
drawn in the browser from the API's own JSON (the downsampled losses, the data) by a small
script shipped here, with no CDN, so the service works offline."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import sqlalchemy as sa
from flask import Blueprint, Response, make_response, redirect, render_template, request

from services.api.auth import COOKIE, SECURE_COOKIE, session_cookie
from services.api.extensions import current_services
from services.api.listing import list_fits_query, query_with
from services.api.problems import TITLES, Problem
from services.api.requests import query
from services.api.tenancy import current_tenant, owned_or_404
from shared.contract.queries import FitListQuery
from shared.domain.packing import unpack_f64
from shared.domain.predictions import curve, forward_of
from shared.store import calibrations, tokens
from shared.store.models import STATUSES, SUCCEEDED, TERMINAL, Batch, Fit, Instrument
from shared.store.presenters import drifted, fit_json, instrument_fields, iso
from shared.store.reads import batch_body, batch_progress, instruments_after

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")


@bp.app_template_filter("num")
def num(value: object, fmt: str) -> str:
    """A figure in printf style, or a dash where the data did not determine it (a null
    condition number or R² for t_u all equal): a page renders whatever fields are null."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return fmt % value


@bp.app_template_filter("polynomial")
def polynomial(parameters: dict[str, float]) -> str:
    """a0 + a1·t_u + a2·t_u² …, each coefficient in %.6g with its sign."""
    powers = ["", " · t_u", " · t_u²", " · t_u³", " · t_u⁴", " · t_u⁵"]
    terms = [(parameters[f"a{k}"], powers[k]) for k in range(len(parameters))]
    text = " ".join(f"{num(value, '%+.6g')}{power}" for value, power in terms)
    return text[1:] if text.startswith("+") else text


# The loss chart asks for about one bucket per two pixels of its width: a 1,000,000-epoch fit
# sends the browser 600 buckets, not a million losses.
CHART_BUCKETS = 600
HISTOGRAM_BINS = 24


@bp.errorhandler(Problem)
def problem_page(problem: Problem) -> tuple[str, int]:
    """A person at a browser gets a page (an unknown fit id, say), not the API's problem+json."""
    return render_template(
        "problem.html", title=TITLES.get(problem.status, "Error"), detail=problem.detail
    ), problem.status


@bp.get("/login")
def login_form() -> str:
    return render_template("login.html", error=None)


def _same_origin() -> bool:
    """A form post from this site: its Origin (or Referer) names this host or the configured
    public URL. Browsers always send one of them on a POST; a request with neither comes from
    no browser, so no other site can have made it."""
    sent = request.headers.get("Origin") or request.headers.get("Referer")
    if not sent:
        return True
    origin = urlsplit(sent)
    allowed = {request.host_url.rstrip("/")}
    public = current_services().settings.public_url
    if public:
        allowed.add(f"{urlsplit(public).scheme}://{urlsplit(public).netloc}")
    return f"{origin.scheme}://{origin.netloc}" in allowed


@bp.post("/login")
def login() -> Any:
    if not _same_origin():
        return render_template("login.html", error="That form was sent from another site."), 403
    token = (request.form.get("token") or "").strip()
    if not token or tokens.tenant_of(current_services().db, token) is None:
        return render_template("login.html", error="That token is unknown or revoked."), 401
    svc = current_services()
    session_id = tokens.open_session(svc.db, token, dt.timedelta(hours=svc.settings.ui_session_hours))
    if session_id is None:
        return render_template("login.html", error="That token is unknown or revoked."), 401
    response = make_response(redirect("/ui/"))
    # Secure whenever the service is served over https, also behind a proxy that ends TLS.
    secure = request.is_secure or svc.settings.public_url.startswith("https://")
    response.set_cookie(
        SECURE_COOKIE if secure else COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/",
        max_age=math.ceil(svc.settings.ui_session_hours * 3600),
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    if not _same_origin():
        return Response("That form was sent from another site.", status=403)
    cookie = session_cookie()
    if cookie is not None:
        tokens.close_session(current_services().db, cookie)
    response = make_response(redirect("/ui/login"))
    response.delete_cookie(COOKIE, path="/")
    response.delete_cookie(SECURE_COOKIE, path="/", secure=True)
    return response


# default-src 'self': scripts and styles only from the service's own files (no inline code, so no
# injected markup can run), frames of the dashboard nowhere.
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith("/ui/static/"):
        # A page shows a tenant's data: no shared cache, no back button after logout, keeps it.
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def home() -> str:
    # The same filters and pages as GET /v1/fits (status, label, cursor), plus ?batch=.
    batch_id = request.args.get("batch") or None
    # The page's filter form sends empty fields for "any": those are left out.
    given = {name: value for name, value in request.args.items() if value}
    fits, cursor = list_fits_query(query(FitListQuery, given), batch_id=batch_id)
    svc = current_services()
    with svc.db.session() as session:
        # The list shows each batch's progress, not its drift verdicts (a second each at 10,000 fits).
        batches = [
            {
                "id": b.id,
                "count": b.count,
                "created_at": iso(b.created_at),
                **dataclasses.asdict(batch_progress(session, b)),
            }
            for b in session.scalars(
                sa.select(Batch).where(Batch.tenant == current_tenant()).order_by(Batch.created_at.desc()).limit(10)
            )
        ]
    return render_template(
        "index.html",
        fits=[fit_json(f) for f in fits],
        batches=batches,
        status=request.args.get("status") or None,
        statuses=STATUSES,
        batch_id=batch_id,
        older=f"/ui/?{query_with(cursor=cursor)}" if cursor else None,
    )


@bp.get("/fits/<fit_id>")
def fit_page(fit_id: str) -> str:
    with current_services().db.session() as session:
        row = owned_or_404(session, Fit, fit_id, "fit")
        fit = fit_json(row)
        curves = curves_of(row)
    return render_template(
        "fit.html", fit=fit, running=fit["status"] not in TERMINAL, buckets=CHART_BUCKETS, curves=curves
    )


def curves_of(fit: Fit) -> dict[str, list[list[float]]]:
    """A fit of a model other than the line: its fitted curve and the least-squares one, sampled
    across its readings for the data chart (shared/domain/predictions.curve), in t_u → t_c."""
    if fit.model is None or fit.status != SUCCEEDED or not fit.parameters:
        return {}
    t_u = unpack_f64(fit.t_u)
    found = {"fitted": curve(fit.model, fit.parameters["values"], t_u)}
    opt = (fit.solution or {}).get("parameters_opt")
    if opt and None not in opt:
        found["optimum"] = curve(fit.model, opt, t_u)
    return found


@bp.get("/batches/<batch_id>")
def batch_page(batch_id: str) -> str:
    svc = current_services()
    with svc.db.session() as session:
        owned = owned_or_404(session, Batch, batch_id, "batch")
        names = calibrations.drifted_instruments(session, batch_id, svc.settings.drift_threshold)
        batch = batch_body(session, owned, svc.settings.drift_threshold)
        # Four numbers per fit, not a model object each: a batch has tens of thousands of fits.
        rows = session.execute(
            sa.select(Fit.w, Fit.b, Fit.input_scale, Fit.input_shift).where(
                Fit.batch_id == batch_id, Fit.status == SUCCEEDED, Fit.w.is_not(None), Fit.b.is_not(None)
            )
        ).all()
    model = np.array(rows, dtype=np.float64).reshape(-1, 4)
    w = model[:, 0] * model[:, 2]  # the raw-unit line, as shared.store.models.raw_line gives it
    b = model[:, 1] - w * np.nan_to_num(model[:, 3])
    return render_template(
        "batch.html",
        batch=batch,
        running=batch["status"] in ("queued", "running"),
        drifted=names,
        histograms=[histogram("w_raw (slope)", w), histogram("b_raw (offset)", b)],
    )


# Instruments on one page of the list; past that, the page links to the next.
INSTRUMENTS_PER_PAGE = 500


def _millis(iso_time: str) -> int:
    return int(dt.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() * 1000)


@bp.get("/instruments")
def instruments_page() -> str:
    """Every instrument of the tenant, those whose current calibration drifted first."""
    svc = current_services()
    tenant, after = current_tenant(), request.args.get("after", "")
    with svc.db.session() as session:
        found = instruments_after(session, tenant, after, INSTRUMENTS_PER_PAGE + 1, svc.settings.drift_threshold)
    items = found[:INSTRUMENTS_PER_PAGE]
    flagged = [item for item in items if drifted(item)]
    others = [item for item in items if not drifted(item)]
    return render_template(
        "instruments.html",
        instruments=flagged + others,
        drifted=len(flagged),
        more=items[-1]["id"] if len(found) > INSTRUMENTS_PER_PAGE else None,
    )


@bp.get("/instruments/<instrument_id>")
def instrument_page(instrument_id: str) -> str:
    svc = current_services()
    with svc.db.session() as session:
        found = session.get(Instrument, (current_tenant(), instrument_id))
        if found is None:
            raise Problem(404, f"no instrument {instrument_id!r}", slug="not-found")
        history = calibrations.calibrations_of(session, current_tenant(), [found.id])[found.id]
        verdicts = calibrations.stored_drift_of(session, [row.id for row in history], svc.settings.drift_threshold)
        instrument = instrument_fields(found, calibrations.standing_of(history, verdicts), history, verdicts)
    oldest_first = instrument["history"][::-1]

    def series(name: str) -> list[list[Any]]:
        """One parameter over time (±2 standard uncertainties), from the calibrations that have it."""
        return [
            [
                _millis(c["calibrated_at"]),
                c["parameters"][name],
                2 * u if (u := c["standard_uncertainties"].get(name)) is not None else 0,
                bool(c["drift"] and c["drift"]["flagged"]),
            ]
            for c in oldest_first
            if c["parameters"].get(name) is not None
        ]

    # Each parameter of the instrument's calibrations, the current one's first (the line's w and b
    # keep their charts' ids: w-chart, b-chart).
    names: list[str] = []
    for c in [instrument["current"], *instrument["history"]] if instrument["current"] else []:
        names += [name for name in c["parameters"] if name not in names]

    as_found = [
        [_millis(c["calibrated_at"]), c["drift"]["as_found_rms"], 0, c["drift"]["flagged"]]
        for c in oldest_first
        if c["drift"] and c["drift"]["as_found_rms"] is not None
    ]
    return render_template(
        "instrument.html",
        instrument=instrument,
        parameter_charts=[(name, series(name)) for name in names],
        as_found=as_found,
        threshold=svc.settings.drift_threshold,
    )


REPORT_ROWS = 1000
REPORT_POINTS = 2000


@bp.get("/fits/<fit_id>/report")
def report_page(fit_id: str) -> str:
    """A fit's calibration report, for printing: its data, line, residuals, uncertainty and, for an
    instrument's calibration, the drift verdict against the one before."""
    svc = current_services()
    with svc.db.session() as session:
        fit = owned_or_404(session, Fit, fit_id, "fit")
        t_u, t_c = unpack_f64(fit.t_u), unpack_f64(fit.t_c)
        verdict = calibrations.stored_drift_of(session, [fit.id], svc.settings.drift_threshold).get(fit.id)
        curves = curves_of(fit)
        body = fit_json(fit)
    raw = fit.raw_params()
    result = body["result"]
    if raw is not None:
        residuals = t_c - (raw[0] * t_u + raw[1])
    elif result is not None and result["w_raw"] is None and fit.model is not None and fit.parameters:
        # Any other model: its function of t_u, as predictions compute it (from its coefficients).
        with np.errstate(all="ignore"):
            residuals = t_c - forward_of(fit.model)(np.array(fit.parameters["values"], dtype=np.float64), t_u).t_c
    else:
        residuals = None

    # A page a browser and a printer can hold: the table's first REPORT_ROWS readings, the chart's
    # REPORT_POINTS spread evenly over all of them (the whole data: GET /v1/fits/{id}/data).
    def row(i: int) -> dict[str, Any]:
        return {
            "i": i,
            "t_u": float(t_u[i]),
            "t_c": float(t_c[i]),
            "residual": None if residuals is None else float(residuals[i]),
        }

    shown = np.unique(np.linspace(0, len(t_u) - 1, min(len(t_u), REPORT_POINTS)).round().astype(int))
    return render_template(
        "report.html",
        fit=body,
        curves=curves,
        rows=[row(i) for i in range(min(len(t_u), REPORT_ROWS))],
        total=len(t_u),
        residual_points=[[row(i)["t_u"], row(i)["residual"], 0, False] for i in shown] if residuals is not None else [],
        rms=float(np.sqrt(np.mean(residuals**2))) if residuals is not None else None,
        drift=verdict.drift if verdict else None,
        previous=verdict.previous_id if verdict else None,
        threshold=svc.settings.drift_threshold,
        printed=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def histogram(name: str, values: np.ndarray) -> dict[str, Any]:
    """Bars of a histogram in a 100 × 40 box, for the template to draw as SVG."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"name": name, "bars": [], "count": 0}
    counts, edges = _binned(values)
    top = max(int(counts.max()), 1)
    width = 100 / len(counts)
    bars = [
        {
            "x": i * width,
            "width": width,
            "height": 40 * c / top,
            "count": int(c),
            "low": float(edges[i]),
            "high": float(edges[i + 1]),
        }
        for i, c in enumerate(counts)
    ]
    return {
        "name": name,
        "bars": bars,
        "count": int(len(values)),
        "low": float(edges[0]),
        "high": float(edges[-1]),
        **_spread(values),
    }


def _binned(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HISTOGRAM_BINS bars; one bar holding them all where numpy cannot make finite-sized bins: a
    range past float64's (a batch of slopes ±1e308), or narrower than the floats between its ends
    (numpy's ValueError was a 500)."""
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            return np.histogram(values, bins=HISTOGRAM_BINS)
        except ValueError:
            return np.array([len(values)]), np.array([values.min(), values.max()])


def _spread(values: np.ndarray) -> dict[str, float]:
    """Their mean and SD; inf where the sums pass float64's range (printed so, not warned about)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return {"mean": float(values.mean()), "sd": float(values.std())}
