"""Bulk writes (shared/store/bulk.py): COPY on PostgreSQL, executemany on SQLite, the same rows either way."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api.submit import fit_rows, insert_fit
from shared.contract.schemas import FitCreate
from shared.domain.packing import unpack_f64
from shared.store import bulk
from shared.store.db import Database
from shared.store.json_text import json_text
from shared.store.models import SUCCEEDED, Fit

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 100}


def _db(client: FlaskClient) -> Database:
    db = client.application.extensions["calib"].db
    assert isinstance(db, Database)
    return db


def _rows(count: int) -> list[dict[str, object]]:
    specs = [
        FitCreate.model_validate(FIT | {"labels": {"row": str(i), "note": 'a "quoted" back\\slash, comma, é'}})
        for i in range(count)
    ]
    return fit_rows(specs, "tenant-bulk")


@pytest.mark.parametrize("count", [3, 250])  # below and above the COPY threshold of updates
def test_rows_inserted_and_updated_in_bulk_read_back_as_written(client: FlaskClient, count: int) -> None:
    db, rows = _db(client), _rows(count)
    with db.session(write=True) as session:
        bulk.insert_rows(session, Fit, rows)
    finished = dt.datetime(2026, 11, 28, 12, 30, tzinfo=dt.UTC)
    updates = [
        {"id": row["id"], "status": SUCCEEDED, "w": 0.5 + i, "b": None, "finished_at": finished, "checkpoint": None}
        for i, row in enumerate(rows)
    ] + [{"id": rows[0]["id"], "epochs_done": 100}]  # a second shape of row: its own statement
    with db.session(write=True) as session:
        bulk.update_rows(session, Fit, updates)
    with db.session() as session:
        stored = {fit.id: fit for fit in session.scalars(sa.select(Fit).where(Fit.tenant == "tenant-bulk"))}
        assert len(stored) == count
        for i, row in enumerate(rows):
            fit = stored[str(row["id"])]
            assert fit.labels == row["labels"] and unpack_f64(fit.t_u).tolist() == FIT["t_u"]
            assert fit.created_at == row["created_at"] and fit.finished_at == finished
            assert (fit.status, fit.w, fit.b, fit.checkpoint) == (SUCCEEDED, 0.5 + i, None, None)
            assert fit.epochs_done == (100 if i == 0 else 0)
        # None is stored as SQLAlchemy's UPDATE stores it, whichever path wrote it: SQL NULL for a
        # number, JSON null for a JSON column (none_as_null is off).
        mine = Fit.tenant == "tenant-bulk"
        assert session.scalar(sa.select(sa.func.count()).where(mine, Fit.b.is_(None))) == count
        assert session.scalar(sa.select(sa.func.count()).where(mine, Fit.checkpoint.is_(None))) == 0
        # A none_as_null column's None is SQL NULL, as an INSERT binds it (COPY converts JSON itself).
        assert session.scalar(sa.select(sa.func.count()).where(mine, Fit.chi2.is_(None))) == count


def test_a_json_column_holds_the_same_text_whether_copied_or_inserted(client: FlaskClient) -> None:
    db = _db(client)
    copied, inserted = _rows(2)
    with db.session(write=True) as session:
        bulk.insert_rows(session, Fit, [copied])
        insert_fit(session, inserted | {"labels": copied["labels"]})
    with db.session() as session:
        texts = session.scalars(
            sa.select(sa.cast(Fit.labels, sa.Text)).where(Fit.id.in_([copied["id"], inserted["id"]]))
        ).all()
    assert texts == [json_text(copied["labels"])] * 2


@pytest.mark.parametrize(
    "text",
    [
        '{"big": 123456789012345678901234567890, "tiny": 5e-324, "e": "\\u00e9", "nested": [null, true, 0.1]}',
        "null",
        # Texts only an earlier version could have written: Python's json module wrote NaN (on SQLite;
        # PostgreSQL's json refuses it), and a lone surrogate as its escape (both keep that).
        '{"loss": NaN, "far": 1e400}',
        '{"name": "\\ud800"}',
    ],
)
def test_a_json_column_reads_back_as_the_json_module_reads_its_text(client: FlaskClient, text: str) -> None:
    db, row = _db(client), _rows(1)[0]
    postgres = db.engine.dialect.name == "postgresql"
    if postgres and "NaN" in text:
        pytest.skip("PostgreSQL's json type refuses NaN: no row holds it")
    with db.session(write=True) as session:
        bulk.insert_rows(session, Fit, [row])
        cast = "CAST(:text AS json)" if postgres else ":text"
        session.execute(
            sa.text(f"UPDATE fits SET optimizer_options = {cast} WHERE id = :id"), {"text": text, "id": row["id"]}
        )
    with db.session() as session:
        read = session.scalar(sa.select(Fit.optimizer_options).where(Fit.id == row["id"]))
    # json.dumps writes NaN as NaN, so the two sides compare as texts where == would not (NaN != NaN).
    assert json.dumps(read) == json.dumps(json.loads(text))


def test_a_copy_that_would_leave_out_a_python_default_is_refused(client: FlaskClient) -> None:
    db = _db(client)
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the embedded default inserts through SQLAlchemy, which applies the defaults")
    row = _rows(1)[0]
    del row["attempt"]  # its default (0) is SQLAlchemy's, not the database's
    with pytest.raises(ValueError, match="attempt"), db.session(write=True) as session:
        bulk.insert_rows(session, Fit, [row])


def test_a_column_copy_cannot_name_is_refused_not_sent_as_text() -> None:
    assert bulk._copy_type(Fit.__table__.c.w) == "float8"
    assert bulk._copy_type(Fit.__table__.c.labels) == "text"  # json: its text
    with pytest.raises(ValueError, match="no psycopg type"):
        # A PostgreSQL enum is a type of the database's: psycopg knows it only once registered.
        bulk._copy_type(sa.Column("kind", sa.Enum("line", "polynomial", name="model_kind")))


def test_rows_built_a_slice_at_a_time_are_stored_whole_by_one_insert(client: FlaskClient) -> None:
    db, rows = _db(client), _rows(5)
    with db.session(write=True) as session:
        bulk.insert_row_slices(session, Fit, iter([[], rows[:2], [], rows[2:]]))  # empty slices skipped
    with db.session() as session:
        stored = session.scalars(sa.select(Fit.id).where(Fit.tenant == "tenant-bulk")).all()
    assert sorted(stored) == sorted(row["id"] for row in rows)
