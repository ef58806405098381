"""Where the client finds the service and its token, when it is not told: the one place the
client and the `calib` CLI resolve them (the client installs without the server's code)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def default_url() -> str:
    return os.environ.get("CALIB_API_URL") or DEFAULT_URL


def data_dir() -> Path:
    """The embedded service's data directory: CALIB_DATA_DIR, else the per-user default that the
    server's settings use too (shared/runtime/settings.py)."""
    given = os.environ.get("CALIB_DATA_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "calib"


def default_token() -> str:
    """CALIB_TOKEN, else the local token that `calib up` writes for the embedded default."""
    token = os.environ.get("CALIB_TOKEN", "")
    if token:
        return token
    try:
        return (data_dir() / "token").read_text().strip()
    except OSError:
        return ""
