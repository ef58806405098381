"""Secrets the service must read back (webhook signing secrets) stored sealed: Fernet (AES-128-CBC
and HMAC-SHA256) under a key that is not in the database, so a copy of the database (a backup, a
dump) holds no usable secret.

The key is CALIB_SECRETS_KEY (a Fernet key: `calib webhooks new-key` prints one), which the API,
the workers and the CLI share. On the embedded default, without it, the key is a file in the data
directory (`secrets.key`, 0600), made on first use. Elsewhere, without it, secrets are stored as
they are and a warning says so once per process. Stored values say what they are: "sealed:" and a
Fernet token, or the secret itself (those written before sealing existed read as they are).
"""

from __future__ import annotations

import logging
import os
from functools import cache

from cryptography.fernet import Fernet, InvalidToken

from shared.runtime.settings import Settings

log = logging.getLogger("calib.sealed")

PREFIX = "sealed:"
KEY_FILE = "secrets.key"


class SecretsKeyMissing(RuntimeError):
    """A sealed value and no key (or another key) to open it with."""


@cache
def _box(key: str) -> Fernet:
    return Fernet(key.encode())


def key_of(settings: Settings) -> str | None:
    if settings.secrets_key:
        return settings.secrets_key
    if not settings.embedded:
        _warn_once()
        return None
    path = settings.ensure_data_dir() / KEY_FILE
    if not path.exists():
        # Made with O_EXCL: two processes starting together keep one key.
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(handle, "w") as out:
                out.write(Fernet.generate_key().decode())
    return path.read_text().strip() or None


@cache
def _warn_once() -> None:
    log.warning("CALIB_SECRETS_KEY is not set: webhook secrets are stored unsealed in the database")


def seal(value: str, settings: Settings) -> str:
    key = key_of(settings)
    return value if key is None else PREFIX + _box(key).encrypt(value.encode()).decode()


def unseal(stored: str, settings: Settings) -> str:
    if not stored.startswith(PREFIX):
        return stored
    key = key_of(settings)
    if key is None:
        raise SecretsKeyMissing("a sealed webhook secret, and CALIB_SECRETS_KEY is not set")
    try:
        return _box(key).decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise SecretsKeyMissing("a webhook secret sealed under another CALIB_SECRETS_KEY") from exc
