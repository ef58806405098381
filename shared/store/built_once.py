"""Statements built once, and run as Core.

Statements that every request or every claim runs are built once, at import (or once per process
where they name it), with their values bound at execution. SQLAlchemy keeps a statement's cache key
on the statement object: one built anew for each call was walked whole again to find its compiled
form: about a tenth of a submission's CPU (benchmarks/README.md, twentieth sitting). Those that
need nothing of the ORM run as Core on `core(session)`: with the worker's statements built once and
run so, a chunk of one fit took 6.8-9.6 ms of CPU in one process where it took 9.2-11.9 ms
(twenty-first sitting).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so


def core(session: so.Session) -> sa.Connection:
    """The session's connection, for a statement run as Core (the ORM's execution machinery, with
    nothing to do for it, cost as much again as building it), after a flush of what the session
    holds, as the session's own execute does: an object added before is in the database first."""
    session.flush()
    return session.connection()
