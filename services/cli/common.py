"""What the `calib` commands share: exit codes, the client they talk through, and how they report
a refusal or a timeout."""

from __future__ import annotations

import sys

import click

from services.client import CalibError, Client

EXIT_OK, EXIT_ENDED_OTHERWISE, EXIT_SERVICE, EXIT_TIMEOUT = 0, 1, 3, 4
# The pre-flight says the fit would diverge, and nothing was submitted (calib fit without --yes).
EXIT_WOULD_DIVERGE = 2


def client_for(url: str | None) -> Client:
    # The client resolves the rest: CALIB_API_URL, CALIB_TOKEN, else the local token `calib up` wrote.
    return Client(url)


def fail(exc: CalibError) -> None:
    click.echo(f"error: {exc}", err=True)
    for err in exc.errors:
        click.echo(f"  {err.get('loc')}: {err.get('msg')}", err=True)
    sys.exit(EXIT_SERVICE)


def timed_out(exc: TimeoutError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_TIMEOUT)


url_option = click.option(
    "--url", envvar="CALIB_API_URL", default=None, help="The service (default: CALIB_API_URL or http://127.0.0.1:8000)"
)


timeout_option = click.option(
    "--timeout", type=float, default=None, help="with --wait: give up after this many seconds (exit 4)"
)
