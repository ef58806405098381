"""fit options: optimizer options, gradient modes, normalization; statistics of the data

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FLOATS = (
    "delta",
    "momentum",
    "beta1",
    "beta2",
    "eps",
    "lr_max",
    "condition_number",
    "w_opt",
    "b_opt",
    "se_w",
    "se_b",
    "cov_wb",
    "r2",
    "residual_sd",
    "t_u_mean",
    "t_u_sxx",
)


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        for name in FLOATS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
        batch.add_column(sa.Column("gradient", sa.String(length=24), nullable=False, server_default="analytic"))
        batch.add_column(sa.Column("input_shift", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("normalize", sa.String(length=16), nullable=False, server_default="scale"))
        # Fits stored before this revision have no warnings: an empty list, not null.
        batch.add_column(sa.Column("warnings", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("warnings")
        batch.drop_column("normalize")
        batch.drop_column("input_shift")
        batch.drop_column("gradient")
        for name in reversed(FLOATS):
            batch.drop_column(name)
