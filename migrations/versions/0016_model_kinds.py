"""model kinds beyond the line: fits.model (null: the book's line), fits.solution (the exact least
squares of a non-line model, computed at submission) and fits.parameters (its fitted parameters and
their gaps, written when it ends)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05

Three nullable JSON columns: every existing row is a line and keeps its line columns, so nothing is
converted. A model's parameter vector is a JSON array in its names' order, whatever its size, so a new
kind needs no migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_COLUMNS = ("model", "solution", "parameters")


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.JSON(), nullable=True))


def downgrade() -> None:
    # Fits of other kinds have no line to fall back to: they go with their kind.
    op.execute("DELETE FROM fits WHERE model IS NOT NULL")
    with op.batch_alter_table("fits") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
