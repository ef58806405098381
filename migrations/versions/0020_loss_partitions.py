"""loss blocks by day: on PostgreSQL `loss_blocks` becomes a table partitioned by `written_on`, the
UTC day a block was written (shared/store/loss_partitions.py), so retention drops a day's partition
instead of deleting rows; SQLite gains the column only

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05

The blocks already written stay where they are: the old table, renamed `loss_blocks_before_<day>`,
is attached as the partition of every day before this migration (its rows' written_on 1970-01-01;
an empty one is dropped instead);
today's and the next seven days' partitions are created here, later ones by the reconciler, and a
default partition takes a block of any day that has none. The primary key gains written_on (a
partitioned table's unique keys must hold its partition key).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_DAYS_AHEAD = 7


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        # SQLite cannot add a column whose default is not a constant without rebuilding the table.
        with op.batch_alter_table("loss_blocks", recreate="always") as batch:
            batch.add_column(
                sa.Column("written_on", sa.Date(), server_default=sa.text("(CURRENT_DATE)"), nullable=False)
            )
        return
    today = bind.scalar(sa.text("SELECT (now() AT TIME ZONE 'utc')::date"))
    assert isinstance(today, dt.date)
    before = f"loss_blocks_before_{today:%Y%m%d}"
    kept = bool(bind.scalar(sa.text("SELECT EXISTS (SELECT 1 FROM loss_blocks)")))
    statements = [
        f"ALTER TABLE loss_blocks RENAME TO {before}",
        f"ALTER TABLE {before} DROP CONSTRAINT fk_loss_blocks_fit_id_fits",
        f"ALTER TABLE {before} DROP CONSTRAINT pk_loss_blocks",
        # A constant default is stored once, not written into every row.
        f"ALTER TABLE {before} ADD COLUMN written_on date NOT NULL DEFAULT DATE '1970-01-01'",
        f"ALTER TABLE {before} ALTER COLUMN written_on DROP DEFAULT",
        """CREATE TABLE loss_blocks (
            fit_id varchar(36) NOT NULL,
            first_epoch integer NOT NULL,
            count integer NOT NULL,
            loss bytea NOT NULL,
            val_loss bytea,
            written_on date NOT NULL DEFAULT ((now() AT TIME ZONE 'utc')::date),
            CONSTRAINT pk_loss_blocks PRIMARY KEY (fit_id, first_epoch, written_on),
            CONSTRAINT fk_loss_blocks_fit_id_fits FOREIGN KEY (fit_id) REFERENCES fits (id) ON DELETE CASCADE
        ) PARTITION BY RANGE (written_on)""",
        "ALTER TABLE loss_blocks ALTER COLUMN loss SET STORAGE EXTERNAL",
        # The blocks written before: one partition of every day up to today (none kept if there were none).
        f"ALTER TABLE loss_blocks ATTACH PARTITION {before} FOR VALUES FROM (MINVALUE) TO ('{today.isoformat()}')"
        if kept
        else f"DROP TABLE {before}",
        "CREATE TABLE loss_blocks_default PARTITION OF loss_blocks DEFAULT",
        "ALTER TABLE loss_blocks_default ALTER COLUMN loss SET STORAGE EXTERNAL",
    ]
    for statement in statements:
        op.execute(statement)
    for offset in range(_DAYS_AHEAD + 1):
        day = today + dt.timedelta(days=offset)
        name = f"loss_blocks_p{day:%Y%m%d}"
        op.execute(
            f"CREATE TABLE {name} PARTITION OF loss_blocks "
            f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + dt.timedelta(days=1)).isoformat()}')"
        )
        op.execute(f"ALTER TABLE {name} ALTER COLUMN loss SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("loss_blocks", recreate="always") as batch:
            batch.drop_column("written_on")
        return
    for statement in (
        """CREATE TABLE loss_blocks_flat (
            fit_id varchar(36) NOT NULL,
            first_epoch integer NOT NULL,
            count integer NOT NULL,
            loss bytea NOT NULL,
            val_loss bytea
        )""",
        "ALTER TABLE loss_blocks_flat ALTER COLUMN loss SET STORAGE EXTERNAL",
        "INSERT INTO loss_blocks_flat SELECT fit_id, first_epoch, count, loss, val_loss FROM loss_blocks",
        "DROP TABLE loss_blocks",
        "ALTER TABLE loss_blocks_flat RENAME TO loss_blocks",
        "ALTER TABLE loss_blocks ADD CONSTRAINT pk_loss_blocks PRIMARY KEY (fit_id, first_epoch)",
        "ALTER TABLE loss_blocks ADD CONSTRAINT fk_loss_blocks_fit_id_fits "
        "FOREIGN KEY (fit_id) REFERENCES fits (id) ON DELETE CASCADE",
    ):
        op.execute(statement)
