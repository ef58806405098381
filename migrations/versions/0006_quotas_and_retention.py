"""quotas and retention: tenants (quotas, stored loss bytes) and fits.losses_pruned

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("max_in_flight_fit_epochs", sa.BigInteger(), nullable=True),
        sa.Column("max_stored_loss_bytes", sa.BigInteger(), nullable=True),
        sa.Column("stored_loss_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tenants")),
    )
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("losses_pruned", sa.Boolean(), server_default=sa.false(), nullable=False))
    # The running count starts from what is stored now.
    op.execute(
        "INSERT INTO tenants (name, stored_loss_bytes) "
        "SELECT f.tenant, SUM(LENGTH(l.loss) + COALESCE(LENGTH(l.val_loss), 0)) "
        "FROM loss_blocks l JOIN fits f ON f.id = l.fit_id GROUP BY f.tenant"
    )


def downgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("losses_pruned")
    op.drop_table("tenants")
