"""The `calib` command: run the service (up, api, worker, db upgrade, tokens) and use it
(demo, fit, batch, list, status, losses, plot), through the Python client (services.client).

Exit codes, for scripts: 0 success (for a waited fit: it succeeded; for a waited batch:
every fit succeeded); 1 it ended otherwise (diverged, failed, cancelled; for a batch, any
fit did); 2 usage error; 3 the service refused the request or could not be reached;
4 still running when --timeout ran out.
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

from services.cli import processes
from services.cli.demo import run_demo
from services.cli.tables import fit_summary, fits_table
from services.client import CalibError, Client
from shared.settings import get_settings

EXIT_OK, EXIT_ENDED_OTHERWISE, EXIT_SERVICE, EXIT_TIMEOUT = 0, 1, 3, 4


def _client(url: str | None) -> Client:
    from shared.tokens import read_local_token

    settings = get_settings()
    # CALIB_TOKEN wins; else the local token `calib up` left in the data directory.
    return Client(url or settings.api_url, token=settings.token or read_local_token(settings.token_file))


def _fail(exc: CalibError) -> None:
    click.echo(f"error: {exc}", err=True)
    for err in exc.errors:
        click.echo(f"  {err.get('loc')}: {err.get('msg')}", err=True)
    sys.exit(EXIT_SERVICE)


def _timed_out(exc: TimeoutError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_TIMEOUT)


url_option = click.option(
    "--url", envvar="CALIB_API_URL", default=None, help="The service (default: CALIB_API_URL or http://127.0.0.1:8000)"
)


@click.group()
def cli() -> None:
    """calib: linear calibration fits by gradient descent, as a service."""


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to the newest schema (alembic upgrade head)."""
    from migrations.apply import upgrade

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


@cli.group()
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
    from shared import quotas

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


@cli.command()
@click.option("--older-than", "older_than", required=True, help="an age: 30d, 12h, 2w, 90m")
def prune(older_than: str) -> None:
    """Delete the losses of fits finished longer ago than --older-than; their results stay."""
    from shared import retention

    try:
        age = retention.parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    done = retention.prune(_database(), age)
    click.echo(f"pruned the losses of {done.fits} fits ({done.bytes:,} bytes)")


@cli.command()
@url_option
def usage(url: str | None) -> None:
    """Your tenant's fits, stored loss bytes and work in flight, against its quotas."""
    try:
        with _client(url) as client:
            found = client.usage()
    except CalibError as exc:
        _fail(exc)
        return
    limits = found["quotas"]
    click.echo(f"tenant {found['tenant']}: {found['fits']:,} fits")
    click.echo(f"  stored losses      {found['stored_loss_bytes']:>20,} of {limits['stored_loss_bytes']:,} bytes")
    click.echo(f"  fit-epochs queued  {found['in_flight_fit_epochs']:>20,} of {limits['in_flight_fit_epochs']:,}")
    click.echo(f"  fit-epochs/request {'':>20} at most {limits['fit_epochs_per_request']:,}")


@cli.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes")
def api(bind: str, workers: int) -> None:
    """Run the HTTP API (gunicorn)."""
    os.execv(*_exec_args(processes.api_command(bind, workers)))


@cli.command()
@click.option("--concurrency", default=1, show_default=True)
@click.option("--beat/--no-beat", default=True, show_default=True, help="also run the reconciler's schedule")
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
    from migrations.apply import upgrade

    settings = get_settings()
    upgrade(settings)
    if settings.embedded:
        from shared.db import Database
        from shared.tokens import ensure_local_token

        db = Database.from_settings(settings)
        ensure_local_token(db, settings.token_file)
        db.dispose()
        click.echo(f'local token (tenant "local") in {settings.token_file}; the CLI uses it', err=True)
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
    deadline = time.monotonic() + wait_ready
    with _client(url) as probe:
        while not probe.ready():
            if time.monotonic() > deadline:
                click.echo("the service is not ready; start it with `calib up`", err=True)
                sys.exit(EXIT_SERVICE)
            time.sleep(0.5)
    try:
        with _client(url) as client:  # only now: `calib up` writes the local token before it starts the API
            run_demo(client)
    except CalibError as exc:
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


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--label {item}: write it as key=value")
        labels[key] = value
    return labels


def _json_option(name: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"--{name}: not JSON ({exc})") from exc


timeout_option = click.option(
    "--timeout", type=float, default=None, help="with --wait: give up after this many seconds (exit 4)"
)


@cli.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--epochs", type=int, default=5000, show_default=True)
@click.option("--learning-rate", default="0.01", show_default=True, help='a number, or "auto"')
@click.option("--input-scale", type=float, default=1.0, show_default=True)
@click.option("--normalize", type=click.Choice(["scale", "standardize", "none"]), default="scale", show_default=True)
@click.option("--init-w", type=float, default=1.0, show_default=True)
@click.option("--init-b", type=float, default=0.0, show_default=True)
@click.option("--optimizer", type=click.Choice(["gd", "sgd", "momentum", "adam"]), default="gd", show_default=True)
@click.option(
    "--validation", default=None, help='JSON, e.g. \'{"fraction": 0.2, "seed": 0}\' or \'{"indices": [2, 10]}\''
)
@click.option("--early-stopping", default=None, help='JSON, e.g. \'{"monitor": "val_loss", "patience": 10}\'')
@click.option("--label", "labels", multiple=True, help="key=value, repeatable")
@click.option("--idempotency-key", default=None)
@click.option("--wait", is_flag=True, help="wait for the fit to end, with a progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the fit as JSON instead of a summary")
@timeout_option
@url_option
def fit(
    csv_file: Path,
    epochs: int,
    learning_rate: str,
    input_scale: float,
    normalize: str,
    init_w: float,
    init_b: float,
    optimizer: str,
    validation: str | None,
    early_stopping: str | None,
    labels: tuple[str, ...],
    idempotency_key: str | None,
    wait: bool,
    as_json: bool,
    timeout: float | None,
    url: str | None,
) -> None:
    """Fit t_c = w * t_u + b to a CSV file with columns t_u,t_c."""
    t_u, t_c = _read_csv(csv_file)
    options: dict[str, Any] = {
        "epochs": epochs,
        "learning_rate": learning_rate if learning_rate == "auto" else _number(learning_rate),
        "normalize": normalize,
        "init": {"w": init_w, "b": init_b},
        "optimizer": optimizer,
        "labels": _labels(labels),
    }
    if normalize == "scale":
        options["input_scale"] = input_scale
    for name, text in (("validation", validation), ("early_stopping", early_stopping)):
        if text is not None:
            options[name] = _json_option(name.replace("_", "-"), text)
    try:
        with _client(url) as client:
            submitted = client.fit(t_u, t_c, idempotency_key=idempotency_key, **options)
            if wait:
                submitted.wait(progress=True, timeout=timeout)
    except CalibError as exc:
        _fail(exc)
    except TimeoutError as exc:
        _timed_out(exc)
    click.echo(json.dumps(submitted.data, indent=2) if as_json else fit_summary(submitted.data))
    if wait:
        sys.exit(EXIT_OK if submitted.status == "succeeded" else EXIT_ENDED_OTHERWISE)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise click.UsageError(f"--learning-rate {text}: a number, or auto") from exc


@cli.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--epochs", type=int, default=None)
@click.option("--learning-rate", default=None, help='a number, or "auto"')
@click.option("--input-scale", type=float, default=None)
@click.option("--optimizer", type=click.Choice(["gd", "sgd", "momentum", "adam"]), default=None)
@click.option("--wait", is_flag=True, help="wait for the batch, with a progress bar of fits finished")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="wait, then write one result line per fit here (CSV)",
)
@click.option("--idempotency-key", default=None)
@timeout_option
@url_option
def batch(
    csv_file: Path,
    epochs: int | None,
    learning_rate: str | None,
    input_scale: float | None,
    optimizer: str | None,
    wait: bool,
    out: Path | None,
    idempotency_key: str | None,
    timeout: float | None,
    url: str | None,
) -> None:
    """Submit a batch from a long-format CSV (series,t_u,t_c): one fit per series."""
    defaults = {
        k: v
        for k, v in {
            "epochs": epochs,
            "learning_rate": learning_rate,
            "input_scale": input_scale,
            "optimizer": optimizer,
        }.items()
        if v is not None
    }
    try:
        with _client(url) as client:
            submitted = client.submit_batch(csv_file, idempotency_key=idempotency_key, **defaults)
            click.echo(f"batch {submitted.id}: {submitted.count} fits", err=True)
            if not (wait or out):
                click.echo(json.dumps(submitted.data, indent=2))
                return
            submitted.wait(progress=True, timeout=timeout)
            if out is not None:
                out.write_text(submitted.results_csv())
                click.echo(f"results of {submitted.count} fits written to {out}", err=True)
    except CalibError as exc:
        _fail(exc)
    except TimeoutError as exc:
        _timed_out(exc)
    counts = submitted.counts
    click.echo(
        f"batch {submitted.id} {submitted.status}: "
        + ", ".join(f"{counts[s]} {s}" for s in ("succeeded", "diverged", "failed", "cancelled") if counts[s])
        + (
            f" ({counts['not_converged']} of them NOT converged: see the converged column)"
            if counts.get("not_converged")
            else ""
        )
    )
    sys.exit(EXIT_OK if counts["succeeded"] == submitted.count else EXIT_ENDED_OTHERWISE)


@cli.command("list")
@click.option("--status", default=None, help="only fits in this status")
@click.option("--batch", "batch_id", default=None, help="only the fits of this batch")
@click.option("--label", default=None, help="key:value")
@click.option("--limit", type=int, default=20, show_default=True)
@url_option
def list_fits(status: str | None, batch_id: str | None, label: str | None, limit: int, url: str | None) -> None:
    """Recent fits, newest first, as a table."""
    try:
        with _client(url) as client:
            rows = [
                f.data
                for _, f in zip(
                    range(limit),
                    client.fits(status=status, batch_id=batch_id, label=label, page_size=min(limit, 1000)),
                    strict=False,
                )
            ]
    except CalibError as exc:
        _fail(exc)
    click.echo(fits_table(rows))


@cli.command()
@click.argument("fit_id")
@click.option("--json", "as_json", is_flag=True, help="the fit as the API returns it")
@url_option
def status(fit_id: str, as_json: bool, url: str | None) -> None:
    """Show a fit (exit 0 when it succeeded, 1 when it ended otherwise or is not done yet)."""
    try:
        with _client(url) as client:
            found = client.get_fit(client.resolve_fit(fit_id))
    except CalibError as exc:
        _fail(exc)
    click.echo(json.dumps(found.data, indent=2) if as_json else fit_summary(found.data))
    sys.exit(EXIT_OK if found.status == "succeeded" else EXIT_ENDED_OTHERWISE)


@cli.command()
@click.argument("fit_id")
@url_option
def cancel(fit_id: str, url: str | None) -> None:
    """Cancel a queued or running fit (its id, or the start of it that `calib list` prints)."""
    try:
        with _client(url) as client:
            found = client.get_fit(client.resolve_fit(fit_id))
            found.cancel()
    except CalibError as exc:
        _fail(exc)
    click.echo(f"fit {found.id} cancelled")


@cli.command()
@click.argument("fit_id")
@click.option("--csv", "as_csv", is_flag=True, help="epoch,loss[,val_loss] lines")
@url_option
def losses(fit_id: str, as_csv: bool, url: str | None) -> None:
    """Print a fit's loss per epoch, as the book prints it (or CSV)."""
    try:
        with _client(url) as client:
            fit_id = client.resolve_fit(fit_id)
            if as_csv:
                click.echo(client.request("GET", f"/v1/fits/{fit_id}/losses", params={"format": "csv"}).text, nl=False)
                return
            loss, val = client.get_fit(fit_id).curves()
    except CalibError as exc:
        _fail(exc)
    for i, value in enumerate(loss):
        extra = f", Validation loss {val[i]}" if val is not None else ""
        click.echo(f"Epoch {i + 1}, Loss {value}{extra}")


@cli.command()
@click.argument("fit_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("loss.png"),
    show_default=True,
    help="the picture to write (.png, .svg or .pdf)",
)
@click.option("--points", type=int, default=2000, show_default=True, help="buckets of the downsampled loss curve")
@url_option
def plot(fit_id: str, out: Path, points: int, url: str | None) -> None:
    """Draw a fit: its loss (and validation loss) per epoch on a log scale, and its data with the fitted line."""
    try:
        import matplotlib  # noqa: F401 (only to say what is missing, before any request)
    except ImportError as exc:
        raise click.UsageError("calib plot draws with matplotlib: pip install 'calib[plot]'") from exc
    from services.cli.plot import draw_fit

    try:
        with _client(url) as client:
            draw_fit(client.get_fit(client.resolve_fit(fit_id)), out, points)
    except CalibError as exc:
        _fail(exc)
    click.echo(f"wrote {out}", err=True)


if __name__ == "__main__":
    cli()
