"""conformity decisions (ILAC G8, JCGM 106): an instrument's acceptable limits of error, its decision
rule and coverage factor; each drift verdict's decision on the previous calibration as found at the new
calibration's points ({"points", "verdict"}) and its verdict alone, for ?verdict= lists

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05

All nullable (the rule defaults to "simple" and k to 2 where limits are set): an instrument without
limits has no decisions, as every existing one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instruments") as batch:
        batch.add_column(sa.Column("limit_lower", sa.Float(), nullable=True))
        batch.add_column(sa.Column("limit_upper", sa.Float(), nullable=True))
        batch.add_column(sa.Column("decision_rule", sa.String(16), nullable=True))
        batch.add_column(sa.Column("coverage_factor", sa.Float(), nullable=True))
    with op.batch_alter_table("drift_verdicts") as batch:
        batch.add_column(sa.Column("decision", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("verdict", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drift_verdicts") as batch:
        batch.drop_column("verdict")
        batch.drop_column("decision")
    with op.batch_alter_table("instruments") as batch:
        for name in ("coverage_factor", "decision_rule", "limit_upper", "limit_lower"):
            batch.drop_column(name)
