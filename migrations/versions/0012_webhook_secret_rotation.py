"""webhook secret rotation: the previous secret and the end of its overlap; room for sealed secrets

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.alter_column("webhook_secret", type_=sa.String(length=512), existing_type=sa.String(length=128))
        batch.add_column(sa.Column("webhook_secret_previous", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("webhook_secret_previous_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Sealed secrets (about 170 characters) do not fit the old width: on PostgreSQL this downgrade
    # fails while any is stored; clear or unseal them first (their tenants get new ones on first use).
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("webhook_secret_previous_until")
        batch.drop_column("webhook_secret_previous")
        batch.alter_column("webhook_secret", type_=sa.String(length=128), existing_type=sa.String(length=512))
