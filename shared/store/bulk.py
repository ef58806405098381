"""Many rows of one table in one command: PostgreSQL's COPY, SQLite's executemany; and the
INSERT that upserts, in either dialect.

The API's batch insert (10,000 fits in a request) and the worker's results of a chunk go
through here. Values are converted by each column's own SQLAlchemy type, exactly as an INSERT
would bind them (JSON serialized, times made UTC), and streamed in COPY's binary format, each
value as its column's type (_copy_type). Loss blocks have their own binary COPY
(shared/store/loss_blocks.py).
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from shared.store.built_once import core
from shared.store.json_text import json_text

# Fewer rows than this are updated by SQLAlchemy's executemany: a temporary table costs more.
_COPY_UPDATES_FROM = 100


# The INSERT that upserts: PostgreSQL's and SQLite's spell on_conflict_do_nothing,
# on_conflict_do_update and `excluded` alike.
UpsertInsert = postgresql.Insert | sqlite.Insert


def upsert_insert(session: so.Session) -> Callable[[Any], UpsertInsert]:
    """The INSERT construct of the session's dialect (UpsertInsert)."""
    return upsert_insert_of(session.get_bind().dialect.name)


def upsert_insert_of(dialect: str) -> Callable[[Any], UpsertInsert]:
    """upsert_insert by the dialect's name: for statements built once per dialect."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def insert_rows(session: so.Session, model: type[so.DeclarativeBase], rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (dicts with the same keys) into `model`'s table in the caller's transaction."""
    insert_row_slices(session, model, [rows])


def insert_row_slices(
    session: so.Session, model: type[so.DeclarativeBase], slices: Iterable[Sequence[Mapping[str, Any]]]
) -> None:
    """insert_rows for rows built a slice at a time (a large batch's fits): on PostgreSQL one COPY
    takes every slice, so the database stores one slice while the next is being built, where a
    COPY per slice waited for the database at the end of each."""
    parts = (part for part in slices if part)
    first = next(parts, None)
    if first is None:
        return
    names = list(first[0])
    every = itertools.chain([first], parts)
    del first  # each slice's rows are freed once they are stored
    if not _postgresql(session):
        for part in every:
            session.execute(sa.insert(model), list(part))
        return
    table = _table(model)
    _no_default_left_out(table, names)
    _copy(session, table, table.name, names, itertools.chain.from_iterable(every))


def update_rows(session: so.Session, model: type[so.DeclarativeBase], rows: Sequence[Mapping[str, Any]]) -> None:
    """Set each row's columns on the row of `model` with its `id`, in the caller's transaction.
    On PostgreSQL, rows with the same columns go by COPY into a temporary table and one UPDATE."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for names, group in groups.items():
        if _postgresql(session) and len(group) >= _COPY_UPDATES_FROM:
            _update_by_copy(session, _table(model), list(names), group)
        else:
            set_ = [{"row_id": row["id"]} | {name: row[name] for name in names if name != "id"} for row in group]
            core(session).execute(_updating(_table(model)), set_)


@functools.cache
def _updating(table: sa.Table) -> sa.Update:
    """UPDATE … WHERE id = :row_id, each row's other columns set (Core takes the parameters named
    as columns for the SET clause): built once per table, and run as Core. Through the ORM's
    bulk update, a single fit's write walked all 70 attributes of Fit for each row."""
    return sa.update(table).where(table.c.id == sa.bindparam("row_id"))


def unnested(**columns: Any) -> sa.TableValuedAlias:
    """PostgreSQL's rows of parallel arrays: `unnest(:ids, :attempts) AS (id, attempt)` for
    unnested(id=sa.String, attempt=sa.Integer), each column's array bound as its name plus "s".
    A statement built once on it takes any count of rows, where a VALUES list of each count is a
    statement of its own."""
    arrays = (sa.bindparam(name + "s", type_=postgresql.ARRAY(element)) for name, element in columns.items())
    return sa.func.unnest(*arrays).table_valued(*columns).render_derived()


def _update_by_copy(session: so.Session, table: sa.Table, names: list[str], rows: Sequence[Mapping[str, Any]]) -> None:
    staged = f"_staged_{table.name}"
    # Only the columns written, with the table's types and without its constraints.
    columns = ", ".join(names)
    session.execute(
        sa.text(f"CREATE TEMP TABLE {staged} ON COMMIT DROP AS SELECT {columns} FROM {table.name} WITH NO DATA")
    )
    _copy(session, table, staged, names, rows)
    assignments = ", ".join(f"{name} = {staged}.{name}" for name in names if name != "id")
    session.execute(sa.text(f"UPDATE {table.name} SET {assignments} FROM {staged} WHERE {table.name}.id = {staged}.id"))
    session.execute(sa.text(f"DROP TABLE {staged}"))  # a second group in this transaction stages again


def _copy(session: so.Session, table: sa.Table, into: str, names: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    dialect = session.get_bind().dialect
    # Each column's conversion as an INSERT binds it; only the columns that have one are touched
    # (a fit's row has 51 values, 17 of them converted).
    converted = [(i, process) for i, name in enumerate(names) if (process := _processor(table.c[name], dialect))]
    values_of = operator.itemgetter(*names)
    dbapi = session.connection().connection.dbapi_connection
    assert isinstance(dbapi, psycopg.Connection), "calib's PostgreSQL driver is psycopg 3"
    with dbapi.cursor() as cursor, cursor.copy(f"COPY {into} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([_copy_type(table.c[name]) for name in names])
        for row in rows:
            values = list(values_of(row)) if len(names) > 1 else [values_of(row)]
            for i, process in converted:
                values[i] = process(values[i])
            copy.write_row(values)


# A column's type as psycopg names it where SQLAlchemy's name is not one of psycopg's.
_PSYCOPG_NAMES = {"float": "float8", "double precision": "float8"}
# COPY is PostgreSQL's, and the names of its types are the same for every connection.
_POSTGRESQL = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


@functools.cache
def _copy_type(column: sa.Column[Any]) -> str:
    """The type a value of `column` is sent as in COPY's binary format, which has no text to parse:
    a float is its 8 bytes, not its digits, bytea its bytes, not their hex (a 10,000-fit batch's
    rows took 0.11 s of the API's CPU to format as text, 0.013 s as binary). A JSON column's value
    is its text (_processor), sent as text: json's binary form is its text."""
    if isinstance(column.type, postgresql.JSONB):
        raise ValueError(f"{column}: jsonb's binary form is not its text; COPY sends JSON as text")
    if isinstance(column.type, sa.JSON):
        return "text"
    name = column.type.compile(dialect=_POSTGRESQL).lower().split("(")[0]
    name = _PSYCOPG_NAMES.get(name, name)
    if psycopg.adapters.types.get(name) is None:
        raise ValueError(f"{column}: no psycopg type named {name!r} to COPY it as")
    return name


def _processor(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    if isinstance(column.type, sa.JSON):
        # COPY takes a JSON column's text as it is (sent as text, _copy_type): the same text an
        # INSERT binds (the engine's json_serializer), without psycopg's Json wrapper and its
        # dumper, a Python call each per value (five a fit). None as SQLAlchemy binds it: SQL
        # NULL where the column is none_as_null, JSON null elsewhere.
        return functools.partial(_json_value, none_as_null=column.type.none_as_null)
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _json_value(value: Any, none_as_null: bool) -> str | None:
    if isinstance(value, sa.sql.elements.Null) or (value is None and none_as_null):
        return None
    return json_text(None if value is sa.JSON.NULL else value)


def _postgresql(session: so.Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _table(model: type[so.DeclarativeBase]) -> sa.Table:
    table = model.__table__
    assert isinstance(table, sa.Table)
    return table


def _no_default_left_out(table: sa.Table, names: Sequence[str]) -> None:
    """COPY applies the database's defaults only: a column whose default is SQLAlchemy's (Python
    side) must be in the rows, or it would be NULL where an INSERT would have filled it."""
    missing = [
        column.name
        for column in table.columns
        if column.name not in names and column.default is not None and column.server_default is None
    ]
    if missing:
        raise ValueError(f"rows for COPY into {table.name} leave out {missing}, whose defaults only SQLAlchemy knows")
