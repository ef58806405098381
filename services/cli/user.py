"""User commands of `calib`: submit, follow and read fits and batches, over HTTP through the Python
client only (services.client). An option left out is not sent: the service's defaults apply."""

from __future__ import annotations

import csv
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from services.cli.common import (
    EXIT_ENDED_OTHERWISE,
    EXIT_OK,
    EXIT_SERVICE,
    EXIT_WOULD_DIVERGE,
    client_for,
    fail,
    timed_out,
    timeout_option,
    url_option,
)
from services.cli.demo import run_demo
from services.cli.tables import fit_summary, fits_table, instrument_history, instruments_table
from services.client import CalibError, WouldDiverge
from shared.contract.optimizers import DECLARED


@click.command()
@url_option
def usage(url: str | None) -> None:
    """Your tenant's fits, stored loss bytes and work in flight, against its quotas."""
    try:
        with client_for(url) as client:
            found = client.usage()
    except CalibError as exc:
        fail(exc)
        return
    limits = found["quotas"]
    click.echo(f"tenant {found['tenant']}: {found['fits']:,} fits")
    click.echo(f"  stored losses      {found['stored_loss_bytes']:>20,} of {limits['stored_loss_bytes']:,} bytes")
    click.echo(f"  fit-epochs queued  {found['in_flight_fit_epochs']:>20,} of {limits['in_flight_fit_epochs']:,}")
    click.echo(f"  fit-epochs/request {'':>20} at most {limits['fit_epochs_per_request']:,}")


@click.command()
@url_option
@click.option("--wait-ready", default=60.0, show_default=True, help="seconds to wait for /readyz")
def demo(url: str | None, wait_ready: float) -> None:
    """Submit the book's fits to a running service and print its figures."""
    deadline = time.monotonic() + wait_ready
    with client_for(url) as probe:
        while not probe.ready():
            if time.monotonic() > deadline:
                click.echo("the service is not ready; start it with `calib up`", err=True)
                sys.exit(EXIT_SERVICE)
            time.sleep(0.5)
    try:
        with client_for(url) as client:  # only now: `calib up` writes the local token before it starts the API
            run_demo(client)
    except CalibError as exc:
        fail(exc)


def _read_csv(path: Path) -> tuple[list[float], list[float]]:
    """t_u and t_c of a CSV file, read as the service reads a batch's: UTF-8 (a spreadsheet's
    byte-order mark skipped), any line break; a file that is not, a usage error naming it."""
    t_u, t_c = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"t_u", "t_c"} <= set(reader.fieldnames):
                raise click.UsageError(f"{path}: the header must name the columns t_u and t_c")
            for line, row in enumerate(reader, start=2):
                try:
                    t_u.append(float(row["t_u"]))
                    t_c.append(float(row["t_c"]))
                except (TypeError, ValueError) as exc:
                    raise click.UsageError(f"{path}:{line}: not a number ({exc})") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise click.UsageError(f"{path}: not a UTF-8 CSV file ({exc})") from exc
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


@click.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
# Left out, an option is not sent and the service's default applies (docs/cli.md).
@click.option("--epochs", default=None, help='an integer, or "auto" (service default 5000)')
@click.option("--learning-rate", default=None, help='a number, or "auto" (service default 0.01)')
@click.option("--input-scale", type=float, default=None, help="x = input_scale * t_u (with normalize scale)")
@click.option("--normalize", type=click.Choice(["scale", "standardize", "none"]), default=None)
@click.option(
    "--model",
    type=click.Choice(["line", "polynomial", "callendar_van_dusen", "steinhart_hart"]),
    default=None,
    help="the function fitted (service default: line); polynomial takes --degree",
)
@click.option("--degree", type=click.IntRange(1, 5), default=None, help="a polynomial's degree, 1 to 5")
@click.option("--init-w", type=float, default=None)
@click.option("--init-b", type=float, default=None)
@click.option("--optimizer", type=click.Choice(list(DECLARED)), default=None)
@click.option(
    "--validation", default=None, help='JSON, e.g. \'{"fraction": 0.2, "seed": 0}\' or \'{"indices": [2, 10]}\''
)
@click.option("--early-stopping", default=None, help='JSON, e.g. \'{"monitor": "val_loss", "patience": 10}\'')
@click.option("--label", "labels", multiple=True, help="key=value, repeatable")
@click.option("--idempotency-key", default=None)
@click.option(
    "--auto",
    is_flag=True,
    help='learning rate "auto", normalize standardize, epochs "auto": converges on any data in few epochs',
)
@click.option("--yes", is_flag=True, help="submit even when the pre-flight says the fit will diverge")
@click.option("--wait", is_flag=True, help="wait for the fit to end, with a progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the fit as JSON instead of a summary")
@timeout_option
@url_option
def fit(
    csv_file: Path,
    epochs: str | None,
    learning_rate: str | None,
    input_scale: float | None,
    normalize: str | None,
    model: str | None,
    degree: int | None,
    init_w: float | None,
    init_b: float | None,
    optimizer: str | None,
    validation: str | None,
    early_stopping: str | None,
    labels: tuple[str, ...],
    idempotency_key: str | None,
    auto: bool,
    yes: bool,
    wait: bool,
    as_json: bool,
    timeout: float | None,
    url: str | None,
) -> None:
    """Fit t_c = w * t_u + b (or --model's function) to a CSV file with columns t_u,t_c.

    The service's pre-flight is asked first: when the learning rate would diverge on this data
    (the book's defaults on raw readings do), nothing is submitted and the command that converges
    is printed (exit 2), unless --yes, or a yes at the prompt on a terminal."""
    if auto:
        clash = [
            f"--{n}"
            for n, v in (
                ("epochs", epochs),
                ("learning-rate", learning_rate),
                ("normalize", normalize),
                ("input-scale", input_scale),
            )
            if v is not None
        ]
        if clash:
            raise click.UsageError(
                f"--auto sets the learning rate, normalize and epochs itself: drop {', '.join(clash)}"
            )
        epochs, learning_rate, normalize = "auto", "auto", "standardize"
    if (degree is not None) != (model == "polynomial"):
        raise click.UsageError("--degree goes with --model polynomial, and --model polynomial needs --degree")
    t_u, t_c = _read_csv(csv_file)
    given: dict[str, Any] = {
        "model": None if model is None else {"kind": model, **({"degree": degree} if degree is not None else {})},
        "epochs": None if epochs is None else _auto_or(int, "--epochs", epochs),
        "learning_rate": None if learning_rate is None else _auto_or(float, "--learning-rate", learning_rate),
        "input_scale": input_scale,
        "normalize": normalize,
        "init": {k: v for k, v in (("w", init_w), ("b", init_b)) if v is not None} or None,
        "optimizer": optimizer,
        "labels": _labels(labels),
    }
    options = {name: value for name, value in given.items() if value is not None}
    for name, text in (("validation", validation), ("early_stopping", early_stopping)):
        if text is not None:
            options[name] = _json_option(name.replace("_", "-"), text)
    try:
        with client_for(url) as client:
            try:
                submitted = client.fit(t_u, t_c, idempotency_key=idempotency_key, allow_divergence=yes, **options)
            except WouldDiverge as exc:
                if not _submit_anyway(exc):
                    sys.exit(EXIT_WOULD_DIVERGE)
                submitted = client.fit(t_u, t_c, idempotency_key=idempotency_key, allow_divergence=True, **options)
            if wait:
                submitted.wait(progress=True, timeout=timeout)
    except CalibError as exc:
        fail(exc)
    except TimeoutError as exc:
        timed_out(exc)
    click.echo(json.dumps(submitted.data, indent=2) if as_json else fit_summary(submitted.data))
    if wait:
        sys.exit(EXIT_OK if submitted.status == "succeeded" else EXIT_ENDED_OTHERWISE)


def _submit_anyway(exc: WouldDiverge) -> bool:
    """Say why the fit would diverge and which command converges; on a terminal, ask."""
    click.echo(f"{exc.detail.split('. These options')[0]}. Nothing was submitted.", err=True)
    click.echo(f"This command converges (the same as --auto):\n  {_converging_command()}", err=True)
    if sys.stdin.isatty() and sys.stderr.isatty():
        return click.confirm("Submit the fit as it is anyway?", default=False, err=True)
    click.echo("To submit it as it is, add --yes.", err=True)
    return False


# The options --auto replaces (with normalize "standardize", input_scale does not apply).
_REPLACED = {"--epochs", "--learning-rate", "--normalize", "--input-scale"}


def _converging_command() -> str:
    """This invocation with the learning rate, normalize and epochs that converge in its place."""
    args, kept = sys.argv[1:], []
    i = 0
    while i < len(args):
        name = args[i].split("=", 1)[0]
        if name in _REPLACED:
            i += 1 if "=" in args[i] else 2
            continue
        if name != "--yes":
            kept.append(args[i])
        i += 1
    kept += ["--learning-rate", "auto", "--normalize", "standardize", "--epochs", "auto"]
    return " ".join(["calib", *(shlex.quote(a) for a in kept)])


def _auto_or(kind: type[int] | type[float], option: str, text: str) -> int | float | str:
    if text == "auto":
        return text
    try:
        return kind(text)
    except ValueError as exc:
        raise click.UsageError(f"{option} {text}: {'an integer' if kind is int else 'a number'}, or auto") from exc


@click.command()
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--epochs", type=int, default=None)
@click.option("--learning-rate", default=None, help='a number, or "auto"')
@click.option("--input-scale", type=float, default=None)
@click.option("--optimizer", type=click.Choice(list(DECLARED)), default=None)
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
    """Submit a batch from a long-format CSV (series,t_u,t_c[,instrument]) or Parquet file: one fit per
    series, each a calibration of its instrument (the series, unless an instrument column names it)."""
    defaults: dict[str, Any] = {
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
        with client_for(url) as client:
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
        fail(exc)
    except TimeoutError as exc:
        timed_out(exc)
    counts = submitted.counts
    click.echo(
        f"batch {submitted.id} {submitted.status}: "
        + ", ".join(f"{counts[s]} {s}" for s in ("succeeded", "diverged", "failed", "cancelled") if counts[s])
        + (
            f" ({counts['not_converged']} of them NOT converged: see the converged column)"
            if counts.get("not_converged")
            else ""
        )
        + (
            f"; {submitted.data['drifted']} instruments DRIFTED (calib instruments --drifted)"
            if submitted.data.get("drifted")
            else ""
        )
    )
    sys.exit(EXIT_OK if counts["succeeded"] == submitted.count else EXIT_ENDED_OTHERWISE)


@click.command("list")
@click.option("--status", default=None, help="only fits in this status")
@click.option("--batch", "batch_id", default=None, help="only the fits of this batch")
@click.option("--label", default=None, help="key:value")
@click.option("--limit", type=int, default=20, show_default=True)
@url_option
def list_fits(status: str | None, batch_id: str | None, label: str | None, limit: int, url: str | None) -> None:
    """Recent fits, newest first, as a table."""
    try:
        with client_for(url) as client:
            rows = [
                f.data
                for _, f in zip(
                    range(limit),
                    client.fits(status=status, batch_id=batch_id, label=label, page_size=min(limit, 1000)),
                    strict=False,
                )
            ]
    except CalibError as exc:
        fail(exc)
    click.echo(fits_table(rows))


@click.command()
@click.argument("fit_id")
@click.option("--json", "as_json", is_flag=True, help="the fit as the API returns it")
@url_option
def status(fit_id: str, as_json: bool, url: str | None) -> None:
    """Show a fit (exit 0 when it succeeded, 1 when it ended otherwise or is not done yet)."""
    try:
        with client_for(url) as client:
            found = client.get_fit(client.resolve_fit(fit_id))
    except CalibError as exc:
        fail(exc)
    click.echo(json.dumps(found.data, indent=2) if as_json else fit_summary(found.data))
    sys.exit(EXIT_OK if found.status == "succeeded" else EXIT_ENDED_OTHERWISE)


@click.command()
@click.argument("fit_id")
@url_option
def cancel(fit_id: str, url: str | None) -> None:
    """Cancel a queued or running fit (its id, or the start of it that `calib list` prints)."""
    try:
        with client_for(url) as client:
            found = client.get_fit(client.resolve_fit(fit_id))
            found.cancel()
    except CalibError as exc:
        fail(exc)
    click.echo(f"fit {found.id} cancelled")


@click.command()
@click.argument("fit_id")
@click.option("--csv", "as_csv", is_flag=True, help="epoch,loss[,val_loss] lines")
@url_option
def losses(fit_id: str, as_csv: bool, url: str | None) -> None:
    """Print a fit's loss per epoch, as the book prints it (or CSV)."""
    try:
        with client_for(url) as client:
            fit_id = client.resolve_fit(fit_id)
            if as_csv:
                click.echo(client.request("GET", f"/v1/fits/{fit_id}/losses", params={"format": "csv"}).text, nl=False)
                return
            loss, val = client.get_fit(fit_id).curves()
    except CalibError as exc:
        fail(exc)
    for i, value in enumerate(loss):
        extra = f", Validation loss {val[i]}" if val is not None else ""
        click.echo(f"Epoch {i + 1}, Loss {value}{extra}")


@click.command()
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
        with client_for(url) as client:
            draw_fit(client.get_fit(client.resolve_fit(fit_id)), out, points)
    except CalibError as exc:
        fail(exc)
    click.echo(f"wrote {out}", err=True)


@click.command()
@click.option("--drifted", is_flag=True, help="only those whose current calibration drifted from the one before")
@url_option
def instruments(drifted: bool, url: str | None) -> None:
    """Your instruments, each with its current calibration and drift verdict."""
    try:
        with client_for(url) as client:
            rows = list(client.instruments(drifted=drifted, page_size=1000))
    except CalibError as exc:
        fail(exc)
    click.echo(instruments_table(rows))


@click.command()
@click.argument("instrument_id")
@click.option("--json", "as_json", is_flag=True, help="the instrument as the API returns it")
@url_option
def instrument(instrument_id: str, as_json: bool, url: str | None) -> None:
    """An instrument's calibration history, newest first, with each drift verdict (exit 1 if its
    current calibration drifted)."""
    try:
        with client_for(url) as client:
            found = client.instrument(instrument_id)
    except CalibError as exc:
        fail(exc)
    click.echo(json.dumps(found, indent=2) if as_json else instrument_history(found))
    current = found.get("current") or {}
    sys.exit(EXIT_ENDED_OTHERWISE if (current.get("drift") or {}).get("flagged") else EXIT_OK)


@click.command("apply")
@click.argument("readings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="the calibrated CSV")
@click.option(
    "--interval",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="prediction bounds at this confidence, e.g. 0.95",
)
@url_option
def apply_readings(readings: Path, out: Path, interval: float | None, url: str | None) -> None:
    """Calibrate a CSV of instrument,t_u readings with each instrument's current calibration:
    instrument,t_u,t_c,lower,upper,fit_id. With a third column u_t_u (each reading's standard
    uncertainty), each row adds u_t_c."""
    started = time.monotonic()
    try:
        with client_for(url) as client:
            rows = client.apply(readings, out, interval=interval)
    except CalibError as exc:
        fail(exc)
    took = time.monotonic() - started
    click.echo(f"{rows:,} readings calibrated into {out} in {took:.1f} s", err=True)


COMMANDS = [fit, batch, list_fits, status, cancel, losses, plot, usage, demo, instruments, instrument, apply_readings]
