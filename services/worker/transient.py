"""Database errors that pass: retried with backoff instead of failing the work they interrupt.

Transient: the connection was lost or refused (a PostgreSQL restart or failover), a
serialization failure or deadlock, SQLite's "database is locked" past the busy timeout:
SQLAlchemy raises these as OperationalError (or InterfaceError, or any DBAPIError that
invalidated its connection). Anything else (a constraint, a value the column refuses) is
a fault of the request or of the code, and is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

log = logging.getLogger("calib.worker")
T = TypeVar("T")


def is_transient(error: BaseException) -> bool:
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return isinstance(error, sa_exc.DBAPIError) and bool(error.connection_invalidated)


def retrying(action: Callable[[], T], what: str, seconds: float) -> T:
    """action(), again after each transient error (backoff from 50 ms, doubling to 2 s) for up to
    `seconds`; then the last error is raised."""
    deadline = time.monotonic() + seconds
    pause = 0.05
    while True:
        try:
            return action()
        except Exception as error:
            if not is_transient(error) or time.monotonic() + pause > deadline:
                raise
            log.warning(
                "%s: transient database error, retrying in %.2f s: %s", what, pause, str(error).splitlines()[0][:200]
            )
            time.sleep(pause)
            pause = min(2.0, pause * 2)
