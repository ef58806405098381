"""The columnar batch readers against the row-by-row reader of earlier versions
(tests/earlier_batch_reader.py), through the real API on both backends: on a corpus of valid and
invalid CSV, JSON and Parquet batches, the same fits stored (readings, instruments, labels) or the
same problem (status, detail, every error's location)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.runtime.settings import Settings
from tests.earlier_batch_reader import read
from tests.stack import Stack

_MEDIA = {"csv": "text/csv", "json": "application/json", "parquet": "application/vnd.apache.parquet"}


def _csv(rows: list[str], header: str = "series,t_u,t_c") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _long_csv(series: int, points: int, bad_line: int | None = None) -> bytes:
    """Past one block of the CSV reader (4 MiB), with series across the blocks' edges."""
    rng = np.random.default_rng(7)
    lines = ["series,t_u,t_c,instrument"]
    for s in range(series):
        u = np.round(rng.uniform(20, 90, points), 3)
        lines += [f"S{s:05d},{a!r},{round(0.5 * a - 17, 3)!r},TT-{s:05d}" for a in u.tolist()]
    if bad_line is not None:
        lines[bad_line - 1] = lines[1]  # series S00000 again, far from its rows
    return ("\n".join(lines) + "\n").encode()


def _parquet(columns: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


GOOD = {"t_u": [35.7, 55.9, 58.2, 81.9], "t_c": [0.5, 14.0, 15.0, 28.0]}

CORPUS: list[tuple[str, str, bytes]] = [
    ("csv plain", "csv", _csv(["a,1,2", "a,2,3.5", "b,1,1", "b,2,5", "b,3,7"])),
    ("csv instrument", "csv", _csv(["a,1,2,I-1", "a,2,3,I-1", "b,1,1,I-2", "b,2,5,I-2"], "series,t_u,t_c,instrument")),
    ("csv bom crlf blank", "csv", b"\xef\xbb\xbfseries,t_u,t_c\r\na,1,2\r\n\r\na,2,3\r\n"),
    ("csv quoted", "csv", _csv(['"a,1",1,2', '"a,1",2,3', '"b\nc",1,1', '"b\nc",4,2'])),
    ("csv python numbers", "csv", _csv(["a, 1,2", "a,1_0,3", "a,2e1 ,4", "a,\t3,5"])),
    ("csv series as path", "csv", _csv(["x/y,1,2", "x/y,2,3"])),
    ("csv extra columns", "csv", _csv(["a,1,2,n1", "a,2,3,n2"], "series,t_u,t_c,note")),
    ("csv nan", "csv", _csv(["a,1,2", "a,nan,3", "b,1,inf", "b,2,3"])),
    ("csv nan(1)", "csv", _csv(["a,1,2", "a,nan(1),3"])),
    ("csv not a number", "csv", _csv(["a,1,2", "a,2,3", "b,x,1", "b,2,2"])),
    ("csv empty cell", "csv", _csv(["a,1,2", "a,,3"])),
    ("csv short row", "csv", _csv(["a,1,2", "a,2"])),
    ("csv more cells", "csv", _csv(["a,1,2", "a,2,3,4"])),
    ("csv apart", "csv", _csv(["a,1,2", "a,2,3", "b,1,1", "b,2,2", "a,3,4"])),
    ("csv two instruments", "csv", _csv(["a,1,2,I", "a,2,3,J"], "series,t_u,t_c,instrument")),
    ("csv one point", "csv", _csv(["a,1,2", "b,1,1", "b,2,2"])),
    ("csv no rows", "csv", _csv([])),
    ("csv bad header", "csv", _csv(["1,2"], "x,y")),
    ("csv not utf-8", "csv", b"series,t_u,t_c\n\xff,1,2\n"),
    ("csv blocks", "csv", _long_csv(300, 1000)),
    ("csv blocks apart", "csv", _long_csv(300, 1000, bad_line=250_000)),
    ("json plain", "json", _json({"defaults": {"epochs": 7}, "fits": [GOOD, {**GOOD, "labels": {"k": "v"}}]})),
    ("json integers", "json", _json({"fits": [{"t_u": [1, 2, 3], "t_c": [2, 4, 7], "instrument": "TT-1"}]})),
    ("json bool", "json", _json({"fits": [GOOD, {"t_u": [1.0, True], "t_c": [1.0, 2.0]}]})),
    ("json string", "json", _json({"fits": [{"t_u": [1.0, "2"], "t_c": [1.0, 2.0]}]})),
    ("json NaN", "json", b'{"fits": [{"t_u": [1.0, NaN, 3.0], "t_c": [1.0, 2.0, 3.0]}]}'),
    ("json malformed", "json", b'{"fits": [{"t_u": [1.0, 2.0], "t_c": [1.0, 2.0]}'),
    ("json no t_c", "json", _json({"fits": [GOOD, {"t_u": [1.0, 2.0]}, 5]})),
    ("json fits not a list", "json", _json({"fits": {"t_u": [1.0]}})),
    ("json fits empty", "json", _json({"fits": []})),
    ("json no fits", "json", _json({"defaults": {}})),
    ("json top level", "json", _json({"zzz": 1, "defaults": 4, "fits": [{"t_u": 1}], "callback_url": 5})),
    ("json bad defaults", "json", _json({"defaults": {"epochs": -1}, "fits": [GOOD]})),
    ("json bad fits", "json", _json({"fits": [{**GOOD, "epochs": 0}, GOOD, {**GOOD, "t_c": [1.0]}]})),
    ("json fit callback", "json", _json({"fits": [{**GOOD, "callback_url": "https://hooks.example.com/x"}]})),
    ("json huge integer", "json", b'{"fits": [{"t_u": [1, 1' + b"0" * 400 + b'], "t_c": [1.0, 2.0]}]}'),
    ("json split", "json", _json({"defaults": {"validation": {"fraction": 0.25, "seed": 3}}, "fits": [GOOD]})),
    ("json not an object", "json", _json([GOOD])),
    (
        "parquet plain",
        "parquet",
        _parquet({"series": ["a", "a", "b", "b"], "t_u": [1.0, 2.0, 1.0, 3.0], "t_c": [2, 3, 4, 5]}),
    ),
    (
        "parquet integer series, null instrument",
        "parquet",
        _parquet(
            {
                "series": [7, 7, 8, 8],
                "t_u": [1.0, 2.0, 1.0, 3.0],
                "t_c": [2.0, 3, 4, 5],
                "instrument": [None, None, "I", "I"],
            }
        ),
    ),
    ("parquet null reading", "parquet", _parquet({"series": ["a", "a"], "t_u": [1.0, None], "t_c": [2.0, 3.0]})),
    (
        "parquet apart",
        "parquet",
        _parquet({"series": ["a", "b", "b", "a"], "t_u": [1.0, 2, 3, 4], "t_c": [1.0, 2, 3, 4]}),
    ),
]


def _get(stack: Stack, path: str) -> Any:
    """GET within the tenant's request budget: a 429 waits as its Retry-After says."""
    while (answer := stack.http.get(path)).status_code == 429:
        time.sleep(float(answer.headers["Retry-After"]))
    return answer.json()


def _stored(stack: Stack, batch_id: str) -> list[tuple[Any, ...]]:
    fits: list[dict[str, Any]] = []
    url: str | None = f"/v1/batches/{batch_id}/fits?limit=500"
    while url:
        page = _get(stack, url)
        fits += page["items"]
        url = page.get("next")
    found = []
    for fit in fits:
        data = _get(stack, f"/v1/fits/{fit['id']}/data")
        found.append((fit["instrument"], fit["labels"], data["t_u"], data["t_c"]))
    return sorted(found, key=json.dumps)


@pytest.mark.parametrize(("name", "kind", "body"), CORPUS, ids=[case[0] for case in CORPUS])
def test_the_same_fits_or_the_same_problem_as_the_row_by_row_reader(
    stack: Stack, name: str, kind: str, body: bytes
) -> None:
    expected = read(kind, body, {"epochs": 5}, Settings())
    answer = stack.http.post(
        "/v1/batches?epochs=5" if kind != "json" else "/v1/batches",
        content=body,
        headers={"Content-Type": _MEDIA[kind]},
        timeout=120,
    )
    if name == "csv more cells":
        # The one difference, deliberate: a row with more cells than the header names is refused
        # (the row-by-row reader dropped the extra cells without a word).
        assert expected[0] == "stored"
        assert answer.status_code == 400 and answer.json()["errors"] == [
            {"loc": ["line", 3], "msg": "cells do not match the header"}
        ]
        return
    if expected[0] == "refused":
        problem = answer.json()
        assert (answer.status_code, {"detail": problem["detail"], "errors": problem.get("errors")}) == expected[1:]
        return
    assert answer.status_code == 202, answer.text
    if kind == "json":
        assert _stored(stack, answer.json()["id"]) == sorted(expected[1], key=json.dumps)
        return
    stored = _stored(stack, answer.json()["id"])
    assert len(stored) == len(expected[1]) and stored == sorted(expected[1], key=json.dumps)
