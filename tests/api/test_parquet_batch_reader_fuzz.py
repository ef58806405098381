"""The Parquet batch reader (services/api/parquet.py: record batches into a LongTable) against the
reader of earlier versions (tests/earlier_batch_reader.py: the file read whole, row by row), on
generated files: series as text, large text, dictionaries or integers; readings as float64,
float32 or integers, with nulls, NaN, infinities, the largest and the smallest float; an instrument
column (text, large text, dictionaries) with nulls beside names and beside series that cannot name
an instrument, and cells naming the series itself; series apart; an extra column; row groups of one
row to all of them. The same fits stored, or the same problem (status, detail, every error's
location)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.earlier_batch_reader import read
from tests.in_process import assert_answers_as

_READING = st.floats(-1e3, 1e3, allow_nan=False)
_ODD_READING = st.one_of(
    st.none(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, 0.0]), st.integers(-100, 100).map(float)
)
_SERIES = st.sampled_from(["a", "b", "c", "", "x/y", "\u00e9", "a b", "\x00"])
_INSTRUMENT = st.sampled_from([None, "I", "J", "", "TT-1", "x/y"])
_NUMBER_TYPES = [pa.float64(), pa.float32(), pa.int64(), pa.int32()]


def _numbers(values: list[float | None], kind: pa.DataType) -> pa.Array:
    if pa.types.is_integer(kind):
        whole = [None if v is None or not math.isfinite(v) or abs(v) > 1e9 else int(v) for v in values]
        return pa.array(whole, kind)
    return pa.array(values, pa.float64()).cast(kind, safe=False)


def _text(values: list[Any], kind: str) -> pa.Array:
    if kind == "dictionary":
        return pa.array(values, pa.string()).dictionary_encode()
    return pa.array(values, pa.large_string() if kind == "large" else pa.string())


@st.composite
def _files(draw: st.DrawFn) -> bytes:
    rows: list[tuple[str, float | None, float | None, str | None]] = []
    for series in draw(st.lists(_SERIES, min_size=1, max_size=4)):
        # A cell may name the series itself, beside nulls (which name the series' own instrument).
        instruments = st.one_of(_INSTRUMENT, st.just(series))
        instrument = draw(instruments)
        for _ in range(draw(st.integers(1, 5))):
            t_u = draw(_ODD_READING) if draw(st.integers(0, 10)) == 0 else draw(_READING)
            t_c = draw(_ODD_READING) if draw(st.integers(0, 10)) == 0 else draw(_READING)
            rows.append((series, t_u, t_c, draw(instruments) if draw(st.integers(0, 3)) == 0 else instrument))
    names = [row[0] for row in rows]
    series_kind = draw(st.sampled_from(["text", "large", "dictionary", "integer"]))
    if series_kind == "integer":
        numbered = {name: i for i, name in enumerate(sorted(set(names)))}
        series = pa.array([numbered[name] for name in names], pa.int64())
    else:
        series = _text(names, series_kind)
    kind = draw(st.sampled_from(_NUMBER_TYPES))
    columns = {
        "t_c": _numbers([r[2] for r in rows], kind),
        "series": series,
        "t_u": _numbers([r[1] for r in rows], kind),
    }
    if draw(st.booleans()):
        columns["instrument"] = _text([r[3] for r in rows], draw(st.sampled_from(["text", "large", "dictionary"])))
    if draw(st.booleans()):
        columns["note"] = pa.array(["n"] * len(rows))
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, row_group_size=draw(st.sampled_from([1, 2, 3, 1000])))
    return out.getvalue()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_files())
def test_the_same_fits_or_the_same_problem_as_reading_the_file_whole(
    make_client: Callable[..., FlaskClient], body: bytes
) -> None:
    client = make_client(rate_limit="1000000/minute")  # the app is made once per test, its client each example
    answer = client.post("/v1/batches?epochs=5", data=body, content_type="application/vnd.apache.parquet")
    expected = read("parquet", body, {"epochs": 5}, client.application.extensions["calib"].settings)
    assert_answers_as(client, answer, expected)
