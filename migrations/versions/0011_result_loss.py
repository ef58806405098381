"""the loss of a result: `loss` and `val_loss` become the losses at the returned line; the per-epoch
series' last values move to `last_epoch_loss` and `last_epoch_val_loss`

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

Stored results are converted: the old figures move to the new columns, and each succeeded fit's
losses at its line are computed from its stored points and parameters (float64, the same formula
as the worker's). A diverged fit returns no line, so its `loss` becomes null.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Succeeded fits converted per round trip: their points are loaded, so the page stays small.
_PAGE = 500

fits = sa.table(
    "fits",
    sa.column("id", sa.String),
    sa.column("status", sa.String),
    sa.column("t_u", sa.LargeBinary),
    sa.column("t_c", sa.LargeBinary),
    sa.column("w", sa.Float),
    sa.column("b", sa.Float),
    sa.column("input_scale", sa.Float),
    sa.column("input_shift", sa.Float),
    sa.column("validation", sa.JSON),
    sa.column("loss", sa.Float),
    sa.column("val_loss", sa.Float),
    sa.column("last_epoch_loss", sa.Float),
    sa.column("last_epoch_val_loss", sa.Float),
)


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("last_epoch_loss", sa.Float(), nullable=True))
        batch.add_column(sa.Column("last_epoch_val_loss", sa.Float(), nullable=True))
    op.execute(fits.update().values(last_epoch_loss=fits.c.loss, last_epoch_val_loss=fits.c.val_loss))
    op.execute(fits.update().where(fits.c.status == "diverged").values(loss=None, val_loss=None))
    _losses_at_the_line(op.get_bind())


def _losses_at_the_line(connection: sa.Connection) -> None:
    after = ""
    while True:
        rows = connection.execute(
            sa.select(
                fits.c.id,
                fits.c.t_u,
                fits.c.t_c,
                fits.c.w,
                fits.c.b,
                fits.c.input_scale,
                fits.c.input_shift,
                fits.c.validation,
            )
            .where(fits.c.status == "succeeded", fits.c.w.is_not(None), fits.c.id > after)
            .order_by(fits.c.id)
            .limit(_PAGE)
        ).all()
        if not rows:
            return
        updates = [_losses(row) for row in rows]
        connection.execute(
            fits.update()
            .where(fits.c.id == sa.bindparam("fit_id"))
            .values(loss=sa.bindparam("new_loss"), val_loss=sa.bindparam("new_val")),
            updates,
        )
        after = rows[-1].id


def _losses(row: sa.Row[tuple[object, ...]]) -> dict[str, object]:
    t_u = np.frombuffer(row.t_u, dtype="<f8")
    t_c = np.frombuffer(row.t_c, dtype="<f8")
    held = np.zeros(len(t_u), dtype=bool)
    indices = (row.validation or {}).get("indices") or []
    held[[int(i) for i in indices]] = True
    with np.errstate(all="ignore"):
        residual = row.w * (t_u - (row.input_shift or 0.0)) * row.input_scale + row.b - t_c
        squares = residual * residual
        loss = float(np.mean(squares[~held])) if (~held).any() else None
        val = float(np.mean(squares[held])) if held.any() else None
    return {
        "fit_id": row.id,
        "new_loss": loss if loss is not None and np.isfinite(loss) else None,
        "new_val": val if val is not None and np.isfinite(val) else None,
    }


def downgrade() -> None:
    op.execute(fits.update().values(loss=fits.c.last_epoch_loss, val_loss=fits.c.last_epoch_val_loss))
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("last_epoch_val_loss")
        batch.drop_column("last_epoch_loss")
