"""The database's clock, for leases: every worker and the reconciler read one clock, so a worker
whose own clock runs ahead neither steals live leases nor keeps its own past their end.

`db_now()` is the current time and `lease_until(seconds)` that time plus a lease, as SQL
expressions evaluated by the database: PostgreSQL's now(), SQLite's strftime('now') in the
text form the UTCDateTime columns store there (so text comparisons order correctly).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from shared.store.models import UTCDateTime


class db_now(FunctionElement[Any]):  # noqa: N801  (reads as the SQL function it is)
    type = UTCDateTime()
    inherit_cache = True


class lease_until(FunctionElement[Any]):  # noqa: N801
    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds: float) -> None:
        super().__init__(sa.literal(float(seconds), sa.Float()))


@compiles(db_now, "postgresql")
def _pg_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return "now()"


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: Any, **kw: Any) -> str:
    # Microseconds as UTCDateTime writes them on SQLite ('YYYY-MM-DD HH:MM:SS.ffffff').
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


@compiles(lease_until, "postgresql")
def _pg_lease(element: lease_until, compiler: Any, **kw: Any) -> str:
    return f"(now() + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(lease_until, "sqlite")
def _sqlite_lease(element: lease_until, compiler: Any, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', {seconds})) || '000')"
