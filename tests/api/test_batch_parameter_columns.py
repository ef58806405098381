"""A batch's results as CSV and Parquet carry each parameter of its models (`p_<name>`, `u_<name>`) and,
for fits with stated uncertainties, their χ² test: a JSON batch of quadratics beside lines, with u_t_c,
on both backends."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from flask.testing import FlaskClient

from shared.contract.model_kinds import parameters_of_all
from shared.store.models import Batch
from tests.api.test_polynomial_fits import T_C, T_U
from tests.in_process import run_batch


def test_results_have_a_column_per_parameter_and_the_chi2_test(client: FlaskClient) -> None:
    quadratic = {"model": {"kind": "polynomial", "degree": 2}, "labels": {"series": "q"}}
    body = {
        "defaults": {"epochs": "auto", "learning_rate": "auto", "normalize": "standardize"},
        "fits": [
            {"t_u": T_U, "t_c": T_C, "labels": {"series": "line"}},
            {"t_u": T_U, "t_c": T_C, **quadratic},
            {"t_u": T_U, "t_c": T_C, "u_t_c": 1.5, "labels": {"series": "weighted"}},
        ],
    }
    batch = client.post("/v1/batches", json=body).get_json()
    run_batch(client, batch["id"])
    fits = {f["labels"]["series"]: f for f in client.get(f"/v1/batches/{batch['id']}/fits").get_json()["items"]}
    text = client.get(f"/v1/batches/{batch['id']}/fits?format=csv").get_data(as_text=True)
    rows = {row["series"]: row for row in csv.DictReader(io.StringIO(text))}
    header = text.splitlines()[0].split(",")
    assert header[-12:] == [
        "chi2_obs",
        "consistent",
        "p_w",
        "p_b",
        "p_a1",
        "p_a2",
        "p_a0",
        "u_w",
        "u_b",
        "u_a1",
        "u_a2",
        "u_a0",
    ]
    q, line, weighted = fits["q"]["result"], fits["line"]["result"], fits["weighted"]["result"]
    for name in ("a1", "a2", "a0"):
        assert float(rows["q"][f"p_{name}"]) == pytest.approx(q["parameters"][name], rel=1e-12)
        assert float(rows["q"][f"u_{name}"]) == pytest.approx(q["standard_uncertainties"][name], rel=1e-12)
    assert rows["q"]["p_w"] == "" and rows["line"]["p_a2"] == ""
    assert float(rows["line"]["p_w"]) == pytest.approx(line["w_raw"]) and float(rows["line"]["u_b"]) == pytest.approx(
        line["se_b"]
    )
    assert float(rows["weighted"]["chi2_obs"]) == pytest.approx(weighted["chi2_obs"], rel=1e-12)
    assert rows["weighted"]["consistent"] == str(weighted["consistent"]).lower()  # as `converged` is written
    assert rows["line"]["chi2_obs"] == ""
    table = pq.read_table(io.BytesIO(client.get(f"/v1/batches/{batch['id']}/fits?format=parquet").get_data()))
    assert table.column_names == header
    # The names are kept on the batch at submission; a batch from before they were (null) reads them
    # from its fits' models, into the same columns.
    with client.application.extensions["calib"].db.session(write=True) as session:
        stored = session.get(Batch, batch["id"])
        assert stored is not None and stored.parameter_names == ["w", "b", "a1", "a2", "a0"]
        stored.parameter_names = None
    assert client.get(f"/v1/batches/{batch['id']}/fits?format=csv").get_data(as_text=True).splitlines()[0] == (
        ",".join(header)
    )
    by_series: dict[str, Any] = {row["series"]: row for row in table.to_pylist()}
    assert by_series["q"]["p_a2"] == pytest.approx(q["parameters"]["a2"], rel=1e-12)
    assert by_series["weighted"]["consistent"] is weighted["consistent"]


def test_a_10000_series_csv_batch_of_quadratics_has_their_parameter_columns(client: FlaskClient) -> None:
    """?model=polynomial&degree=2 on a CSV batch: every series a quadratic, run to convergence, each row's
    p_ columns numpy's polyfit within the convergence tolerance of its u_ columns."""
    rng = np.random.default_rng(5)
    series, points = 10_000, 8
    t_u = rng.uniform(20, 90, (series, points))
    t_c = 0.002 * t_u**2 + 0.4 * t_u - 15 + rng.normal(0, 0.3, (series, points))
    lines = ["series,t_u,t_c"] + [
        f"s{i},{float(t_u[i, j])!r},{float(t_c[i, j])!r}" for i in range(series) for j in range(points)
    ]
    query = "model=polynomial&degree=2&epochs=auto&max_epochs=20000&learning_rate=auto&normalize=standardize"
    created = client.post(f"/v1/batches?{query}", data="\n".join(lines), content_type="text/csv")
    assert created.status_code == 202, created.get_json()
    batch_id = created.get_json()["id"]
    assert run_batch(client, batch_id) == series
    batch = client.get(f"/v1/batches/{batch_id}").get_json()
    assert batch["status"] == "completed" and batch["counts"]["succeeded"] == series
    text = client.get(f"/v1/batches/{batch_id}/fits?format=csv").get_data(as_text=True)  # every fit, streamed
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == series and rows[0].keys() >= {"p_a1", "p_a2", "p_a0", "u_a1", "u_a2", "u_a0"}
    assert all(row["converged"] == "true" for row in rows)
    for row in rows[:: series // 50]:
        i = int(row["series"][1:])
        least_squares = dict(zip(("a2", "a1", "a0"), np.polyfit(t_u[i], t_c[i], 2), strict=True))
        for name, value in least_squares.items():
            # Converged: within 0.01 standard uncertainties of least squares (0.02 with rounding's room).
            assert abs(float(row[f"p_{name}"]) - value) <= 0.02 * float(row[f"u_{name}"]), (i, name)
    table = pq.read_table(io.BytesIO(client.get(f"/v1/batches/{batch_id}/fits?format=parquet").get_data()))
    assert table.num_rows == series and {"p_a2", "u_a2"} <= set(table.column_names)


def test_a_degree_without_a_polynomial_is_a_422_naming_it(client: FlaskClient) -> None:
    answer = client.post("/v1/batches?degree=2", data="series,t_u,t_c\na,1,2\na,2,3\n", content_type="text/csv")
    assert answer.status_code == 422, answer.get_json()
    assert "degree" in str(answer.get_json()["errors"])


def test_a_batchs_parameters_are_in_one_order_whatever_order_its_models_come_in() -> None:
    line, quadratic, steinhart_hart = ("w", "b"), ("a1", "a2", "a0"), ("b", "c", "a")
    for given in ([line, quadratic, steinhart_hart], [steinhart_hart, quadratic, line, line]):
        # Fewer parameters first, then by name; a name two models share (b) is one column.
        assert parameters_of_all(given) == ["w", "b", "a1", "a2", "a0", "c", "a"]
