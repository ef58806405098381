"""Instruments and their calibrations in the database: which fits are an instrument's calibrations,
which one was current at a time, and which one came before a given fit.

A calibration is a succeeded fit naming the instrument; they are ordered by (created_at, id), the
time its readings were submitted, so a history never depends on which worker finished first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import sqlalchemy as sa
import sqlalchemy.orm as so

from shared.db import upsert_insert
from shared.drift import Calibration, Drift, drift
from shared.models import SUCCEEDED, Fit, Instrument, utcnow

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
)
Calibrated = Fit | sa.Row[Any]

# Names per IN (...) list: SQLite's limit on bound parameters is far above, and so is PostgreSQL's.
_PER_QUERY = 1000


def register(session: so.Session, tenant: str, names: Iterable[str | None]) -> None:
    """Create the instruments these fits name, if new (in the submission's transaction)."""
    wanted = sorted({name for name in names if name})
    insert = upsert_insert(session)
    now = utcnow()
    for start in range(0, len(wanted), _PER_QUERY):
        rows = [{"tenant": tenant, "id": name, "created_at": now} for name in wanted[start : start + _PER_QUERY]]
        session.execute(insert(Instrument).values(rows).on_conflict_do_nothing())


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


def calibration_rows_of(session: so.Session, tenant: str, name: str) -> list[sa.Row[Any]]:
    """An instrument's calibrations, newest first, as rows (not ORM objects: years of nights are
    thousands of them, and only their figures are needed)."""
    return cast(
        "list[sa.Row[Any]]",
        session.execute(
            sa.select(*CALIBRATION_COLUMNS)
            .where(Fit.tenant == tenant, Fit.instrument == name, Fit.status == SUCCEEDED)
            .order_by(Fit.created_at.desc(), Fit.id.desc())
        ).all(),
    )


def _newest(
    tenant: so.QueryableAttribute[str], instrument: so.QueryableAttribute[Any], *conditions: Callable[[Any], Any]
) -> sa.ScalarSelect[str]:
    """The id of an instrument's newest calibration meeting `conditions` (each given the alias
    the calibrations are read through), as a scalar subquery: an index seek per instrument."""
    other = so.aliased(Fit, name="calibration")
    return (
        sa.select(other.id)
        .where(other.tenant == tenant, other.instrument == instrument, other.status == SUCCEEDED)
        .where(*(condition(other) for condition in conditions))
        .order_by(other.created_at.desc(), other.id.desc())
        .limit(1)
        .scalar_subquery()
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
    newest = _newest(Instrument.tenant, Instrument.id, *conditions)
    for start in range(0, len(names), _PER_QUERY):
        ids = sa.select(newest).where(Instrument.tenant == tenant, Instrument.id.in_(names[start : start + _PER_QUERY]))
        with _index_seeks(session):
            current = session.scalars(sa.select(Fit).where(Fit.id.in_(ids))).all()
        found.update({fit.instrument: fit for fit in current if fit.instrument})
    return found


# An instrument asked about for this many fits at once has its calibrations between them read in one
# range and paired in a pass (a batch of 20,000 fits of one instrument: one seek and one range,
# not 20,000 seeks); fewer, each fit's is found by its own index seek, a thousand per query.
_WALKED = 8


def previous_of(session: so.Session, fits: Sequence[Calibrated]) -> dict[str, sa.Row[Any]]:
    """For each fit naming an instrument, the calibration before it (a row of CALIBRATION_COLUMNS),
    by the fit's id (absent: none before it)."""
    groups: dict[tuple[str, str], list[Calibrated]] = {}
    for fit in fits:
        if fit.instrument:
            groups.setdefault((fit.tenant, fit.instrument), []).append(fit)
    found: dict[str, sa.Row[Any]] = {}
    sought: list[Calibrated] = []
    for (tenant, instrument), group in groups.items():
        if len(group) >= _WALKED:
            found.update(_walked(session, tenant, instrument, group))
        else:
            sought += group
    return found | _sought(session, sought)


def _walked(session: so.Session, tenant: str, instrument: str, group: list[Calibrated]) -> dict[str, sa.Row[Any]]:
    """The calibration before each of one instrument's fits: the newest before the earliest of them
    (one seek), then every calibration from the earliest to the latest (one range), in order."""
    earliest = min(fit.created_at for fit in group)
    latest = max(fit.created_at for fit in group)
    calibration = sa.and_(Fit.tenant == tenant, Fit.instrument == instrument, Fit.status == SUCCEEDED)
    with _index_seeks(session):
        # Rows of CALIBRATION_COLUMNS, typed as the module's other rows are.
        before = cast(
            "sa.Row[Any] | None",
            session.execute(
                sa.select(*CALIBRATION_COLUMNS)
                .where(calibration, Fit.created_at < earliest)
                .order_by(Fit.created_at.desc(), Fit.id.desc())
                .limit(1)
            ).first(),
        )
        between = cast(
            "list[sa.Row[Any]]",
            session.execute(
                sa.select(*CALIBRATION_COLUMNS).where(calibration, Fit.created_at >= earliest, Fit.created_at <= latest)
            ).all(),
        )
    asked = {fit.id for fit in group}
    rows: dict[str, sa.Row[Any]] = {row.id: row for row in between}  # the calibrations of the span
    walk = [*rows.values(), *(fit for fit in group if fit.id not in rows)]
    found: dict[str, sa.Row[Any]] = {}
    previous = before
    for item in sorted(walk, key=lambda item: (item.created_at, item.id)):
        if item.id in asked and previous is not None:
            found[item.id] = previous
        if item.id in rows:  # a calibration: the one before those after it
            previous = rows[item.id]
    return found


def _sought(session: so.Session, fits: Sequence[Calibrated]) -> dict[str, sa.Row[Any]]:
    """Each fit's previous calibration by a correlated index seek, a thousand fits per query."""
    ids = [fit.id for fit in fits if fit.instrument]
    before = _newest(
        Fit.tenant, Fit.instrument, lambda cal: sa.tuple_(cal.created_at, cal.id) < sa.tuple_(Fit.created_at, Fit.id)
    )
    pairs: dict[str, str] = {}
    for start in range(0, len(ids), _PER_QUERY):
        with _index_seeks(session):
            rows = session.execute(sa.select(Fit.id, before).where(Fit.id.in_(ids[start : start + _PER_QUERY]))).all()
        pairs.update({fit_id: previous for fit_id, previous in rows if previous})
    wanted = sorted(set(pairs.values()))
    loaded: dict[str, sa.Row[Any]] = {}
    for start in range(0, len(wanted), _PER_QUERY):
        chunk = wanted[start : start + _PER_QUERY]
        loaded.update(
            {row.id: row for row in session.execute(sa.select(*CALIBRATION_COLUMNS).where(Fit.id.in_(chunk)))}
        )
    return {fit_id: loaded[previous] for fit_id, previous in pairs.items()}


def succeeded_in_batch(session: so.Session, batch_id: str) -> list[sa.Row[Any]]:
    """The batch's succeeded fits that name an instrument, as calibration rows."""
    return list(
        session.execute(
            sa.select(*CALIBRATION_COLUMNS).where(
                Fit.batch_id == batch_id, Fit.status == SUCCEEDED, Fit.instrument.is_not(None)
            )
        )
    )


def drift_of(session: so.Session, fits: Sequence[Calibrated], threshold: float) -> dict[str, Drift]:
    """The drift verdict of each succeeded fit naming an instrument that has a calibration before
    it, by fit id (a batch's fits CSV and its `drifted` count)."""
    calibrated = [fit for fit in fits if fit.instrument and fit.status == SUCCEEDED]
    before = previous_of(session, calibrated)
    # In a batch of one instrument each calibration is also the one before the next: read it once.
    read: dict[str, Calibration] = {}

    def of(row: Calibrated) -> Calibration:
        found = read.get(row.id)
        if found is None:
            found = read[row.id] = Calibration.of(row)
        return found

    return {fit.id: drift(of(before[fit.id]), of(fit), threshold) for fit in calibrated if fit.id in before}


def drifted_instruments(session: so.Session, batch_id: str, threshold: float) -> list[str]:
    """The instruments whose calibration in this batch drifted from the one before (sorted)."""
    succeeded = succeeded_in_batch(session, batch_id)
    found = drift_of(session, succeeded, threshold)
    return sorted(fit.instrument for fit in succeeded if fit.id in found and found[fit.id].flagged)
