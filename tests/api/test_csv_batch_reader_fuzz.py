"""The CSV batch reader (services/api/csv_table.py: Arrow's CSV reader, a block at a time) against the
reader of earlier versions (tests/earlier_batch_reader.py: Python's csv module over the whole body),
on generated bodies: headers in any order, with extra, quoted or repeated columns; cells quoted,
padded, holding commas, quotes, line breaks, NUL and Unicode line separators; numbers as Python's
float() reads them and not; instruments that change inside a series; series apart; rows with a cell
too few or too many; blank lines; LF, CRLF or CR alone; a byte-order mark; no final line break.

The same fits stored, or the same problem (status, detail, every error's location), except where
calib refuses on purpose what the earlier reader guessed at (docs/api.md, "Batches"): a row whose
cells do not match the header, and a header naming a column calib reads twice (400 either way)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.earlier_batch_reader import read
from tests.in_process import answered_problem, assert_answers_as

_READ_COLUMNS = ("series", "t_u", "t_c", "instrument")
_NUMBER = st.one_of(
    st.integers(-50, 150).map(str),
    st.floats(-1e3, 1e3, allow_nan=False).map(repr),
    # Python's float() reads these; Arrow reads some of them.
    st.sampled_from(["1e3", " 3", ".5", "5.", "+5", "-0", "\u0661", "\uff11", "1_0", "7 ", "\t8", "1e-310", "1e400"]),
)
_NOT_ALWAYS_A_NUMBER = st.sampled_from(
    ["", "x", '"4"', "0x10", "nan", "NaN", "inf", "infinity", "nan(1)", "1,5", '"1,5"', "1e", "--1", "1 2"]
)
_READING = st.one_of(*[_NUMBER] * 12, _NOT_ALWAYS_A_NUMBER)
_SERIES = st.sampled_from(
    ["a", "b", "c", '"a"', "a b", " a", "\u00e9", "1", "01", "", "x/y", '"q,r"', '"m\nn"', '"d""e"', 'a"b']
    + ["NULL", "N/A", "True", "\x00", '"a\rb"', '"x\r\ny"', ' "a"', '"a" ', "a\u2028b", "\ufeff", "#c"]
)
_INSTRUMENT = st.sampled_from(["I", "J", "", "NA", '"I"', "TT-1", "null"])
_HEADER = st.sampled_from(
    [
        ["series", "t_u", "t_c"],
        ["t_u", "series", "t_c"],
        ["series", "t_u", "t_c", "instrument"],
        ["instrument", "t_c", "t_u", "series"],
        ["series", "t_u", "t_c", "note"],
        ["series", "t_u", "t_c", "note", "note"],
        ['"series"', "t_u", '"t_c"'],
        ["series", "t_u", "t_c", '"a,b"'],
        [" series", "t_u", "t_c"],
        ["series", "t_u", "t_c", "T_U"],
        ["series", "t_u", "t_c", "series"],
        ["series", "t_u", "instrument", "t_c", "instrument"],
    ]
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    header = draw(_HEADER)
    lines = [",".join(header)]
    for series in draw(st.lists(_SERIES, min_size=1, max_size=3)):
        instrument = draw(_INSTRUMENT)
        for _ in range(draw(st.integers(1, 6))):
            cells = []
            for column in header:
                if column in ("series", '"series"'):
                    cells.append(series)
                elif column in ("t_u", "t_c", '"t_c"'):
                    cells.append(draw(_READING))
                elif column == "instrument":
                    cells.append(draw(_INSTRUMENT) if draw(st.integers(0, 3)) == 0 else instrument)
                else:
                    cells.append(draw(st.sampled_from(["n", "", '"x,y"'])))
            if draw(st.integers(0, 80)) == 0:
                cells.pop()
            if draw(st.integers(0, 80)) == 0:
                cells.append("z")
            lines.append(",".join(cells))
        if draw(st.integers(0, 8)) == 0:
            lines.append("")
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    body = (end.join(lines) + (end if draw(st.booleans()) else "")).encode()
    return b"\xef\xbb\xbf" + body if draw(st.integers(0, 6)) == 0 else body


def _rows(body: bytes) -> tuple[list[str], list[dict[str, Any]]] | None:
    """The header and rows as the csv module reads them; None where it cannot."""
    try:
        reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline=""))
        return list(reader.fieldnames or []), list(reader)
    except csv.Error:
        return None


def _refused_on_purpose(body: bytes) -> bool:
    """A body the earlier reader guessed at and calib refuses (400): see the module's docstring."""
    read_by_csv = _rows(body)
    if read_by_csv is None:
        return True
    header, rows = read_by_csv
    twice = any(header.count(column) > 1 for column in _READ_COLUMNS)
    return twice or any(None in row or None in row.values() for row in rows)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies())
def test_the_same_fits_or_the_same_problem_as_the_csv_module(
    make_client: Callable[..., FlaskClient], body: bytes
) -> None:
    client = make_client(rate_limit="1000000/minute")  # the app is made once per test, its client each example
    answer = client.post("/v1/batches?epochs=5", data=body, content_type="text/csv")
    try:
        expected = read("csv", body, {"epochs": 5}, client.application.extensions["calib"].settings)
    except csv.Error:
        expected = ("unreadable",)
    if _refused_on_purpose(body):
        # A 400, unless a row before the one calib refuses holds an error both readers name.
        same_problem = expected[0] == "refused" and answered_problem(answer) == expected[1:]
        assert answer.status_code == 400 or same_problem, answer.get_data(as_text=True)
        return
    assert_answers_as(client, answer, expected)
