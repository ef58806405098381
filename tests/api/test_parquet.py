"""Parquet in and out of batches (API.md "Parquet"), on both backends: the same batch sent as CSV and
as Parquet gives the same fits, and its results as Parquet are the CSV's, typed."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from flask.testing import FlaskClient

from services.api.parquet import MEDIA_TYPE
from tests.in_process import run_batch

OPTIONS = "epochs=3000&input_scale=0.1"


def _table(seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    series, t_u, t_c = [], [], []
    for i in range(12):
        u = rng.uniform(20, 90, 8)
        series += [f"S{i}"] * u.size
        t_u += u.tolist()
        t_c += (0.5 * u - 17 + rng.normal(0, 1, u.size)).tolist()
    return pa.table({"series": series, "t_u": t_u, "t_c": t_c})


def _parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _csv(table: pa.Table) -> str:
    rows = zip(*(table.column(name).to_pylist() for name in ("series", "t_u", "t_c")), strict=True)
    return "series,t_u,t_c\n" + "".join(f"{s},{u!r},{c!r}\n" for s, u, c in rows)


def test_the_same_batch_as_csv_and_as_parquet_gives_the_same_results(client: FlaskClient) -> None:
    table = _table(1)
    by_csv = client.post(f"/v1/batches?{OPTIONS}", data=_csv(table), content_type="text/csv")
    by_parquet = client.post(f"/v1/batches?{OPTIONS}", data=_parquet(table), content_type=MEDIA_TYPE)
    assert by_csv.status_code == by_parquet.status_code == 202, by_parquet.get_json()
    ids = [by_csv.get_json()["id"], by_parquet.get_json()["id"]]
    for batch_id in ids:
        assert run_batch(client, batch_id) == 12

    as_csv = list(
        csv.DictReader(io.StringIO(client.get(f"/v1/batches/{ids[0]}/fits?format=csv").get_data(as_text=True)))
    )
    got = client.get(f"/v1/batches/{ids[1]}/fits?format=parquet")
    assert got.status_code == 200 and got.mimetype == MEDIA_TYPE
    as_parquet = pq.read_table(io.BytesIO(got.get_data())).to_pylist()
    assert list(as_parquet[0]) == list(as_csv[0])  # the same columns, in the same order
    by_series = {row["series"]: row for row in as_parquet}
    assert len(by_series) == len(as_csv) == 12
    for row in as_csv:
        other = by_series[row["series"]]
        assert other["status"] == row["status"] == "succeeded"
        assert other["instrument"] == row["instrument"] == row["series"]
        for name in ("w", "b", "w_raw", "b_raw", "loss", "w_opt", "b_opt", "se_w", "se_b", "r2"):
            assert other[name] == float(row[name]), name  # the same fit, to the last bit
        assert other["epochs_done"] == int(row["epochs_done"]) == 3000
        assert other["converged"] == (row["converged"] == "true")


def test_a_parquet_batch_with_an_instrument_column(client: FlaskClient) -> None:
    table = _table(2).append_column("instrument", pa.array([f"TT-{s}" for s in _table(2).column("series").to_pylist()]))
    r = client.post(f"/v1/batches?{OPTIONS}", data=_parquet(table), content_type=MEDIA_TYPE)
    assert r.status_code == 202
    run_batch(client, r.get_json()["id"])
    assert client.get("/v1/instruments/TT-S3").get_json()["calibrations"] == 1


def test_a_body_that_is_not_parquet_or_lacks_columns_is_400(client: FlaskClient) -> None:
    assert client.post("/v1/batches", data=b"PAR1 not really", content_type=MEDIA_TYPE).status_code == 400
    wrong = _parquet(pa.table({"series": ["a", "a"], "x": [1.0, 2.0]}))
    r = client.post("/v1/batches", data=wrong, content_type=MEDIA_TYPE)
    assert r.status_code == 400 and "series,t_u,t_c" in r.get_json()["detail"]


def test_a_parquet_file_naming_a_column_it_reads_twice_is_400_naming_it(client: FlaskClient) -> None:
    # A 500 before (the schema's field lookup raised): which of two `series` columns is meant is the
    # client's to say, as in a CSV header. A column calib does not read may repeat.
    table = _table(3)
    for name in ("series", "t_u"):
        twice = table.append_column(name, table.column(name))
        answer = client.post(f"/v1/batches?{OPTIONS}", data=_parquet(twice), content_type=MEDIA_TYPE)
        assert answer.status_code == 400, answer.get_json()
        assert answer.get_json()["errors"] == [{"loc": ["columns", name], "msg": "named more than once"}]
    notes = pa.array(["x"] * table.num_rows)
    repeated = table.append_column("note", notes).append_column("note", notes)
    assert client.post(f"/v1/batches?{OPTIONS}", data=_parquet(repeated), content_type=MEDIA_TYPE).status_code == 202


def test_a_null_instrument_cell_names_the_series_own_instrument_or_none(client: FlaskClient) -> None:
    # Found by the Parquet reader's fuzzer: a null cell was filled with the series' name as it is, so
    # in a series named "x/y" (which names no instrument) a null cell and a cell "x/y" were one
    # instrument, and the fit was stored with none; the row-by-row reader refuses a second instrument.
    for name in ("x/y", ""):
        table = {"series": [name] * 3, "t_u": [1.0, 2.0, 3.0], "t_c": [2.0, 3.0, 4.5], "instrument": [None, name, name]}
        answer = client.post(f"/v1/batches?{OPTIONS}", data=_parquet(pa.table(table)), content_type=MEDIA_TYPE)
        assert answer.status_code == 422, answer.get_json()
        assert answer.get_json()["errors"][0]["loc"] == ["series", name]
        assert "names a second instrument" in answer.get_json()["errors"][0]["msg"]
    # A null cell beside the series' own name is one instrument, as before.
    table = {"series": ["TT-9"] * 3, "t_u": [1.0, 2.0, 3.0], "t_c": [2.0, 3.0, 4.5], "instrument": [None, "TT-9", None]}
    answer = client.post(f"/v1/batches?{OPTIONS}", data=_parquet(pa.table(table)), content_type=MEDIA_TYPE)
    assert answer.status_code == 202 and answer.get_json()["count"] == 1, answer.get_json()


def test_a_parquet_over_the_points_limit_is_413_before_it_is_read(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(max_points_per_batch=50)
    r = client.post("/v1/batches", data=_parquet(_table(3)), content_type=MEDIA_TYPE)
    assert r.status_code == 413


def test_only_the_known_columns_are_read_and_their_types_are_checked(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client()
    table = _table(3)
    # An extra column is never decoded, whatever it holds.
    extra = table.append_column("notes", pa.array([["a", "b"]] * table.num_rows))
    assert client.post(f"/v1/batches?{OPTIONS}", data=_parquet(extra), content_type=MEDIA_TYPE).status_code == 202
    for name, bad in (
        ("t_u", pa.array([[1.0, 2.0]] * table.num_rows)),  # nested
        ("t_c", pa.array(["1.5"] * table.num_rows)),  # text where numbers belong
        ("series", pa.array([{"a": 1}] * table.num_rows)),  # a struct
    ):
        broken = table.set_column(table.schema.get_field_index(name), name, bad)
        answer = client.post(f"/v1/batches?{OPTIONS}", data=_parquet(broken), content_type=MEDIA_TYPE)
        assert answer.status_code == 422 and answer.get_json()["errors"][0]["loc"] == [name], answer.get_json()


def test_columns_that_decode_past_the_budget_are_refused_before_decoding(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(max_parquet_decoded_bytes=4096)
    rows = 20_000
    table = pa.table({"series": ["S"] * rows, "t_u": np.arange(rows, dtype=float), "t_c": np.arange(rows, dtype=float)})
    answer = client.post(f"/v1/batches?{OPTIONS}", data=_parquet(table), content_type=MEDIA_TYPE)
    assert answer.status_code == 413 and "decode to" in answer.get_json()["detail"], answer.get_json()
