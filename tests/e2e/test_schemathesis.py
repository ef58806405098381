"""Schemathesis against the served /openapi.json, over HTTP to the real processes, with a token.

Checks: no 5xx, status codes, content types (so every documented error is problem+json),
response schemas and headers, the missing-auth check (ignored_auth), and stateful
sequences along the document's links (create a fit or batch, then use its id).

Two checks are left out on purpose, each for a constraint JSON Schema cannot state:
positive_data_acceptance (t_c must have as many values as t_u; a cursor is only valid
if this API gave it out) and negative_data_rejection (parameters that do not apply to
a representation, e.g. `limit` on the CSV export, are ignored rather than refused).
"""

from __future__ import annotations

import subprocess

from services.cli import processes
from services.cli.local_stack import Stack

# CPython 3.11.7 (this machine's) can raise this inside hypothesis while it builds a
# strategy's repr from a worker thread (gh-106905, an interpreter bug): schemathesis
# reports it as a runtime error of its own, not a finding about the API. With one
# worker it did not occur in our runs (6 of 6 clean, against 4 of 10 failing with
# two); should it still occur, that error alone is retried, once.
INTERPRETER_BUG = "SystemError: AST constructor recursion depth mismatch"


def run_schemathesis(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        processes.resolve(
            [
                "schemathesis",
                "run",
                f"{stack.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {stack.token}",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance,negative_data_rejection",
                "--max-examples",
                "20",
                "--seed",
                "1",
                "--workers",
                "1",
                "--no-color",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_schemathesis_finds_nothing(stack: Stack) -> None:
    done = run_schemathesis(stack)
    if done.returncode != 0 and INTERPRETER_BUG in done.stdout + done.stderr:
        done = run_schemathesis(stack)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
