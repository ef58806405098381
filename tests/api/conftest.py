from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from services.api import create_app
from shared.settings import Settings


@pytest.fixture
def client(backend: Settings) -> Iterator[FlaskClient]:
    """The real app on a real database and broker (no worker runs: fits stay queued)."""
    app = create_app(backend)
    with app.test_client() as client:
        yield client
    app.extensions["calib"].db.dispose()
