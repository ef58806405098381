"""the parameters of a batch's models on the batch: batches.parameter_names (a JSON list), so that a
batch's results file names its parameter columns without a pass over the batch's fits

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06

Nullable, and left null on every existing batch: the API reads such a batch's names from its fits'
models, as it did for every batch before this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("parameter_names", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("parameter_names")
