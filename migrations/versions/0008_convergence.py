"""convergence: the tolerance and epochs "auto" a fit asked for, and its verdict

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = [
    ("t_c_var", sa.Float(), None),
    ("convergence_tolerance", sa.Float(), "0.01"),
    ("epochs_auto", sa.Boolean(), sa.false()),
    ("converged", sa.Boolean(), None),
    ("gap_se_w", sa.Float(), None),
    ("gap_se_b", sa.Float(), None),
    ("excess_loss", sa.Float(), None),
    ("epochs_needed", sa.Integer(), None),
]


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        for name, kind, default in COLUMNS:
            batch.add_column(sa.Column(name, kind, server_default=default, nullable=default is None))


def downgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        for name, _, _ in reversed(COLUMNS):
            batch.drop_column(name)
