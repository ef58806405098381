"""Alembic: one head, `upgrade head` on an empty database gives exactly the models' schema."""

from __future__ import annotations

import json
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
from services.api.submit import fit_rows
from services.cli import processes
from shared.contract.schemas import FitCreate
from shared.runtime.settings import Settings
from shared.store import loss_partitions
from shared.store.db import make_engine
from shared.store.models import Base


def test_exactly_one_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1


def _check(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "head")
    assert is_at_head(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        # loss_blocks' partitions (PostgreSQL) are tables the models do not name: the parent is theirs.
        def ours(name: str | None, kind: str, _parent: object) -> bool:
            return not (kind == "table" and name is not None and loss_partitions.is_partition_name(name))

        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": ours}), Base.metadata)
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
def test_the_processes_refuse_an_empty_database_and_the_fix_they_name_works(tmp_path: Path) -> None:
    env = {**os.environ, "CALIB_DATA_DIR": str(tmp_path)}
    env.pop("CALIB_DATABASE_URL", None)
    env.pop("CALIB_BROKER_URL", None)
    for command_line in (processes.worker_command(), processes.api_command(bind="127.0.0.1:0", workers=1)):
        done = subprocess.run(processes.resolve(command_line), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert "run `calib db upgrade`" in done.stdout + done.stderr, (command_line[0], done.stderr[-3000:])
    # The fix, as an operator runs it (the e2e stacks migrate in their own process: tests/stack.py).
    done = subprocess.run(processes.resolve(processes.MIGRATE), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert is_at_head(Settings(data_dir=tmp_path).database)


# Fits as 0014 stored them (a column per option), and the object 0015 makes of each.
_OLD_OPTIONS = [
    ("gd", {"gradient": "analytic"}, {"gradient": "analytic"}),
    ("gd", {"gradient": "finite_difference", "delta": 0.25}, {"gradient": "finite_difference", "delta": 0.25}),
    ("gd", {"gradient": "autograd"}, {"gradient": "autograd"}),
    ("sgd", {}, {}),
    ("momentum", {"momentum": 0.5}, {"momentum": 0.5}),
    ("adam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, {"betas": [0.8, 0.99], "eps": 1e-6}),
]


def _options_convert_both_ways(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "0014")
    engine = make_engine(url)
    meta = sa.MetaData()
    fits, blocks = (sa.Table(name, meta, autoload_with=engine) for name in ("fits", "loss_blocks"))
    rows = fit_rows([FitCreate.model_validate({"t_u": [1.0, 2.0, 3.0], "t_c": [2.0, 4.0, 7.0]})] * 6, "default")
    with engine.begin() as conn:
        for row, (optimizer, old, _) in zip(rows, _OLD_OPTIONS, strict=True):
            values = {k: v for k, v in row.items() if k in fits.c} | {"optimizer": optimizer, **old}
            conn.execute(fits.insert().values(values))
            conn.execute(blocks.insert().values(fit_id=row["id"], first_epoch=1, count=1, loss=b"\0\0\0\0"))
    engine.dispose()

    command.upgrade(config, "head")
    engine = make_engine(url)
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT id, optimizer_options FROM fits")).all())
        kept_blocks = conn.execute(sa.text("SELECT count(*) FROM loss_blocks")).scalar_one()
    engine.dispose()
    for row, (_, _, expected) in zip(rows, _OLD_OPTIONS, strict=True):
        got = stored[row["id"]]
        assert (json.loads(got) if isinstance(got, str) else got) == expected
    # SQLite rebuilds `fits` to drop its columns: the rows that reference it stay (migrations/env.py).
    assert kept_blocks == 6

    command.downgrade(config, "0014")
    engine = make_engine(url)
    with engine.connect() as conn:
        back = {r.id: r for r in conn.execute(sa.text("SELECT * FROM fits"))}
    engine.dispose()
    for row, (optimizer, old, _) in zip(rows, _OLD_OPTIONS, strict=True):
        found = back[row["id"]]
        assert found.optimizer == optimizer and found.gradient == old.get("gradient", "analytic")
        for column in ("delta", "momentum", "beta1", "beta2", "eps"):
            assert getattr(found, column) == old.get(column), (optimizer, column)


def test_optimizer_options_convert_both_ways_on_sqlite(tmp_path: Path) -> None:
    _options_convert_both_ways(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_optimizer_options_convert_both_ways_on_postgres(fresh_postgres: str) -> None:
    _options_convert_both_ways(fresh_postgres)
