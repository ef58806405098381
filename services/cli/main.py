"""The `calib` command: run the service (up, api, worker, db upgrade, tokens) and use it
(demo, fit, batch, list, status, losses, plot), through the Python client (services.client).

Exit codes, for scripts: 0 success (for a waited fit: it succeeded; for a waited batch:
every fit succeeded); 1 it ended otherwise (diverged, failed, cancelled; for a batch, any
fit did); 2 usage error; 3 the service refused the request or could not be reached;
4 still running when --timeout ran out.
"""

from __future__ import annotations

import click

from services.cli import operator, user


@click.group()
def cli() -> None:
    """calib: linear calibration fits by gradient descent, as a service."""


for command in (*operator.COMMANDS, *user.COMMANDS):
    cli.add_command(command)


if __name__ == "__main__":
    cli()
