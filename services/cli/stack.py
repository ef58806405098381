"""`calib stack`: the docker-compose topology as local processes, against a local PostgreSQL and Redis.

migrate once, then the gunicorn API, STACK_WORKERS Celery workers and a webhook delivery worker, with the
same commands and CALIB_* variables as docker-compose.yml; Ctrl-C stops them.
"""

from __future__ import annotations

import os
import subprocess

import click
import sqlalchemy as sa

from services.cli import pooler, processes
from shared.runtime.settings import Settings


def ensure_database(url: str) -> None:
    """Create the database named in the URL if the server lacks it (PostgreSQL only)."""
    target = sa.make_url(url)
    if not target.drivername.startswith("postgresql"):
        return
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).first()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    engine.dispose()


def run_stack(workers: int = processes.STACK_WORKERS, pooler_port: int | None = None) -> None:
    """With `pooler_port`, PgBouncer in transaction mode on that port in front of the database, and
    the API and workers through it (migrations and LISTEN go direct: CALIB_DIRECT_DATABASE_URL)."""
    env = dict(os.environ)
    for key in processes.STACK_ENV:
        env.setdefault(key, processes.LOCAL_DEFAULTS[key])
    ensure_database(env["CALIB_DATABASE_URL"])
    children: list[subprocess.Popen[bytes]] = []
    if pooler_port is not None:
        direct = env["CALIB_DATABASE_URL"]
        children.append(pooler.start(direct, Settings().data_dir / "pooler", pooler_port))
        env.update(CALIB_DIRECT_DATABASE_URL=direct, CALIB_DATABASE_URL=pooler.pooled_url(direct, pooler_port))
    subprocess.run(processes.resolve(processes.STACK_SERVICES["migrate"]), env=env, check=True)
    children.append(subprocess.Popen(processes.resolve(processes.STACK_SERVICES["api"]), env=env))
    children += [
        subprocess.Popen(processes.resolve(processes.STACK_SERVICES["worker"]), env=env) for _ in range(workers)
    ]
    children.append(subprocess.Popen(processes.resolve(processes.STACK_SERVICES["deliveries"]), env=env))
    through = f", through PgBouncer on :{pooler_port}" if pooler_port is not None else ""
    click.echo(
        f"stack up: API on :8000, {workers} workers, a webhook delivery worker{through}; Ctrl-C stops it", err=True
    )

    processes.supervise(children)
