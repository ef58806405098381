"""Alembic: one head, `upgrade head` on an empty database gives exactly the models' schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from shared.db import make_engine
from shared.migrate import alembic_config, is_at_head
from shared.models import Base


def test_exactly_one_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1


def _check(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "head")
    assert is_at_head(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert diff == [], diff
    assert {"fits", "batches", "loss_blocks", "alembic_version"} <= tables
    # The downgrade is real: back to nothing, and up again.
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    assert is_at_head(url)


def test_upgrade_head_on_empty_sqlite_matches_models(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'empty.db'}")


@pytest.mark.postgres
def test_upgrade_head_on_empty_postgres_matches_models(fresh_postgres: str) -> None:
    _check(fresh_postgres)
