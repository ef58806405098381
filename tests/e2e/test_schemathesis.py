"""Schemathesis against the served /openapi.json, over HTTP to the real processes, with a token:
every check (`--checks all`), every phase (examples, coverage, fuzzing, stateful sequences
along the document's links), 40 examples per operation.

The rules of a fit that JSON Schema cannot state (t_c pairs with t_u, a split within the
points, ...) are taught to the generator in tests/e2e/schemathesis_hooks.py, for schema-valid
cases only; it says what each one is.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli import processes
from tests.backends import backend_env
from tests.e2e.schemathesis_hooks import CALIBRATED
from tests.e2e.stacks import T_C, T_U
from tests.stack import Stack

# CPython 3.11.7 (this machine's) can raise this inside hypothesis while it builds a
# strategy's repr from a worker thread (gh-106905, an interpreter bug): schemathesis
# reports it as a runtime error of its own, not a finding about the API. With one
# worker it did not occur in our runs (6 of 6 clean, against 4 of 10 failing with
# two); should it still occur, that error alone is retried, once.
INTERPRETER_BUG = "SystemError: AST constructor recursion depth mismatch"
SEED = int(os.environ.get("CALIB_SCHEMATHESIS_SEED", "1"))


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its own stack, with a request budget schemathesis's pace stays under: answered 429,
    most of its requests would test nothing."""
    tmp: Path = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    with backend_env(request.param, tmp) as env:
        env["CALIB_RATE_LIMIT"] = "100000/second"
        # And requests without a token (the missing-auth check sends bursts of them): a 429 there
        # hides the 401 under test (CI saw it once); the budgets have tests of their own.
        env["CALIB_ANONYMOUS_RATE_LIMIT"] = "100000/second"
        # Callbacks the document's example names are allowed (their deliveries fail and retry:
        # nothing answers there, which the run does not look at).
        env["CALIB_WEBHOOK_ALLOWED_HOSTS"] = "hooks.example.com"
        running = Stack(env, tmp / "logs").start()
        try:  # a setup that fails here stops its processes too (they outlived a failed run once)
            # The instrument generated readings are applied to (schemathesis_hooks.CALIBRATED).
            thermometer = {"t_u": T_U, "t_c": T_C, "input_scale": 0.1, "epochs": "auto", "instrument": CALIBRATED}
            assert running.wait(running.submit(thermometer)["id"])["result"]["converged"] is True
            yield running
        finally:
            running.stop()


def run_schemathesis(stack: Stack) -> subprocess.CompletedProcess[str]:
    config = str(Path(__file__).with_name("schemathesis.toml"))  # 414 counts as refusing a request
    command = ["schemathesis", "--config-file", config, "run", f"{stack.url}/openapi.json"]
    command += ["--header", f"Authorization: Bearer {stack.token}"]
    command += ["--checks", "all", "--max-examples", "40", "--seed", str(SEED), "--workers", "1", "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks"}
    return subprocess.run(processes.resolve(command), capture_output=True, text=True, timeout=600, env=env)


def test_schemathesis_finds_nothing(stack: Stack) -> None:
    done = run_schemathesis(stack)
    if done.returncode != 0 and INTERPRETER_BUG in done.stdout + done.stderr:
        done = run_schemathesis(stack)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "Rate limited" not in done.stdout, done.stdout[-3000:]
