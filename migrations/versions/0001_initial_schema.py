"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_batches_tenant_idempotency_key"),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index("ix_batches_tenant_created", ["tenant", "created_at"], unique=False)

    op.create_table(
        "fits",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=True),
        sa.Column("chunk_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("n_points", sa.Integer(), nullable=False),
        sa.Column("learning_rate", sa.Float(), nullable=False),
        sa.Column("init_w", sa.Float(), nullable=False),
        sa.Column("init_b", sa.Float(), nullable=False),
        sa.Column("input_scale", sa.Float(), nullable=False),
        sa.Column("optimizer", sa.String(length=16), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("t_u", sa.LargeBinary(), nullable=False),
        sa.Column("t_c", sa.LargeBinary(), nullable=False),
        sa.Column("w", sa.Float(), nullable=True),
        sa.Column("b", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("diverged_at_epoch", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.String(length=64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_fits_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fits")),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_fits_tenant_idempotency_key"),
    )
    with op.batch_alter_table("fits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fits_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_fits_chunk_id"), ["chunk_id"], unique=False)
        batch_op.create_index("ix_fits_status_dispatched", ["status", "dispatched_at"], unique=False)
        batch_op.create_index("ix_fits_tenant_created", ["tenant", "created_at", "id"], unique=False)

    op.create_table(
        "loss_blocks",
        sa.Column("fit_id", sa.String(length=36), nullable=False),
        sa.Column("first_epoch", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("loss", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["fit_id"], ["fits.id"], name=op.f("fk_loss_blocks_fit_id_fits"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("fit_id", "first_epoch", name=op.f("pk_loss_blocks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Packed float32 losses do not compress: skip TOAST's compression attempt.
        op.execute("ALTER TABLE loss_blocks ALTER COLUMN loss SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("loss_blocks")
    with op.batch_alter_table("fits", schema=None) as batch_op:
        batch_op.drop_index("ix_fits_tenant_created")
        batch_op.drop_index("ix_fits_status_dispatched")
        batch_op.drop_index(batch_op.f("ix_fits_chunk_id"))
        batch_op.drop_index(batch_op.f("ix_fits_batch_id"))

    op.drop_table("fits")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_tenant_created")

    op.drop_table("batches")
