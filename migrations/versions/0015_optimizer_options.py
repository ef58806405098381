"""optimizer options in one JSON column: gradient, delta, momentum, beta1, beta2, eps become
fits.optimizer_options, in the form shared/contract/optimizers.py declares (betas a pair, delta only with
gradient "finite_difference"), so a new optimizer or option needs no migration

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

Existing rows are converted by one UPDATE in SQL (json_build_object on PostgreSQL, json_object on
SQLite): a table of millions of fits is never read into Python. The downgrade reads the object back
into the columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_OLD = ("delta", "momentum", "beta1", "beta2", "eps")


def _conversion(dialect: str) -> str:
    """The UPDATE that fills optimizer_options from the old columns (the columns were resolved at
    submission: only delta can be missing, on a gd fit by finite differences from before 0003)."""
    build, array, empty = (
        ("json_build_object", "json_build_array", "'{}'::json")
        if dialect == "postgresql"
        else ("json_object", "json_array", "json_object()")
    )
    return f"""
        UPDATE fits SET optimizer_options = CASE
            WHEN optimizer = 'gd' AND gradient = 'finite_difference'
                THEN {build}('gradient', gradient, 'delta', COALESCE(delta, 0.1))
            WHEN optimizer = 'gd' THEN {build}('gradient', gradient)
            WHEN optimizer = 'momentum' THEN {build}('momentum', momentum)
            WHEN optimizer = 'adam' THEN {build}('betas', {array}(beta1, beta2), 'eps', eps)
            ELSE {empty}
        END
    """


def upgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("optimizer_options", sa.JSON(), nullable=True))
    op.execute(_conversion(op.get_bind().dialect.name))
    with op.batch_alter_table("fits") as batch:
        batch.alter_column("optimizer_options", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("gradient")
        for name in _OLD:
            batch.drop_column(name)


def _read_back(dialect: str) -> str:
    def field(name: str, index: int | None = None) -> str:
        if dialect == "postgresql":
            path = name if index is None else f"{name},{index}"
            return f"(optimizer_options #>> '{{{path}}}')"
        path = name if index is None else f"{name}[{index}]"
        return f"json_extract(optimizer_options, '$.{path}')"

    number = "double precision" if dialect == "postgresql" else "REAL"
    return f"""
        UPDATE fits SET
            gradient = COALESCE({field("gradient")}, 'analytic'),
            delta = CAST({field("delta")} AS {number}),
            momentum = CAST({field("momentum")} AS {number}),
            beta1 = CAST({field("betas", 0)} AS {number}),
            beta2 = CAST({field("betas", 1)} AS {number}),
            eps = CAST({field("eps")} AS {number})
    """


def downgrade() -> None:
    with op.batch_alter_table("fits") as batch:
        batch.add_column(sa.Column("gradient", sa.String(length=24), nullable=False, server_default="analytic"))
        for name in _OLD:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.execute(_read_back(op.get_bind().dialect.name))
    with op.batch_alter_table("fits") as batch:
        batch.drop_column("optimizer_options")
