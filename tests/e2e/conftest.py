from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import backend_env
from tests.stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here starts real processes: marked e2e, which `make test-fast` leaves out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running API and worker, once per backend for the module."""
    tmp: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
    with backend_env(request.param, tmp) as env:
        running = Stack(env, tmp / "logs").start()
        yield running
        running.stop()
