"""The `calib` command: run the service (up, api, worker, db upgrade, tokens) and use it (demo, fit, status, losses).

Exit codes: 0 success (for --wait: the fit succeeded); 1 the fit ended otherwise
(diverged, failed, cancelled); 2 usage error; 3 the service refused the request
or could not be reached.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from services.cli import processes
from services.cli.demo import run_demo
from services.cli.http import Service, ServiceError
from services.cli.progress import wait_for_fit
from shared.settings import get_settings


def _service(url: str | None) -> Service:
    from shared.tokens import read_local_token

    settings = get_settings()
    # CALIB_TOKEN wins; else the local token `calib up` left in the data directory.
    return Service(url or settings.api_url, token=settings.token or read_local_token(settings.token_file))


def _fail(exc: ServiceError) -> None:
    click.echo(f"error: {exc}", err=True)
    for err in exc.problem.get("errors") or []:
        click.echo(f"  {err.get('loc')}: {err.get('msg')}", err=True)
    sys.exit(3)


url_option = click.option("--url", envvar="CALIB_API_URL", default=None,
                          help="The service (default: CALIB_API_URL or http://127.0.0.1:8000)")


@click.group()
def cli() -> None:
    """calib: linear calibration fits by gradient descent, as a service."""


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the newest schema (alembic upgrade head)."""
    from shared.migrate import upgrade

    settings = get_settings()
    upgrade(settings)
    click.echo(f"database at head: {settings.database.split('@')[-1]}")


@cli.group()
def tokens() -> None:
    """Bearer tokens of tenants (talks to the database directly, like `db upgrade`)."""


@tokens.command("create")
@click.option("--tenant", required=True, help="the tenant the token acts for")
@click.option("--name", default=None, help="a note to recognise the token by")
def tokens_create(tenant: str, name: str | None) -> None:
    """Print a new token once; only its SHA-256 digest and prefix are stored."""
    from shared import tokens as store

    minted = store.create(_database(), tenant, name)
    click.echo(minted.token)
    click.echo(f"token {minted.prefix}… for tenant {tenant!r}: shown once, store it now", err=True)


@tokens.command("list")
def tokens_list() -> None:
    from shared import tokens as store

    for row in store.listing(_database()):
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "live"
        click.echo(f"{row.prefix}…  {row.tenant:<20} {row.created_at:%Y-%m-%d %H:%M}  {state}  {row.name or ''}")


@tokens.command("revoke")
@click.argument("prefix")
def tokens_revoke(prefix: str) -> None:
    """Revoke by the prefix `tokens list` shows; the next request with it gets 401."""
    from shared import tokens as store

    if not store.revoke(_database(), prefix.rstrip("…")):
        click.echo(f"no live token with prefix {prefix}", err=True)
        sys.exit(1)
    click.echo(f"revoked {prefix}", err=True)


def _database() -> Any:
    from shared.db import Database

    return Database.from_settings(get_settings())


@cli.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes")
def api(bind: str, workers: int) -> None:
    """Run the HTTP API (gunicorn)."""
    os.execv(*_exec_args(processes.api_command(bind, workers)))


@cli.command()
@click.option("--concurrency", default=1, show_default=True)
@click.option("--beat/--no-beat", default=True, show_default=True,
              help="also run the reconciler's schedule")
def worker(concurrency: int, beat: bool) -> None:
    """Run a Celery worker."""
    os.execv(*_exec_args(processes.worker_command(concurrency, beat)))


def _exec_args(command: list[str]) -> tuple[str, list[str]]:
    resolved = processes.resolve(command)
    return resolved[0], resolved


@cli.command()
@click.option("--port", default=8000, show_default=True)
def up(port: int) -> None:
    """Migrate, then run the API and a worker until Ctrl-C (embedded SQLite unless CALIB_* say otherwise)."""
    from shared.migrate import upgrade

    settings = get_settings()
    upgrade(settings)
    if settings.embedded:
        from shared.db import Database
        from shared.tokens import ensure_local_token

        db = Database.from_settings(settings)
        ensure_local_token(db, settings.token_file)
        db.dispose()
        click.echo(f"local token (tenant \"local\") in {settings.token_file}; the CLI uses it", err=True)
    env = processes.environment(CALIB_API_URL=f"http://127.0.0.1:{port}")
    children = [
        subprocess.Popen(processes.resolve(processes.api_command(f"127.0.0.1:{port}")), env=env),
        subprocess.Popen(processes.resolve(processes.worker_command()), env=env),
    ]
    where = "embedded SQLite in " + str(settings.data_dir) if settings.embedded else "configured"
    click.echo(f"calib is up on http://127.0.0.1:{port} ({where}); Ctrl-C stops it", err=True)

    processes.supervise(children)


@cli.command()
@click.option("--workers", default=processes.STACK_WORKERS, show_default=True, help="Celery worker processes")
def stack(workers: int) -> None:
    """Run the docker-compose topology as local processes (PostgreSQL + Redis)."""
    from services.cli.stack import run_stack

    run_stack(workers)


@cli.command()
@url_option
@click.option("--wait-ready", default=60.0, show_default=True, help="seconds to wait for /readyz")
def demo(url: str | None, wait_ready: float) -> None:
    """Submit the book's fits to a running service and print its figures."""
    service = _service(url)
    deadline = time.monotonic() + wait_ready
    while True:
        try:
            service.request("GET", "/readyz")
            break
        except ServiceError:
            if time.monotonic() > deadline:
                click.echo("the service is not ready; start it with `calib up`", err=True)
                sys.exit(3)
            time.sleep(0.5)
    service = _service(url)  # again: `calib up` writes the local token before it starts the API
    try:
        run_demo(service)
    except ServiceError as exc:
        _fail(exc)


def _read_csv(path: Path) -> tuple[list[float], list[float]]:
    t_u, t_c = [], []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"t_u", "t_c"} <= set(reader.fieldnames):
            raise click.UsageError(f"{path}: the header must name the columns t_u and t_c")
        for line, row in enumerate(reader, start=2):
            try:
                t_u.append(float(row["t_u"]))
                t_c.append(float(row["t_c"]))
            except (TypeError, ValueError) as exc:
                raise click.UsageError(f"{path}:{line}: not a number ({exc})") from exc
    return t_u, t_c


def _print_fit(fit: dict[str, Any]) -> None:
    click.echo(json.dumps(fit, indent=2))


@cli.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--epochs", type=int, default=5000, show_default=True)
@click.option("--learning-rate", type=float, default=0.01, show_default=True)
@click.option("--input-scale", type=float, default=1.0, show_default=True)
@click.option("--init-w", type=float, default=1.0, show_default=True)
@click.option("--init-b", type=float, default=0.0, show_default=True)
@click.option("--optimizer", default="gd", show_default=True)
@click.option("--label", "labels", multiple=True, help="key=value, repeatable")
@click.option("--idempotency-key", default=None)
@click.option("--wait", is_flag=True, help="wait for the fit to end, with a progress bar")
@url_option
def fit(csv_file: Path, epochs: int, learning_rate: float, input_scale: float, init_w: float,
        init_b: float, optimizer: str, labels: tuple[str, ...], idempotency_key: str | None,
        wait: bool, url: str | None) -> None:
    """Fit t_c = w * t_u + b to a CSV file with columns t_u,t_c."""
    t_u, t_c = _read_csv(csv_file)
    label_map = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--label {item}: write it as key=value")
        label_map[key] = value
    body = {"t_u": t_u, "t_c": t_c, "epochs": epochs, "learning_rate": learning_rate,
            "input_scale": input_scale, "init": {"w": init_w, "b": init_b},
            "optimizer": optimizer, "labels": label_map}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    service = _service(url)
    try:
        created = service.json("POST", "/v1/fits", json=body, headers=headers)
        if not wait:
            _print_fit(created)
            return
        final = wait_for_fit(service, created["id"])
    except ServiceError as exc:
        _fail(exc)
    _print_fit(final)
    sys.exit(0 if final["status"] == "succeeded" else 1)


@cli.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--epochs", type=int, default=None)
@click.option("--learning-rate", type=float, default=None)
@click.option("--input-scale", type=float, default=None)
@click.option("--wait", is_flag=True, help="wait for the batch, with a progress bar")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="with --wait: write one result line per fit here")
@click.option("--idempotency-key", default=None)
@url_option
def batch(csv_file: Path, epochs: int | None, learning_rate: float | None,
          input_scale: float | None, wait: bool, out: Path | None,
          idempotency_key: str | None, url: str | None) -> None:
    """Submit a batch from a long-format CSV (series,t_u,t_c): one fit per series."""
    from services.cli.progress import wait_for_batch

    params = {k: v for k, v in {"epochs": epochs, "learning_rate": learning_rate,
                                "input_scale": input_scale}.items() if v is not None}
    headers = {"Content-Type": "text/csv"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    service = _service(url)
    try:
        created = service.json("POST", "/v1/batches", params=params,
                               content=csv_file.read_bytes(), headers=headers)
        if not wait:
            click.echo(json.dumps(created, indent=2))
            return
        final = wait_for_batch(service, created["id"])
        if out is not None:
            text = service.request("GET", f"/v1/batches/{created['id']}/fits",
                                   params={"format": "csv"}).text
            out.write_text(text)
            click.echo(f"results of {final['count']} fits written to {out}", err=True)
    except ServiceError as exc:
        _fail(exc)
    click.echo(json.dumps(final, indent=2))
    sys.exit(0 if final["counts"]["succeeded"] == final["count"] else 1)


@cli.command()
@click.argument("fit_id")
@url_option
def status(fit_id: str, url: str | None) -> None:
    """Show a fit."""
    try:
        _print_fit(_service(url).json("GET", f"/v1/fits/{fit_id}"))
    except ServiceError as exc:
        _fail(exc)


@cli.command()
@click.argument("fit_id")
@click.option("--csv", "as_csv", is_flag=True, help="epoch,loss lines")
@url_option
def losses(fit_id: str, as_csv: bool, url: str | None) -> None:
    """Print a fit's loss per epoch."""
    service = _service(url)
    try:
        if as_csv:
            with service.http.stream("GET", f"/v1/fits/{fit_id}/losses",
                                     params={"format": "csv"}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ServiceError(response.status_code, response.json())
                for chunk in response.iter_text():
                    click.echo(chunk, nl=False)
            return
        path: str | None = f"/v1/fits/{fit_id}/losses"
        while path:
            page = service.json("GET", path)
            for i, loss in enumerate(page["loss"]):
                click.echo(f"Epoch {page['start'] + i}, Loss {loss}")
            path = page["next"]
    except ServiceError as exc:
        _fail(exc)
    except httpx.TransportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)


if __name__ == "__main__":
    cli()
