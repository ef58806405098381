"""stated uncertainties of the readings: fits.u_t_u (float64 blob, one per point, as t_u), for the
generalized distance regression of a line (ISO/TS 28037 clause 7)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05

Nullable: every existing row states none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("u_t_u", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("u_t_u")
