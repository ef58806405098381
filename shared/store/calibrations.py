"""Instruments and their calibrations in the database: which fits are an instrument's calibrations,
which one was current at a time, and which one came before a given fit.

A calibration is a succeeded fit naming the instrument; they are ordered by (created_at, id), the
time its readings were submitted, so a history never depends on which worker finished first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql

from shared.domain.conformity import Rule, decide
from shared.domain.packing import unpack_f64
from shared.domain.splits import held_out_indices, split
from shared.store import deliveries
from shared.store.bulk import upsert_insert
from shared.store.drift import Calibration, Drift, drift, needs_readings, verdict_row
from shared.store.models import SUCCEEDED, DriftVerdict, Fit, Instrument, utcnow

# What a calibration is read with (shared/drift.Calibration.of), as plain rows: a batch's verdicts
# read thousands, and ORM objects cost half their time.
CALIBRATION_COLUMNS = (
    Fit.id,
    Fit.tenant,
    Fit.instrument,
    Fit.status,
    Fit.created_at,
    Fit.w,
    Fit.b,
    Fit.input_scale,
    Fit.input_shift,
    Fit.se_w,
    Fit.se_b,
    Fit.cov_wb,
    Fit.r2,
    Fit.n_points,
    Fit.converged,
    Fit.validation,
    Fit.w_opt,
    Fit.b_opt,
    Fit.residual_sd,
    Fit.t_u_mean,
    Fit.t_u_sxx,
    Fit.model,
    Fit.parameters,
    Fit.solution,
)
Calibrated = Fit | sa.Row[Any]

# Names per IN (...) list: SQLite's limit on bound parameters is far above, and so is PostgreSQL's.
_PER_QUERY = 1000


def register(session: so.Session, tenant: str, names: Iterable[str | None]) -> None:
    """Create the instruments these fits name, if new (in the submission's transaction)."""
    wanted = sorted({name for name in names if name})
    if not wanted:
        return
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # The names as one array, one statement: executing it once per name (psycopg's pipeline)
        # took 0.14-0.28 s of a 10,000-instrument batch's POST.
        given = (
            sa.func.unnest(sa.bindparam("names", wanted, type_=postgresql.ARRAY(sa.String)))
            .table_valued("id")
            .render_derived()
        )
        rows = sa.select(sa.literal(tenant, sa.String), given.c.id, sa.literal(now, Instrument.created_at.type))
        insert = postgresql.insert(Instrument).from_select(["tenant", "id", "created_at"], rows)
        session.execute(insert.on_conflict_do_nothing())
        return
    # One statement executed for many rows (in this process): compiling a VALUES list of 1,000 rows
    # took 0.27 s.
    rows_of = [{"tenant": tenant, "id": name, "created_at": now} for name in wanted]
    session.execute(upsert_insert(session)(Instrument).on_conflict_do_nothing(), rows_of)


def known(session: so.Session, tenant: str, names: Sequence[str]) -> set[str]:
    """Which of these are the tenant's instruments."""
    found: set[str] = set()
    for start in range(0, len(names), _PER_QUERY):
        found.update(
            session.scalars(
                sa.select(Instrument.id).where(
                    Instrument.tenant == tenant, Instrument.id.in_(names[start : start + _PER_QUERY])
                )
            )
        )
    return found


def calibrations_of(session: so.Session, tenant: str, names: Sequence[str]) -> dict[str, list[sa.Row[Any]]]:
    """Each instrument's calibrations, newest first (every name present, perhaps with none), as rows
    of CALIBRATION_COLUMNS: a page of instruments calibrated nightly for years is thousands of
    calibrations, and their readings (kilobytes each) are not needed for their figures."""
    found: dict[str, list[sa.Row[Any]]] = {name: [] for name in names}
    for start in range(0, len(names), _PER_QUERY):
        rows = cast(
            "list[sa.Row[Any]]",
            session.execute(
                sa.select(*CALIBRATION_COLUMNS)
                .where(
                    Fit.tenant == tenant, Fit.instrument.in_(names[start : start + _PER_QUERY]), Fit.status == SUCCEEDED
                )
                .order_by(Fit.instrument, Fit.created_at.desc(), Fit.id.desc())
            ).all(),
        )
        for row in rows:
            found[row.instrument].append(row)
    return found


def _seek(
    tenant: so.QueryableAttribute[str],
    instrument: so.QueryableAttribute[Any],
    *conditions: Callable[[Any], Any],
    order: Callable[[Any], list[Any]],
) -> sa.ScalarSelect[str]:
    """The id of the first of an instrument's calibrations meeting `conditions` in `order` (each
    given the alias the calibrations are read through), as a scalar subquery: one index seek."""
    other = so.aliased(Fit, name="calibration")
    return (
        sa.select(other.id)
        .where(other.tenant == tenant, other.instrument == instrument, other.status == SUCCEEDED)
        .where(*(condition(other) for condition in conditions))
        .order_by(*order(other))
        .limit(1)
        .scalar_subquery()
    )


def _newest_first(cal: Any) -> list[Any]:
    return [cal.created_at.desc(), cal.id.desc()]


@functools.cache  # built once: building it took 12 ms, a tenth of the seeks' time for 1,000 fits
def _adjacent(later: bool) -> sa.ColumnElement[str]:
    """The id of the calibration right before (or right after, `later`) the fit of the enclosing
    query by (created_at, id), as two index seeks: the nearest of the same created_at by id, else
    the nearest of another created_at. A row-value comparison would be one, but SQLite ranges its
    index on created_at alone, and a batch's fits all share one: it read the whole batch per seek."""
    if later:
        return sa.func.coalesce(
            _seek(
                Fit.tenant,
                Fit.instrument,
                lambda c: c.created_at == Fit.created_at,
                lambda c: c.id > Fit.id,
                order=lambda c: [c.id],
            ),
            _seek(
                Fit.tenant,
                Fit.instrument,
                lambda c: c.created_at > Fit.created_at,
                order=lambda c: [c.created_at, c.id],
            ),
        )
    return sa.func.coalesce(
        _seek(
            Fit.tenant,
            Fit.instrument,
            lambda c: c.created_at == Fit.created_at,
            lambda c: c.id < Fit.id,
            order=lambda c: [c.id.desc()],
        ),
        _seek(Fit.tenant, Fit.instrument, lambda c: c.created_at < Fit.created_at, order=_newest_first),
    )


@contextmanager
def _index_seeks(session: so.Session) -> Iterator[None]:
    """Inside, PostgreSQL plans each correlated "newest calibration before" subquery as the seek on
    ix_fits_tenant_instrument it is: the one plan that needs no sort. Right after a bulk load its
    statistics still describe a nearly empty table, every plan looks equally cheap, and it picked
    ix_fits_status_tenant_created with a sort, reading every fit of the tenant once per fit asked
    about: 260 s for a 10,000-fit batch against 0.3 s. SET LOCAL lasts until the block's end."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(sa.text("SET LOCAL enable_sort = off"))
        session.execute(sa.text("SET LOCAL enable_seqscan = off"))
    try:
        yield
    finally:
        if postgres:
            session.execute(sa.text("SET LOCAL enable_sort TO DEFAULT"))
            session.execute(sa.text("SET LOCAL enable_seqscan TO DEFAULT"))


def current_of(session: so.Session, tenant: str, names: Sequence[str], at: dt.datetime | None = None) -> dict[str, Fit]:
    """Each named instrument's calibration current at `at` (default: now): the newest submitted
    by then. Instruments without one (unknown, another tenant's, none succeeded yet) are left out."""
    conditions = [] if at is None else [lambda cal: cal.created_at <= at]
    found: dict[str, Fit] = {}
    newest = _seek(Instrument.tenant, Instrument.id, *conditions, order=_newest_first)
    for start in range(0, len(names), _PER_QUERY):
        ids = sa.select(newest).where(Instrument.tenant == tenant, Instrument.id.in_(names[start : start + _PER_QUERY]))
        with _index_seeks(session):
            current = session.scalars(sa.select(Fit).where(Fit.id.in_(ids))).all()
        found.update({fit.instrument: fit for fit in current if fit.instrument})
    return found


def _rows(session: so.Session, ids: Sequence[str]) -> list[sa.Row[Any]]:
    """These fits as rows of CALIBRATION_COLUMNS."""
    found: list[sa.Row[Any]] = []
    for among in _among(session, Fit.id, ids):
        found += session.execute(sa.select(*CALIBRATION_COLUMNS).where(among))
    return found


def _among(session: so.Session, column: so.InstrumentedAttribute[str], ids: Sequence[str]) -> Iterator[Any]:
    """Conditions `column` is one of `ids`: on PostgreSQL one, an array (a thousand bound values cost
    more than the rows they find), on SQLite one per thousand (its limit on bound values)."""
    if session.get_bind().dialect.name == "postgresql":
        yield column == sa.any_(sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.String)))
        return
    for start in range(0, len(ids), _PER_QUERY):
        yield column.in_(ids[start : start + _PER_QUERY])


def _lock_instruments(session: so.Session, fit_ids: Sequence[str]) -> None:
    """On PostgreSQL, hold the rows of the instruments these calibrations name until the transaction
    ends, in one statement and one order: two workers finishing fits of one instrument at once would
    each pair its calibrations without seeing the other's (READ COMMITTED), and one verdict would be
    made against the wrong calibration. SQLite needs nothing: a writing transaction holds the
    database's one write lock from BEGIN."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for among in _among(session, Fit.id, fit_ids):
        session.execute(
            sa.select(Instrument.id)
            .join(Fit, sa.and_(Fit.tenant == Instrument.tenant, Fit.instrument == Instrument.id))
            .where(among, Fit.status == SUCCEEDED)
            .order_by(Instrument.tenant, Instrument.id)
            .with_for_update(of=Instrument)
        ).all()


def record_drifts(session: so.Session, fit_ids: Sequence[str]) -> int:
    """Store the drift verdict of each of these fits that is a calibration now (in the transaction
    that made it one), and rewrite the verdict of the calibration right after each: a fit submitted
    earlier than calibrations already stored becomes their "before" when it succeeds later. How many
    verdicts were written."""
    if not fit_ids:
        return 0
    _lock_instruments(session, fit_ids)
    # Each fit's figures and the calibrations right before and after it (correlated index seeks; a
    # range from the earliest to the latest would read the whole batch for each of its chunks).
    new: list[sa.Row[Any]] = []
    for among in _among(session, Fit.id, fit_ids):
        with _index_seeks(session):
            new += session.execute(
                sa.select(
                    *CALIBRATION_COLUMNS,
                    _adjacent(later=False).label("before"),
                    _adjacent(later=True).label("after"),
                ).where(among, Fit.instrument.is_not(None), Fit.status == SUCCEEDED)
            )
    fresh = {row.id: row for row in new}
    # A fit's next calibration, when it is not one of these fits, has this fit right before it now:
    # nothing lies between a fit and the calibration right after it.
    pairs: list[tuple[str, str]] = [(row.before, row.id) for row in new if row.before]
    pairs += [(row.id, row.after) for row in new if row.after and row.after not in fresh]
    others = sorted({fit_id for pair in pairs for fit_id in pair} - fresh.keys())
    known: dict[str, sa.Row[Any]] = fresh | {row.id: row for row in _rows(session, others)}
    read: dict[str, Calibration] = {}

    def of(row: sa.Row[Any]) -> Calibration:
        found = read.get(row.id)
        if found is None:
            found = read[row.id] = Calibration.of(row)
        return found

    # flagged is left to the reader's threshold: 0 here only fills the dataclass.
    limits = _limits(session, {known[fit_id].instrument for _, fit_id in pairs})
    judged = {fit_id for _, fit_id in pairs if (known[fit_id].tenant, known[fit_id].instrument) in limits}
    # Readings are read only for what needs them, once: a decision (its instrument has limits), or the
    # drift of any pair but two lines (from the new fit's training points; two lines use its summary).
    drifting = {fit_id for previous, fit_id in pairs if needs_readings(of(known[previous]), of(known[fit_id]))}
    readings = _readings(session, sorted(judged | drifting))
    verdicts = []
    for previous, fit_id in pairs:
        row, before = known[fit_id], of(known[previous])
        points = readings.get(fit_id)
        training = points.training(row.validation) if points is not None and fit_id in drifting else None
        decision = _decision(before, row, points, limits[(row.tenant, row.instrument)]) if fit_id in judged else None
        verdicts.append(verdict_row(fit_id, previous, drift(before, of(row), 0.0, training), decision))
    if verdicts:
        # One statement, executed for many rows (compiled once: VALUES with 1,000 rows is not).
        statement = upsert_insert(session)(DriftVerdict)
        upsert = statement.on_conflict_do_update(
            index_elements=[DriftVerdict.fit_id], set_={name: statement.excluded[name] for name in _VERDICT_FIGURES}
        )
        session.execute(upsert, verdicts)
        deliveries.enqueue_verdicts(
            session, [row["fit_id"] for row in verdicts if row["verdict"] in deliveries.ALARMING]
        )
    return len(verdicts)


@dataclasses.dataclass(frozen=True)
class _Readings:
    t_u: np.ndarray
    t_c: np.ndarray
    u_t_c: np.ndarray | None

    def training(self, validation: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        held = held_out_indices(validation)
        return (split(self.t_u, held)[0], split(self.t_c, held)[0]) if held else (self.t_u, self.t_c)


def _readings(session: so.Session, fit_ids: Sequence[str]) -> dict[str, _Readings]:
    """These fits' readings and stated u(t_c), a thousand a query."""
    found: dict[str, _Readings] = {}
    for among in _among(session, Fit.id, fit_ids):
        for row in session.execute(sa.select(Fit.id, Fit.t_u, Fit.t_c, Fit.u_t_c).where(among)):
            stated = unpack_f64(row.u_t_c) if row.u_t_c is not None else None
            found[row.id] = _Readings(unpack_f64(row.t_u), unpack_f64(row.t_c), stated)
    return found


_VERDICT_FIGURES = ("previous_id", "chi2", "p_value", "as_found_rms", "as_left_rms", "decision", "verdict")
_Limits = tuple[float, float, Rule, float]


def _limits(session: so.Session, names: Iterable[str]) -> dict[tuple[str, str], _Limits]:
    """The limits and rule of these instruments that have them, by (tenant, name): a thousand names a
    query, so a batch of 10,000 instruments without limits costs ten indexed reads, never one a fit."""
    found: dict[tuple[str, str], _Limits] = {}
    for among in _among(session, Instrument.id, sorted(names)):
        for instrument in session.scalars(sa.select(Instrument).where(among, Instrument.limit_lower.is_not(None))):
            rule = instrument.conformity()
            if rule is not None:
                found[(instrument.tenant, instrument.id)] = rule
    return found


def _decision(before: Calibration, row: sa.Row[Any], points: _Readings | None, limits: _Limits) -> dict[str, Any]:
    """The conformity decision of a new calibration: the one before it as found at its points
    (shared/domain/conformity.decide), u(t_c) the new fit's stated ones, or where none were stated its
    residual SD (0 where it has none)."""
    assert points is not None, "a judged calibration's readings are read"
    lower, upper, rule, k = limits
    u_t_c = points.u_t_c if points.u_t_c is not None else np.full(len(points.t_c), row.residual_sd or 0.0)
    return decide(points.t_u, points.t_c, u_t_c, *before.read(points.t_u), (lower, upper), rule, k)


_FIGURE_COLUMNS = (DriftVerdict.chi2, DriftVerdict.p_value, DriftVerdict.as_found_rms, DriftVerdict.as_left_rms)


def stored_drift_of(session: so.Session, fit_ids: Sequence[str], threshold: float) -> dict[str, StoredDrift]:
    """The stored verdicts of these fits (those with a calibration before them), by fit id, flagged
    against `threshold`: O(fits asked), never a pairing."""
    found: dict[str, StoredDrift] = {}
    for among in _among(session, DriftVerdict.fit_id, fit_ids):
        # Plain rows, not ORM objects: a batch's fits CSV reads a verdict for each of its fits.
        for row in session.execute(
            sa.select(DriftVerdict.fit_id, DriftVerdict.previous_id, DriftVerdict.decision, *_FIGURE_COLUMNS).where(
                among
            )
        ):
            found[row.fit_id] = StoredDrift(
                previous_id=row.previous_id,
                drift=Drift(
                    chi2=row.chi2,
                    p_value=row.p_value,
                    flagged=row.p_value is not None and row.p_value < threshold,
                    as_found_rms=row.as_found_rms,
                    as_left_rms=row.as_left_rms,
                ),
                decision=row.decision,
            )
    return found


@dataclasses.dataclass(frozen=True)
class StoredDrift:
    previous_id: str
    drift: Drift
    decision: dict[str, Any] | None = None


def drift_of(session: so.Session, fits: Sequence[Calibrated], threshold: float) -> dict[str, Drift]:
    """The drift verdict of each succeeded fit naming an instrument that has a calibration before
    it, by fit id (a batch's fits CSV)."""
    stored = stored_drift_of(session, [fit.id for fit in fits if fit.instrument and fit.status == SUCCEEDED], threshold)
    return {fit_id: found.drift for fit_id, found in stored.items()}


def _flagged_in(batch_id: str, threshold: float) -> sa.ColumnElement[bool]:
    return sa.and_(Fit.batch_id == batch_id, Fit.status == SUCCEEDED, DriftVerdict.p_value < threshold)


def drifted_count(session: so.Session, batch_id: str, threshold: float) -> int:
    """How many of the batch's calibrations drifted from the one before (its body's `drifted`):
    one indexed join over its stored verdicts."""
    flagged = sa.select(sa.func.count()).select_from(Fit).join(DriftVerdict, DriftVerdict.fit_id == Fit.id)
    return int(session.scalar(flagged.where(_flagged_in(batch_id, threshold))) or 0)


def drifted_instruments(session: so.Session, batch_id: str, threshold: float) -> list[str]:
    """The instruments with a calibration in this batch that drifted from the one before, each once
    (sorted; its dashboard page names them)."""
    return list(
        session.scalars(
            sa.select(Fit.instrument)
            .join(DriftVerdict, DriftVerdict.fit_id == Fit.id)
            .where(_flagged_in(batch_id, threshold))
            .distinct()
            .order_by(Fit.instrument)
        )
    )


@dataclasses.dataclass(frozen=True)
class Standing:
    """What an instrument's summary needs of its history: how many calibrations, the current one
    (a row of CALIBRATION_COLUMNS) and the as-found trend, (calibrated at, as-found RMS) of each
    calibration whose stored verdict has one: two columns a calibration, never its figures."""

    calibrations: int
    current: sa.Row[Any] | None
    as_found: list[tuple[dt.datetime, float]]


def standing_of(newest_first: Sequence[sa.Row[Any]], verdicts: dict[str, StoredDrift]) -> Standing:
    """The standing of an instrument whose whole history (newest first) and verdicts are read."""
    as_found = [
        (row.created_at, found.drift.as_found_rms)
        for row in newest_first
        if (found := verdicts.get(row.id)) is not None and found.drift.as_found_rms is not None
    ]
    return Standing(len(newest_first), newest_first[0] if newest_first else None, as_found)


def standings(session: so.Session, tenant: str, names: Sequence[str]) -> dict[str, Standing]:
    """Each named instrument's standing (every name present, perhaps with no calibration)."""
    counts: dict[str, int] = dict.fromkeys(names, 0)
    newest: dict[str, tuple[dt.datetime, str]] = {}
    trends: dict[str, list[tuple[dt.datetime, float]]] = {name: [] for name in names}
    for start in range(0, len(names), _PER_QUERY):
        rows = session.execute(
            sa.select(Fit.instrument, Fit.created_at, Fit.id, DriftVerdict.as_found_rms)
            .outerjoin(DriftVerdict, DriftVerdict.fit_id == Fit.id)
            .where(Fit.tenant == tenant, Fit.instrument.in_(names[start : start + _PER_QUERY]), Fit.status == SUCCEEDED)
        )
        for instrument, created_at, fit_id, as_found in rows:
            name = cast("str", instrument)  # the query asks for these names only
            counts[name] += 1
            if name not in newest or (created_at, fit_id) > newest[name]:
                newest[name] = (created_at, fit_id)
            if as_found is not None:
                trends[name].append((created_at, as_found))
    current = {row.instrument: row for row in _rows(session, sorted(fit_id for _, fit_id in newest.values()))}
    return {name: Standing(counts[name], current.get(name), trends[name]) for name in names}


def history_page(session: so.Session, tenant: str, name: str, limit: int, after: str | None) -> list[sa.Row[Any]]:
    """Up to `limit` of an instrument's calibrations, newest first, from the one after the
    calibration `after` (a fit id; from the newest when it is none of this instrument's)."""
    calibration = sa.and_(Fit.tenant == tenant, Fit.instrument == name, Fit.status == SUCCEEDED)
    page = sa.select(*CALIBRATION_COLUMNS).where(calibration)
    if after is not None:
        cursor = session.execute(sa.select(Fit.created_at, Fit.id).where(calibration, Fit.id == after)).first()
        if cursor is not None:
            page = page.where(sa.tuple_(Fit.created_at, Fit.id) < sa.tuple_(cursor.created_at, cursor.id))
    return list(session.execute(page.order_by(Fit.created_at.desc(), Fit.id.desc()).limit(limit)))
