"""instruments: a fit may name its instrument; an instrument's tolerance

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("instrument", sa.String(length=200), nullable=True))
    # An instrument's calibrations, newest first, and the one before a given fit: index seeks.
    op.create_index("ix_fits_tenant_instrument", "fits", ["tenant", "instrument", "status", "created_at", "id"])
    op.create_table(
        "instruments",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "id", name=op.f("pk_instruments")),
    )


def downgrade() -> None:
    op.drop_table("instruments")
    op.drop_index("ix_fits_tenant_instrument", table_name="fits")
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("instrument")
