"""Schema migrations run from code, so `calib db upgrade` works from any directory; and the
check the API and the workers make before they start, so neither runs on an older schema."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from shared.runtime.settings import Settings
from shared.store.db import make_engine

log = logging.getLogger("calib.migrations")


class SchemaNotAtHead(RuntimeError):
    """The database's schema is not the one this code was written for."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["url"] = url
    return config


def upgrade(settings: Settings) -> None:
    if settings.embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.direct_database), "head")


def revisions(url: str) -> tuple[set[str], set[str]]:
    """(the database's current revisions, this code's head revisions)."""
    script = ScriptDirectory.from_config(alembic_config(url))
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    return current, set(script.get_heads())


def is_at_head(url: str) -> bool:
    current, heads = revisions(url)
    return current == heads


def require_head(settings: Settings, process: str) -> None:
    """Refuse to start on a schema that is not at the head. A database that does not answer is
    not refused here: the process starts, reports itself not ready, and retries (the schema is
    checked again when the process next starts)."""
    try:
        current, heads = revisions(settings.direct_database)
    except sa.exc.OperationalError as exc:
        log.warning("%s starts without checking the schema: the database does not answer (%s)", process, exc)
        return
    if current != heads:
        found = ", ".join(sorted(current)) or "an empty database"
        raise SchemaNotAtHead(
            f"the {process} needs the database schema at revision {', '.join(sorted(heads))}, and it is at "
            f"{found}: run `calib db upgrade` (with the same CALIB_DATABASE_URL) first"
        )
