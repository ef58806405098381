"""drift verdicts stored: each calibration against the one before it, made once by the worker

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04

The calibrations already stored get theirs here, computed by shared.store.drift (the one formula; this
migration imports it rather than keeping a copy that could disagree with what the workers store).
"""

from __future__ import annotations

import itertools
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_COLUMNS = (
    "id tenant instrument status created_at w b input_scale input_shift se_w se_b cov_wb r2 n_points "
    "converged w_opt b_opt residual_sd t_u_mean t_u_sxx"
).split()
_PAGE = 1000


def upgrade() -> None:
    verdicts = op.create_table(
        "drift_verdicts",
        sa.Column("fit_id", sa.String(length=36), nullable=False),
        sa.Column("previous_id", sa.String(length=36), nullable=False),
        sa.Column("chi2", sa.Float(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("as_found_rms", sa.Float(), nullable=True),
        sa.Column("as_left_rms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["fit_id"], ["fits.id"], name=op.f("fk_drift_verdicts_fit_id_fits"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("fit_id", name=op.f("pk_drift_verdicts")),
    )
    assert verdicts is not None
    _backfill(verdicts)


def _backfill(verdicts: sa.Table) -> None:
    from shared.store.drift import Calibration, drift, verdict_row

    fits = sa.table("fits", *(sa.column(name) for name in _COLUMNS), sa.column("validation", sa.JSON))
    conn = op.get_bind()
    # Streamed (no blobs are read, but a fleet's history is millions of rows).
    rows = conn.execute(
        sa.select(fits)
        .where(fits.c.status == "succeeded", fits.c.instrument.is_not(None))
        .order_by(fits.c.tenant, fits.c.instrument, fits.c.created_at, fits.c.id)
        .execution_options(yield_per=_PAGE)
    )
    page: list[dict[str, Any]] = []
    for before, after in itertools.pairwise(rows):
        if (before.tenant, before.instrument) != (after.tenant, after.instrument):
            continue
        row = verdict_row(after.id, before.id, drift(Calibration.of(before), Calibration.of(after), 0.0))
        # Only this revision's columns: the decision columns came with 0018.
        page.append({name: value for name, value in row.items() if name in verdicts.c})
        if len(page) == _PAGE:
            conn.execute(sa.insert(verdicts), page)
            page = []
    if page:
        conn.execute(sa.insert(verdicts), page)


def downgrade() -> None:
    op.drop_table("drift_verdicts")
