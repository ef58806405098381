"""CSV and Parquet batches with each point's stated uncertainties (`u_t_c`, `u_t_u` columns), on both
backends: each series is the fit its JSON body would be (ISO/TS 28037's weighted and distance-regression
examples, the same figures), its results carry the χ² test, and a bad cell is a 4xx naming it."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flask.testing import FlaskClient

from tests.api.test_distance_regression import EXAMPLE
from tests.api.test_fits_api import problem
from tests.api.test_weighted_fits import UNEQUAL
from tests.in_process import run_batch, succeeded

QUERY = "epochs=auto&learning_rate=auto&normalize=standardize"
CONVERGING = {"epochs": "auto", "learning_rate": "auto", "normalize": "standardize"}


def _rows() -> list[dict[str, Any]]:
    """The weighted example (u_t_u 0: generalized distance regression reduces to weighted least squares)
    and the distance-regression example, as a long table."""
    rows = []
    for name, data, u_t_u in (("weighted", UNEQUAL, [0.0] * 6), ("distance", EXAMPLE, [0.2] * 6)):
        u_t_c = data["u_t_c"] if isinstance(data["u_t_c"], list) else [data["u_t_c"]] * 6
        for x, y, uy, ux in zip(data["t_u"], data["t_c"], u_t_c, u_t_u, strict=True):
            rows.append({"series": name, "t_u": x, "t_c": y, "u_t_c": uy, "u_t_u": ux})
    return rows


def _results(client: FlaskClient, batch_id: str) -> dict[str, dict[str, Any]]:
    assert run_batch(client, batch_id) == 2
    fits = client.get(f"/v1/batches/{batch_id}/fits").get_json()["items"]
    return {fit["labels"]["series"]: fit for fit in fits}


def _check(client: FlaskClient, found: dict[str, dict[str, Any]], batch_id: str) -> None:
    for name, data in (("weighted", UNEQUAL), ("distance", EXAMPLE)):
        alone = succeeded(client, {**data, **CONVERGING})["result"]
        r = found[name]["result"]
        for key in ("w_opt", "b_opt", "se_w", "se_b", "cov_wb", "chi2_obs"):
            assert r[key] == pytest.approx(alone[key], rel=1e-9), (name, key)
        assert r["converged"] is True
    text = client.get(f"/v1/batches/{batch_id}/fits?format=csv").get_data(as_text=True)
    rows = {row["series"]: row for row in csv.DictReader(io.StringIO(text))}
    assert float(rows["distance"]["chi2_obs"]) == pytest.approx(2.742676789733, rel=1e-9)
    data = client.get(f"/v1/fits/{found['distance']['id']}/data").get_json()
    assert data["u_t_u"] == [0.2] * 6 and data["u_t_c"] == EXAMPLE["u_t_c"]


def test_a_csv_batch_with_uncertainty_columns_fits_each_series_as_its_json_would(client: FlaskClient) -> None:
    lines = ["series,t_u,t_c,u_t_c,u_t_u"] + [
        f"{r['series']},{r['t_u']},{r['t_c']},{r['u_t_c']},{r['u_t_u']}" for r in _rows()
    ]
    created = client.post(f"/v1/batches?{QUERY}", data="\n".join(lines), content_type="text/csv")
    assert created.status_code == 202, created.get_json()
    batch_id = created.get_json()["id"]
    _check(client, _results(client, batch_id), batch_id)


def test_a_parquet_batch_with_uncertainty_columns_too(client: FlaskClient) -> None:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(_rows()), out)
    created = client.post(f"/v1/batches?{QUERY}", data=out.getvalue(), content_type="application/vnd.apache.parquet")
    assert created.status_code == 202, created.get_json()
    batch_id = created.get_json()["id"]
    _check(client, _results(client, batch_id), batch_id)


def test_a_bad_uncertainty_cell_is_named(client: FlaskClient) -> None:
    text = "series,t_u,t_c,u_t_c\na,1,2,0.5\na,2,3,warm\na,3,4,0.5\n"
    bad = problem(client.post("/v1/batches", data=text, content_type="text/csv"), 400)
    assert bad["errors"][0]["loc"] == ["line", 3, "u_t_c"]
    negative = "series,t_u,t_c,u_t_c\na,1,2,0.5\na,2,3,-0.5\na,3,4,0.5\n"
    refused = problem(client.post("/v1/batches", data=negative, content_type="text/csv"), 422)
    loc = refused["errors"][0]["loc"]
    assert loc[:3] == ["series", "a", "u_t_c"] and "[1]" in refused["errors"][0]["msg"]
