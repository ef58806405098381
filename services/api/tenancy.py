"""Whose request this is. Every query is scoped by it; authentication will set it from the token."""

from __future__ import annotations

DEFAULT_TENANT = "default"


def current_tenant() -> str:
    return DEFAULT_TENANT
