from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.api import create_app
from shared import tokens
from shared.settings import Settings


def authorized(app: Flask, tenant: str) -> FlaskClient:
    """A test client of `app` carrying a fresh token of `tenant`."""
    client = app.test_client()
    token = tokens.create(app.extensions["calib"].db, tenant).token
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def make_client(backend: Settings) -> Iterator[Callable[..., FlaskClient]]:
    """Clients of the real app on a real database and broker (no worker runs: fits stay
    queued), each with a fresh token of `tenant`; settings overrides make a separate app."""
    apps: dict[str, Flask] = {}

    def make(tenant: str = "tenant-a", **overrides: Any) -> FlaskClient:
        key = repr(sorted(overrides.items()))
        if key not in apps:
            apps[key] = create_app(backend.model_copy(update=overrides))
        return authorized(apps[key], tenant)

    yield make
    for app in apps.values():
        app.extensions["calib"].db.dispose()


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    return make_client()
