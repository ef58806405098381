"""validation split and early stopping: per-epoch validation losses, stop reason

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("validation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("early_stopping", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("val_loss", sa.Float(), nullable=True))
        batch.add_column(sa.Column("stop_reason", sa.String(length=16), nullable=True))
    with op.batch_alter_table("loss_blocks") as batch:
        batch.add_column(sa.Column("val_loss", sa.LargeBinary(), nullable=True))
    # Fits that succeeded before this revision ran all their epochs.
    op.execute("UPDATE fits SET stop_reason = 'completed' WHERE status = 'succeeded'")


def downgrade() -> None:
    with op.batch_alter_table("loss_blocks") as batch:
        batch.drop_column("val_loss")
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("stop_reason")
        batch.drop_column("val_loss")
        batch.drop_column("early_stopping")
        batch.drop_column("validation")
