"""/v1/batches: many fits in one request, validated whole, stored in bulk, run in chunks."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Blueprint, Response, request, stream_with_context
from pydantic import ValidationError

from services.api import csv_table, json_batch, parquet, spreadsheets
from services.api.admission import Ask, admit, ask_of, refuse_oversize, require_broker
from services.api.bodies import too_many_fits
from services.api.cancel import cancel_active
from services.api.contract import CSV_TEXT, IDEMPOTENCY_KEY, NUMBER, PARQUET, json_content, operation
from services.api.extensions import Services, current_services
from services.api.idempotency import insert_or_replay, request_key
from services.api.listing import list_fits_query, query_with
from services.api.memory import parsing
from services.api.problems import Problem, from_validation, invalid_field
from services.api.requests import parse, query
from services.api.submit import BatchFingerprint, earlier_batch_digest, fit_rows
from services.api.tenancy import current_tenant, owned_or_404
from shared.contract.model_kinds import model_from_stored, parameters_of_all
from shared.contract.queries import CSV_BATCH_DEFAULTS, BatchFitsQuery, WaitQuery
from shared.contract.schemas import BatchOptions, FitCreate, FitOptions
from shared.runtime.settings import Settings
from shared.store import calibrations, ended
from shared.store.bulk import insert_row_slices
from shared.store.models import Batch, Fit, new_id, utcnow
from shared.store.presenters import RESULT_COLUMNS, fit_list, parameter_cells, parameter_columns
from shared.store.reads import batch_body, batch_progress

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")

# A CSV batch as the API reads it: the header, then each series' rows together (at least two,
# since a fit needs two points), a series never starting again further down.
_ROW_REST = rf",{NUMBER},{NUMBER}\r?\n"
CSV_PATTERN = rf"^series,t_u,t_c\r?\n(?:([A-Za-z0-9_.-]{{1,32}}){_ROW_REST}(?:\1{_ROW_REST})+(?!\1,)(?![\s\S]*\n\1,))+$"
BATCH = {"description": "The batch", "content": json_content("BatchPublic")}

_MAX_REPORTED_ERRORS = 50


Fits = Callable[[], Iterator[tuple[list[Any], dict[str, Any]]]]


@dataclasses.dataclass
class Checked:
    """A batch's fits, every one valid: how many, their instruments, their fingerprint (under a key), and
    how to read them again (validated a slice at a time when they are stored: a 50,000-fit batch
    never holds 50,000 validated models). A batch of one slice keeps its models from the check:
    validating them twice would only make small batches slower."""

    fits: Fits
    defaults: dict[str, Any]
    count: int
    instruments: set[str]
    fingerprint: BatchFingerprint | None
    kept: list[FitCreate] | None

    def validated(self, settings: Settings) -> Iterator[FitCreate]:
        if self.kept is not None:
            yield from self.kept
            return
        context = {"settings": settings}
        for _, body in self.fits():
            yield FitCreate.model_validate({**self.defaults, **body}, context=context)


def _checked(defaults: dict[str, Any], fits: Fits, count: int, svc: Services, *, keyed: bool = False) -> Checked:
    """Validate every one of the `count` fits before anything is stored; 422 names each bad one.
    The batch's fingerprint is taken only when it is `keyed` (an Idempotency-Key is its one reader):
    a 10,000-fit batch's fingerprint costs about 0.2 s."""
    context = {"settings": svc.settings}
    try:
        FitOptions.model_validate(defaults, context=context)
    except ValidationError as exc:
        raise from_validation(exc, prefix=["defaults"]) from exc
    if count > svc.settings.max_fits_per_batch:
        raise too_many_fits(f"fits: {count} fits, the limit is {svc.settings.max_fits_per_batch}")
    errors: list[dict[str, Any]] = []
    worst: Problem | None = None
    points = 0
    instruments: set[str] = set()
    fingerprint = BatchFingerprint() if keyed else None
    kept: list[FitCreate] | None = []
    for loc, body in fits():
        try:
            if "callback_url" in body or "callback_url" in defaults:
                # One webhook for the batch, not thousands for its fits.
                raise invalid_field(
                    [*loc, "callback_url"],
                    "callback_url belongs to the batch",
                    "callback_url: set it on the batch (its final body has every count), not on its fits",
                )
            spec = FitCreate.model_validate({**defaults, **body}, context=context)
        except (ValidationError, Problem) as exc:
            problem = from_validation(exc, prefix=loc) if isinstance(exc, ValidationError) else exc
            worst = problem if worst is None or problem.status == 413 else worst
            errors += problem.errors or []
            if len(errors) >= _MAX_REPORTED_ERRORS:
                break
            continue
        points += len(spec.t_u)
        if worst is None:  # a refused batch needs no fingerprint
            if fingerprint is not None:
                fingerprint.add(spec, given=body.keys())
            if spec.instrument:
                instruments.add(spec.instrument)
            if kept is not None:
                kept.append(spec)
                if len(kept) > _KEPT_FITS or points > _POINTS_AT_A_TIME:
                    kept = None  # too many to keep (_KEPT_FITS): validated again as it is stored
    if worst is not None:
        raise Problem(worst.status, worst.detail + " — nothing of the batch was stored", slug=worst.slug, errors=errors)
    if points > svc.settings.max_points_per_batch:
        raise Problem(
            413,
            f"{points} points in all, the limit is {svc.settings.max_points_per_batch}",
            slug="data-too-large",
            errors=[{"loc": ["fits"], "msg": "too many points"}],
        )
    return Checked(fits, defaults, count, instruments, fingerprint, kept)


def _from_json(svc: Services, keyed: bool) -> tuple[Checked, Ask, str | None]:
    """The batch's fits, checked, with its quota's ask and its callback_url."""
    if request.mimetype != "application/json":
        raise Problem(415, f"send application/json, not {request.mimetype or 'no Content-Type'}")
    batch = json_batch.read(svc.settings)
    # Before validation: the per-request quota is refused in the time it takes to read the body.
    refuse_oversize(svc.settings, batch.ask)
    if batch.problem is not None:
        raise batch.problem
    checked = _checked(batch.defaults, lambda: iter(batch.fits), len(batch.fits), svc, keyed=keyed)
    return checked, batch.ask, batch.callback_url


_NESTED = ("init", "validation", "early_stopping")
# What a query default must be, in the user's words (a query's values are text until read).
_QUERY_KINDS = {int: "an integer", float: "a number", str: "text"}


def _query_defaults() -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for name, kind in CSV_BATCH_DEFAULTS.items():
        raw = request.args.get(name)
        if name in ("learning_rate", "epochs") and raw == "auto":
            defaults[name] = raw
            continue
        if raw is None:
            continue
        try:
            value = kind(raw)
        except ValueError as exc:
            what = _QUERY_KINDS[kind]
            raise invalid_field(["query", name], what, f"{name}: not {what} ({raw!r})") from exc
        parent = next((p for p in _NESTED if name.startswith(p + "_")), None)
        if parent:
            defaults.setdefault(parent, {})[name[len(parent) + 1 :]] = value
        else:
            defaults[name] = value
    if "model" in defaults or "degree" in defaults:
        # ?model=polynomial&degree=2 is the body's "model": {"kind": "polynomial", "degree": 2}; a degree
        # without a model, or with another kind, is refused by the model's own validation.
        kind = defaults.pop("model", "line")
        defaults["model"] = {"kind": kind, **({"degree": defaults.pop("degree")} if "degree" in defaults else {})}
    return defaults


def _from_long_table(svc: Services, keyed: bool) -> tuple[Checked, Ask, str | None]:
    """A CSV or Parquet batch: one fit per series, the defaults and callback_url as query parameters.
    The series' points stay float64 arrays from the body to the database (services/api/long_table.py)."""
    table = parquet.read(svc.settings) if request.mimetype == parquet.MEDIA_TYPE else csv_table.read(svc.settings)
    if not table.names:
        raise Problem(400, "the CSV has no data rows", slug="malformed")
    defaults = _query_defaults()
    ask = ask_of([{}] * len(table.names), defaults, svc.settings.max_epochs)
    refuse_oversize(svc.settings, ask)

    def fits() -> Iterator[tuple[list[Any], dict[str, Any]]]:
        for s in table.series():
            body = {"t_u": s.t_u, "t_c": s.t_c, "labels": {"series": s.name}, "instrument": s.instrument}
            # A stated uncertainty per point, a float64 array as the readings are (checked as a fit's list is).
            body |= s.uncertainties
            yield ["series", s.name], body

    checked = _checked(defaults, fits, len(table.names), svc, keyed=keyed)
    given = {"callback_url": request.args["callback_url"]} if "callback_url" in request.args else {}
    callback = parse(BatchOptions, given, {"settings": svc.settings}).callback_url
    return checked, ask, callback


def _get_batch(session: Any, batch_id: str) -> Batch:
    return owned_or_404(session, Batch, batch_id, "batch")


# Fits' rows built and stored a slice at a time: at most this many fits, or this many points (the
# statistics of a slice hold a few arrays of its points, its rows their packed bytes).
_ROWS_AT_A_TIME = 4096
_POINTS_AT_A_TIME = 1 << 18
# A batch of at most this many fits (and _POINTS_AT_A_TIME points) keeps the specs it checked for
# its insert instead of validating each again: about 2.7 KB each (their readings are views of the
# body's columns), 43 MB at most, within the 4 KiB a fit reserves of the parse budget
# (services/api/memory.py). Validating a 10,000-fit batch again cost 0.2-0.25 s of its POST.
_KEPT_FITS = 16_384


def _slices(specs: Iterable[FitCreate]) -> Iterator[list[FitCreate]]:
    """Consecutive slices of `specs` within both bounds (a slice holds one fit at least)."""
    part: list[FitCreate] = []
    points = 0
    for spec in specs:
        if part and (len(part) >= _ROWS_AT_A_TIME or points + len(spec.t_u) > _POINTS_AT_A_TIME):
            yield part
            part, points = [], 0
        part.append(spec)
        points += len(spec.t_u)
    if part:
        yield part


@bp.post("")
@operation(
    "createBatch",
    "Submit many fits; validated whole, nothing stored if one is invalid",
    {
        "202": {"description": "Accepted", "content": json_content("BatchPublic")},
        "200": {"description": "An idempotent replay", "content": json_content("BatchPublic")},
    },
    description=lambda limits: (
        "JSON: `{defaults, fits: [...]}`, each fit overriding any default; each fit merged "
        "with the defaults must itself be a valid fit (422 naming `fits[i]` otherwise). CSV "
        "(`Content-Type: text/csv`), or Parquet (`application/vnd.apache.parquet`), the same columns: long "
        "format `series,t_u,t_c` (and optionally `u_t_c`, `u_t_u`: each point's stated standard uncertainties, "
        "as a fit's), one fit per series (its label `series`, and its `instrument` unless an "
        "`instrument` column names another), defaults and `callback_url` as query parameters "
        f"({', '.join(CSV_BATCH_DEFAULTS)}). At most "
        f"{limits['batch_fits']} fits and {limits['batch_points']} points (413 over). "
        "Every limit is checked as the body is read: a series (or a JSON array) past the points "
        "of one fit is refused at the rows that pass it (413 naming the series, or `fits[i]`); a "
        "JSON field other than `fits` takes at most 1 MiB. A CSV row with more cells than the "
        "header is 400 naming its line, and a header (or a Parquet file) naming a column it reads twice is "
        "400 naming the column; CSV lines may end in LF, CRLF or CR alone. Each batch has a share of its "
        "API process's parse budget, "
        "growing as it is read (24 bytes per reading, 4 KiB per fit; 503 with Retry-After, "
        "`quota: parse_memory_bytes`, past it). "
        "`Idempotency-Key` works as for fits."
    ),
    headers=(IDEMPOTENCY_KEY,),
    body={
        **json_content("BatchCreate"),
        "text/csv": {
            "schema": {"type": "string", "pattern": CSV_PATTERN},
            "example": "series,t_u,t_c\nA17,35.7,0.5\nA17,55.9,14.0\n",
        },
        **PARQUET,
    },
    problems=("400", "409", "413", "415", "422", "503", "507"),
)
def create_batch() -> tuple[dict[str, Any], int, dict[str, str]]:
    svc = current_services()
    # The body is parsed, validated and stored within this process's memory budget: its share
    # grows with what its reader has read (services/api/memory.py).
    with parsing(svc.parse_budget, svc.settings, expansion=0):
        return _create_batch(svc)


def _create_batch(svc: Services) -> tuple[dict[str, Any], int, dict[str, str]]:
    key = request_key()
    read = _from_long_table if request.mimetype in ("text/csv", parquet.MEDIA_TYPE) else _from_json
    checked, ask, callback = read(svc, keyed=key is not None)
    tenant = current_tenant()
    size = svc.settings.chunk_size
    chunks = [new_id() for _ in range(0, checked.count, size)]
    digest = None if checked.fingerprint is None else checked.fingerprint.hexdigest(callback)

    owed = Ask(ask.fit_epochs, ask.loss_bytes, 1 if callback else 0)

    def admitted(session: so.Session) -> None:
        admit(svc, session, tenant, owed)
        require_broker(svc)

    def insert(session: so.Session) -> Batch:
        batch = Batch(
            id=new_id(),
            tenant=tenant,
            count=checked.count,
            cancelled=False,
            created_at=utcnow(),
            idempotency_key=key,
            request_digest=digest,
            callback_url=callback,
            callback_pending=callback is not None,
        )
        session.add(batch)
        session.flush()
        # A slice of fits at a time, validated again and made rows: a 50,000-fit batch never holds
        # every fit's model or row at once. On PostgreSQL one COPY takes the slices as they come.
        submitted = utcnow()
        models: set[tuple[str, ...]] = set()

        def rows_by_slice() -> Iterator[list[dict[str, Any]]]:
            start = 0
            for part in _slices(checked.validated(svc.settings)):
                models.update(spec.model.parameter_names for spec in part)
                yield fit_rows(
                    part,
                    tenant,
                    batch_id=batch.id,
                    max_epochs=svc.settings.max_epochs,
                    chunk_ids=[chunks[(start + i) // size] for i in range(len(part))],
                    created_at=submitted,
                )
                start += len(part)

        insert_row_slices(session, Fit, rows_by_slice())
        batch.parameter_names = parameters_of_all(models)
        calibrations.register(session, tenant, checked.instruments)
        return batch

    batch, created = insert_or_replay(
        svc.db,
        Batch,
        tenant,
        key,
        digest,
        admit=admitted,
        insert=insert,
        earlier=lambda: earlier_batch_digest(checked.validated(svc.settings), callback),
    )
    if created:
        svc.dispatch(chunks)
    with svc.db.session() as session:
        return (
            batch_body(session, batch, svc.settings.drift_threshold),
            202 if created else 200,
            {"Location": f"/v1/batches/{batch.id}"},
        )


@bp.get("/<batch_id>")
@operation(
    "getBatch",
    "A batch's status and its fits' counts per status",
    {"200": BATCH},
    description="With `?wait=S` the answer waits until the batch is completed or cancelled "
    "(or S seconds). Another tenant's id is 404 at once.",
    query=WaitQuery,
    problems=("404",),
)
def get_batch(batch_id: str) -> dict[str, Any]:
    svc = current_services()
    seconds = query(WaitQuery).wait
    if seconds is not None:
        # While waiting, only the batch's progress is read again (on the embedded default every
        # 10 to 100 ms); the drift verdicts in the body are read once, for the answer.
        def progress() -> tuple[bool, bool]:
            with svc.db.session() as session:
                over = batch_progress(session, _get_batch(session, batch_id)).ended
            return over, over

        svc.waits.answer(ended.batch_key(batch_id), progress, seconds, current_tenant())
    with svc.db.session() as session:
        return batch_body(session, _get_batch(session, batch_id), svc.settings.drift_threshold)


def parameter_names(session: so.Session, batch: Batch) -> list[str]:
    """The parameters of the batch's models, each once (model_kinds.parameters_of_all's order): kept on
    the batch since submission, or read from the fits of a batch from before that."""
    if batch.parameter_names is not None:
        return list(batch.parameter_names)
    stored = session.scalars(sa.select(sa.cast(Fit.model, sa.Text)).where(Fit.batch_id == batch.id).distinct())
    kinds = [model_from_stored(json.loads(text) if text and text != "null" else None) for text in stored]
    return parameters_of_all(kind.parameter_names for kind in kinds)


# JSON columns a result row never reads, left in the database: decoding them was half the time of a
# 10,000-fit batch's CSV (raiseload: a row that comes to need one fails in the tests, not lazily).
_NOT_IN_RESULT_ROWS = [
    so.defer(column, raiseload=True)
    for column in (Fit.checkpoint, Fit.optimizer_options, Fit.validation, Fit.early_stopping, Fit.warnings)
]


def result_rows(batch_id: str, drift_threshold: float, names: Sequence[str] = ()) -> Iterator[list[list[Any]]]:
    """The batch's fits as rows of RESULT_COLUMNS and the parameter columns of `names` (None for
    nothing), a page at a time, by fit id."""
    db = current_services().db
    after = ""
    while True:
        with db.session() as session:
            fits = list(
                session.scalars(
                    sa.select(Fit)
                    .options(*_NOT_IN_RESULT_ROWS)
                    .where(Fit.batch_id == batch_id, Fit.id > after)
                    .order_by(Fit.id)
                    .limit(2000)
                )
            )
            drifts = calibrations.drift_of(session, fits, drift_threshold)
        if not fits:
            return
        page = []
        for fit in fits:
            raw = fit.raw_params()
            found = drifts.get(fit.id)
            page.append(
                [
                    fit.id,
                    (fit.labels or {}).get("series"),
                    fit.status,
                    fit.w if raw else None,
                    fit.b if raw else None,
                    raw[0] if raw else None,
                    raw[1] if raw else None,
                    fit.loss,
                    fit.last_epoch_loss,
                    fit.epochs_done,
                    fit.diverged_at_epoch,
                    fit.converged,
                    fit.w_opt,
                    fit.b_opt,
                    fit.se_w,
                    fit.se_b,
                    fit.r2,
                    fit.instrument,
                    found.p_value if found else None,
                    found.flagged if found else None,
                    found.as_found_rms if found else None,
                    (fit.chi2 or {}).get("chi2_obs"),
                    (fit.chi2 or {}).get("consistent"),
                    *parameter_cells(fit, names),
                ]
            )
        yield page
        after = fits[-1].id


def _result_lines(batch_id: str, drift_threshold: float, names: Sequence[str]) -> Iterator[str]:
    yield ",".join([*RESULT_COLUMNS, *parameter_columns(names)]) + "\n"
    for page in result_rows(batch_id, drift_threshold, names):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([spreadsheets.cell(value) for value in row] for row in page)
        yield out.getvalue()


@bp.get("/<batch_id>/fits")
@operation(
    "getBatchFits",
    "The batch's fits, paginated; ?format=csv streams one result line per fit",
    {"200": {"description": "Fits", "content": {**json_content("FitList"), **CSV_TEXT, **PARQUET}}},
    description="CSV (and Parquet) columns: " + ",".join(RESULT_COLUMNS) + ", then one `p_<name>` "
    "(the value in raw units) and one `u_<name>` (its standard uncertainty) per parameter of the batch's "
    "models: `p_w,p_b,u_w,u_b` for lines, `p_a1,…,p_a0,u_a1,…` for polynomials. `drift_p_value`, "
    "`drift_flagged` and `as_found_rms` compare a succeeded fit naming an instrument with that "
    "instrument's calibration before it (empty for its first); `chi2_obs` and `consistent` are a fit's "
    "with stated uncertainties (u_t_c).",
    query=BatchFitsQuery,
    problems=("404", "422"),
)
def batch_fits(batch_id: str) -> Any:
    params = query(BatchFitsQuery)
    with current_services().db.session() as session:
        batch = _get_batch(session, batch_id)
        names = parameter_names(session, batch) if params.format in ("csv", "parquet") else []
    threshold = current_services().settings.drift_threshold
    if params.format == "csv":
        return Response(
            stream_with_context(_result_lines(batch_id, threshold, names)),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{batch_id}-fits.csv"'},
        )
    if params.format == "parquet":
        return Response(
            parquet.results_file(result_rows(batch_id, threshold, names), [*RESULT_COLUMNS, *parameter_columns(names)]),
            mimetype=parquet.MEDIA_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{batch_id}-fits.parquet"'},
        )
    fits, cursor = list_fits_query(params, batch_id=batch_id)
    next_link = f"/v1/batches/{batch_id}/fits?{query_with(cursor=cursor)}" if cursor else None
    return fit_list(fits, next_link)


@bp.post("/<batch_id>/cancel")
@operation("cancelBatch", "Cancel every queued or running fit of the batch", {"202": BATCH}, problems=("404", "409"))
def cancel_batch(batch_id: str) -> tuple[dict[str, Any], int]:
    with current_services().db.session(write=True) as session:
        batch = _get_batch(session, batch_id)
        # A batch with nothing left to run stays as it ended.
        changed = cancel_active(session, Fit.batch_id == batch.id)
        if changed:
            batch.cancelled = True
    with current_services().db.session() as session:
        body = batch_body(session, _get_batch(session, batch_id), current_services().settings.drift_threshold)
    if not changed:
        raise Problem(
            409, f"batch {batch_id} is {body['status']}: none of its fits is queued or running", slug="not-cancellable"
        )
    return body, 202
