from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.backends import SHARED_REDIS_URL, backend_env
from tests.stack import Stack

# The longest modules, longest first (wall seconds per module in one `make test` run on two cores,
# 2026-12-05). `make test` passes --no-loadscope-reorder so that pytest-xdist hands out whole modules in
# this order (by default it orders them by their number of tests, which put the longest fault
# modules last but one and left one process running alone at the end). test_schemathesis.py, which
# keeps a core busy, is second so that it starts beside test_faults.py, which mostly waits for leases.
LONGEST_FIRST = [
    "test_faults.py",  # 202
    "test_schemathesis.py",  # 136
    "test_worker_faults.py",  # 193
    "test_webhooks_over_http.py",  # 118
    "test_waiting.py",  # 52 (tests/e2e's), 23 (tests/api's)
    "test_ledger.py",  # 50
    "test_cli.py",  # 39
    "test_body_budgets.py",  # 35
    "test_instruments.py",  # 34
    "test_fairness.py",  # 31
    "test_dashboard.py",  # 30 (Chromium, where it is installed)
    "test_generated_client.py",  # 30
    "test_batch_parameter_columns.py",  # 28
    "test_oversize_bodies.py",  # 25
    "test_hostile_inputs.py",  # 23
    "test_batch_readers.py",  # 22
    "test_operations.py",  # 22
    "test_convergence_over_http.py",  # 21
    "test_webhooks.py",  # 21
    "test_quotas_over_http.py",  # 20
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here starts real processes: marked e2e, which `make test-fast` leaves out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


class SharedStacks:
    """One running API and worker per backend for this pytest process, started when a module first
    asks for it: starting a stack (migrations, a token, gunicorn, Celery with torch) costs 10–40 s on
    two cores, and most modules only submit fits and read their own."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp, self.running, self.exits = tmp, dict[str, Stack](), ExitStack()

    def of(self, kind: str) -> Stack:
        if kind not in self.running:
            tmp = self.tmp.mktemp(f"shared-stack-{kind}")
            env = self.exits.enter_context(backend_env(kind, tmp, SHARED_REDIS_URL if kind != "embedded" else ""))
            stack = Stack(env, tmp / "logs").start()
            self.exits.callback(stack.stop)
            self.running[kind] = stack
        return self.running[kind]


@pytest.fixture(scope="session")
def shared_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedStacks]:
    stacks = SharedStacks(tmp_path_factory)
    with stacks.exits:
        yield stacks


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, shared_stacks: SharedStacks
) -> Iterator[Stack]:
    """A running API and worker per backend: the process's shared one, or the module's own where the
    module says `OWN_STACK = True` (it reads process-wide figures, or sets what others would see),
    with the settings of its `OWN_STACK_ENV` if it has one.
    A module leaves nothing running on a shared stack: its unfinished fits are cancelled after it."""
    if getattr(request.module, "OWN_STACK", False):
        tmp: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
        with backend_env(request.param, tmp) as env:
            running = Stack({**env, **getattr(request.module, "OWN_STACK_ENV", {})}, tmp / "logs").start()
            yield running
            running.stop()
        return
    shared = shared_stacks.of(request.param)
    yield shared
    shared.cancel_unfinished()
