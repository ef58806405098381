"""`calib stack`: the docker-compose topology as local processes, against a local PostgreSQL and Redis.

migrate once, then the gunicorn API, STACK_WORKERS Celery workers and a webhook delivery worker, with the
same commands and CALIB_* variables as docker-compose.yml; Ctrl-C stops them.
"""

from __future__ import annotations

import os
import subprocess

import click
import sqlalchemy as sa

from services.cli import processes


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


def run_stack(workers: int = processes.STACK_WORKERS) -> None:
    env = dict(os.environ)
    for key in processes.STACK_ENV:
        env.setdefault(key, processes.LOCAL_DEFAULTS[key])
    ensure_database(env["CALIB_DATABASE_URL"])
    subprocess.run(processes.resolve(processes.STACK_SERVICES["migrate"]), env=env, check=True)
    children = [subprocess.Popen(processes.resolve(processes.STACK_SERVICES["api"]), env=env)]
    children += [
        subprocess.Popen(processes.resolve(processes.STACK_SERVICES["worker"]), env=env) for _ in range(workers)
    ]
    children.append(subprocess.Popen(processes.resolve(processes.STACK_SERVICES["deliveries"]), env=env))
    click.echo(f"stack up: API on :8000, {workers} workers, a webhook delivery worker; Ctrl-C stops it", err=True)

    processes.supervise(children)
