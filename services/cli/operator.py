"""Operator commands of `calib`: the schema, tokens and quotas (straight to the database), retention,
and running the service's processes (api, worker, up, stack)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import click

from services.cli import processes
from shared.runtime.settings import get_settings


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the newest schema (alembic upgrade head)."""
    from migrations.apply import upgrade

    settings = get_settings()
    upgrade(settings)
    click.echo(f"database at head: {settings.database.split('@')[-1]}")


@click.group()
def tokens() -> None:
    """Bearer tokens of tenants (talks to the database directly, like `db upgrade`)."""


@tokens.command("create")
@click.option("--tenant", required=True, help="the tenant the token acts for")
@click.option("--name", default=None, help="a note to recognise the token by")
def tokens_create(tenant: str, name: str | None) -> None:
    """Print a new token once; only its SHA-256 digest and prefix are stored."""
    from shared.store import tokens as store

    minted = store.create(_database(), tenant, name)
    click.echo(minted.token)
    click.echo(f"token {minted.prefix}… for tenant {tenant!r}: shown once, store it now", err=True)


@tokens.command("list")
def tokens_list() -> None:
    from shared.store import tokens as store

    for row in store.listing(_database()):
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "live"
        click.echo(f"{row.prefix}…  {row.tenant:<20} {row.created_at:%Y-%m-%d %H:%M}  {state}  {row.name or ''}")


@tokens.command("revoke")
@click.argument("prefix")
def tokens_revoke(prefix: str) -> None:
    """Revoke by the prefix `tokens list` shows; the next request with it gets 401."""
    from shared.store import tokens as store

    if not store.revoke(_database(), prefix.rstrip("…")):
        click.echo(f"no live token with prefix {prefix}", err=True)
        sys.exit(1)
    click.echo(f"revoked {prefix}", err=True)


def _database() -> Any:
    from shared.store.db import Database

    return Database.from_settings(get_settings())


@click.group()
def tenants() -> None:
    """Tenants' quotas (talks to the database directly, like `db upgrade`)."""


@tenants.command("set-quota")
@click.argument("tenant")
@click.option(
    "--in-flight-fit-epochs",
    type=click.IntRange(min=0),
    default=None,
    help="epochs not yet run of the tenant's queued and running fits",
)
@click.option("--stored-loss-bytes", type=click.IntRange(min=0), default=None, help="loss bytes the tenant may store")
@click.option("--reset", is_flag=True, help="back to the service's defaults first")
def tenants_set_quota(
    tenant: str, in_flight_fit_epochs: int | None, stored_loss_bytes: int | None, reset: bool
) -> None:
    """Set a tenant's quotas; what is not given stays as it was."""
    from shared.store import quotas

    settings = get_settings()
    db = _database()
    with db.session(write=True) as session:
        quotas.set_quotas(
            session, tenant, in_flight_fit_epochs=in_flight_fit_epochs, stored_loss_bytes=stored_loss_bytes, reset=reset
        )
    with db.session() as session:
        found = quotas.quotas_of(session, settings, tenant)
    click.echo(
        f"tenant {tenant!r}: in-flight fit-epochs {found.in_flight_fit_epochs:,}, "
        f"stored loss bytes {found.stored_loss_bytes:,}, "
        f"fit-epochs per request {found.fit_epochs_per_request:,}"
    )


@click.group()
def webhooks() -> None:
    """Webhooks: each tenant's signing secret."""


@webhooks.command("secret")
@click.option("--tenant", required=True, help="the tenant whose webhooks it signs")
def webhooks_secret(tenant: str) -> None:
    """Print the tenant's webhook secret (made now if it has none): receivers verify each delivery's
    webhook-signature with it, with any Standard Webhooks library."""
    from shared.store import deliveries as owed

    with _database().session(write=True) as session:
        click.echo(owed.secret_of(session, tenant, get_settings()))


@webhooks.command("new-key")
def webhooks_new_key() -> None:
    """Print a new key for CALIB_SECRETS_KEY (webhook secrets are sealed with it in the database).
    Set it on the API, every worker and the CLI before the first secret is made."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@webhooks.command("rotate")
@click.option("--tenant", required=True, help="the tenant whose webhooks it signs")
@click.option("--overlap", default="24h", show_default=True, help="how long the old secret still signs: 24h, 7d, 90m")
def webhooks_rotate(tenant: str, overlap: str) -> None:
    """Make a new secret and print it. Until the overlap ends, deliveries carry two signatures, one
    under each secret, so receivers verify with either while they switch."""
    from shared.store import deliveries as owed
    from shared.store import retention

    try:
        span = retention.parse_age(overlap)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--overlap") from exc
    with _database().session(write=True) as session:
        click.echo(owed.rotate(session, tenant, span, get_settings()))


@click.command()
@click.option("--older-than", "older_than", required=True, help="an age: 30d, 12h, 2w, 90m")
def prune(older_than: str) -> None:
    """Delete the losses of fits finished longer ago than --older-than; their results stay."""
    from shared.store import retention

    try:
        age = retention.parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    done = retention.prune(_database(), age)
    click.echo(f"pruned the losses of {done.fits} fits ({done.bytes:,} bytes)")


@click.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes")
def api(bind: str, workers: int) -> None:
    """Run the HTTP API (gunicorn)."""
    os.execv(*_exec_args(processes.api_command(bind, workers, get_settings().embedded)))


@click.command()
@click.option("--concurrency", default=1, show_default=True)
@click.option("--beat/--no-beat", default=True, show_default=True, help="also run the reconciler's schedule")
@click.option(
    "--deliveries",
    is_flag=True,
    help="deliver webhooks only (their own queue and process: a slow receiver never holds up a fit)",
)
def worker(concurrency: int, beat: bool, deliveries: bool) -> None:
    """Run a Celery worker: fits and the reconciler, or with --deliveries the webhooks."""
    command = processes.delivery_worker_command() if deliveries else processes.worker_command(concurrency, beat)
    os.execv(*_exec_args(command))


def _exec_args(command: list[str]) -> tuple[str, list[str]]:
    resolved = processes.resolve(command)
    return resolved[0], resolved


@click.command()
@click.option("--port", default=8000, show_default=True)
def up(port: int) -> None:
    """Migrate, then run the API, a worker and a webhook delivery worker until Ctrl-C (embedded SQLite
    unless CALIB_* say otherwise)."""
    from migrations.apply import upgrade

    settings = get_settings()
    upgrade(settings)
    if settings.embedded:
        from shared.store.db import Database
        from shared.store.tokens import ensure_local_token

        db = Database.from_settings(settings)
        ensure_local_token(db, settings.token_file)
        db.dispose()
        click.echo(f'local token (tenant "local") in {settings.token_file}; the CLI uses it', err=True)
    env = processes.environment(CALIB_API_URL=f"http://127.0.0.1:{port}")
    children = [
        subprocess.Popen(
            processes.resolve(processes.api_command(f"127.0.0.1:{port}", embedded=settings.embedded)), env=env
        ),
        subprocess.Popen(processes.resolve(processes.worker_command()), env=env),
        subprocess.Popen(processes.resolve(processes.delivery_worker_command()), env=env),
    ]
    where = "embedded SQLite in " + str(settings.data_dir) if settings.embedded else "configured"
    click.echo(f"calib is up on http://127.0.0.1:{port} ({where}); Ctrl-C stops it", err=True)

    processes.supervise(children)


@click.command()
@click.option("--workers", default=processes.STACK_WORKERS, show_default=True, help="Celery worker processes")
@click.option(
    "--pooler",
    is_flag=True,
    help="Run the API and workers through PgBouncer in transaction mode (Debian's pgbouncer package)",
)
@click.option("--pooler-port", default=6432, show_default=True, help="The port PgBouncer listens on")
def stack(workers: int, pooler: bool, pooler_port: int) -> None:
    """Run the docker-compose topology as local processes (PostgreSQL + Redis)."""
    from services.cli.stack import run_stack

    run_stack(workers, pooler_port if pooler else None)


COMMANDS = [db, tokens, tenants, webhooks, prune, api, worker, up, stack]
