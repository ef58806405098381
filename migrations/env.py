"""Alembic environment: metadata from shared.store.models, URL from the CALIB_* settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from shared.runtime.settings import get_settings
from shared.store.db import make_engine
from shared.store.models import Base

config = context.config
url = config.attributes.get("url") or get_settings().database
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _foreign_keys(connection, on=False)
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                _no_broken_references(connection)
        if sqlite:
            _foreign_keys(connection, on=True)
    engine.dispose()


def _foreign_keys(connection: Connection, on: bool) -> None:
    """SQLite's procedure for changing a table: batch mode rebuilds it (copy, drop, rename), and
    with foreign keys enforced, dropping `fits` would delete every row that references it (loss
    blocks, drift verdicts: ON DELETE CASCADE). The pragma is a no-op inside a transaction, so it
    goes to the driver's connection, outside the one SQLAlchemy begins."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def _no_broken_references(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows whose references are broken: {broken[:5]}")


if context.is_offline_mode():
    run_offline()
else:
    run_online()
