"""Alembic: one head, `upgrade head` on an empty database gives exactly the models' schema."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from migrations.apply import SchemaNotAtHead, alembic_config, is_at_head
from services.api import create_app
from services.cli import processes
from shared.db import make_engine
from shared.models import Base
from shared.settings import Settings


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


def test_the_api_refuses_a_schema_behind_the_head(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.database), "0007")
    with pytest.raises(SchemaNotAtHead, match=r"at 0007: run `calib db upgrade`"):
        create_app(settings)
    command.upgrade(alembic_config(settings.database), "head")
    create_app(settings).extensions["calib"].db.dispose()


@pytest.mark.e2e
def test_the_processes_refuse_an_empty_database_and_name_the_fix(tmp_path: Path) -> None:
    env = {**os.environ, "CALIB_DATA_DIR": str(tmp_path)}
    env.pop("CALIB_DATABASE_URL", None)
    env.pop("CALIB_BROKER_URL", None)
    for command_line in (processes.worker_command(), processes.api_command(bind="127.0.0.1:0", workers=1)):
        done = subprocess.run(processes.resolve(command_line), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert "run `calib db upgrade`" in done.stdout + done.stderr, (command_line[0], done.stderr[-3000:])
