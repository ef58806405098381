"""stated uncertainties of the reference values: fits.u_t_c (float64 blob, one per point, as t_c) and
fits.chi2 ({"chi2_obs", "chi2_dof", "chi2_p", "consistent"}, the weighted fit's χ² test, computed at
submission)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05

Both nullable: a fit without stated uncertainties is ordinary least squares, as every existing row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("u_t_c", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("chi2", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("chi2")
        batch.drop_column("u_t_c")
