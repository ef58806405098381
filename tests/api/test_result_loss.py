"""The loss of a result (API.md "The loss of a result"): `result.loss` is the training loss at the
returned line, wherever it is served (JSON, the batch's CSV and Parquet), while the per-epoch series
keeps the book's order and `last_epoch_loss` names its last value. Both backends, the worker's runner
in this process."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import statsmodels.api as sm
from alembic import command
from flask.testing import FlaskClient

from migrations.apply import alembic_config
from services.api.submit import fit_rows
from shared.contract.schemas import FitCreate
from shared.store.db import make_engine
from tests.in_process import run_batch, run_fit
from tests.oracles import mse_at_line

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
# Standardized input makes the Hessian 2·I, so "auto" (lr 0.5) lands on the least-squares line in one step.
CONVERGING = {"learning_rate": "auto", "normalize": "standardize", "epochs": "auto"}


def least_squares_loss(t_u: list[float], t_c: list[float]) -> float:
    """statsmodels' residual sum of squares over n: the loss of the least-squares line."""
    ols = sm.OLS(np.asarray(t_c), sm.add_constant(np.asarray(t_u))).fit()
    return float(ols.ssr / len(t_u))


def test_a_fit_converged_in_one_epoch_reports_the_least_squares_loss(client: FlaskClient) -> None:
    fit_id = client.post("/v1/fits", json={"t_u": T_U, "t_c": T_C, **CONVERGING}).get_json()["id"]
    run_fit(client, fit_id)
    fit = client.get(f"/v1/fits/{fit_id}").get_json()
    result = fit["result"]
    assert fit["epochs_done"] == 1 and result["converged"] is True, fit
    assert math.isclose(result["loss"], least_squares_loss(T_U, T_C), rel_tol=1e-9), result
    # Epoch 1's loss is that of the starting line (w 1, b 0 on standardized input), before its update.
    series = client.get(f"/v1/fits/{fit_id}/losses").get_json()["loss"]
    assert result["last_epoch_loss"] == series[-1] and series[-1] > 10 * result["loss"]


def test_the_seed_fits_loss_is_the_loss_at_its_final_parameters(client: FlaskClient) -> None:
    body = {"t_u": T_U, "t_c": T_C, "input_scale": 0.1, "epochs": 5000}
    fit_id = client.post("/v1/fits", json=body).get_json()["id"]
    run_fit(client, fit_id)
    result = client.get(f"/v1/fits/{fit_id}").get_json()["result"]
    series = client.get(f"/v1/fits/{fit_id}/losses?start=5000").get_json()["loss"]
    # The book's epoch-5000 line stays the series' last value; the result's loss is one update later.
    assert result["last_epoch_loss"] == series[-1] == pytest.approx(2.927648, rel=1e-5)
    at_line = mse_at_line(T_U, T_C, result["w_raw"], result["b_raw"])
    assert math.isclose(result["loss"], at_line, rel_tol=1e-9) and result["loss"] < result["last_epoch_loss"]


def test_the_batch_csv_and_parquet_carry_the_loss_of_each_line(client: FlaskClient) -> None:
    rng = np.random.default_rng(5)
    data = {f"S{i}": (rng.uniform(20, 90, 12).round(2), rng.uniform(-5, 30, 12).round(3)) for i in range(4)}
    text = "series,t_u,t_c\n" + "".join(
        f"{name},{u},{c}\n" for name, (us, cs) in data.items() for u, c in zip(us, cs, strict=True)
    )
    query = "&".join(f"{k}={v}" for k, v in CONVERGING.items())
    created = client.post(f"/v1/batches?{query}", data=text, content_type="text/csv")
    assert created.status_code == 202, created.get_json()
    batch_id = created.get_json()["id"]
    run_batch(client, batch_id)
    as_csv = client.get(f"/v1/batches/{batch_id}/fits?format=csv").get_data(as_text=True)
    parquet = client.get(f"/v1/batches/{batch_id}/fits?format=parquet").get_data()
    rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(as_csv)))
    typed = {row["series"]: row for row in pq.read_table(io.BytesIO(parquet)).to_pylist()}
    assert len(rows) == len(typed) == 4
    for row in rows:
        t_u, t_c = (list(map(float, v)) for v in data[row["series"]])
        expected = least_squares_loss(t_u, t_c)
        assert row["converged"] == "true"
        assert math.isclose(float(row["loss"]), expected, rel_tol=1e-9), row
        assert math.isclose(typed[row["series"]]["loss"], expected, rel_tol=1e-9)
        assert float(row["last_epoch_loss"]) > float(row["loss"])


def test_the_migration_converts_stored_results(tmp_path: Path) -> None:
    """Rows written under 0010 (loss = the series' last value) become results whose loss is that of
    their line, computed from the stored points; the old figure moves to last_epoch_loss."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0010")
    engine = make_engine(url)
    fits = sa.Table("fits", sa.MetaData(), autoload_with=engine)
    split = {"indices": [2, 10], "fraction": None, "seed": None}
    specs = [
        FitCreate.model_validate({"t_u": T_U, "t_c": T_C, "input_scale": 0.1}),
        FitCreate.model_validate({"t_u": T_U, "t_c": T_C, "input_scale": 0.1, "validation": {"indices": [2, 10]}}),
        FitCreate.model_validate({"t_u": T_U, "t_c": T_C}),
    ]
    rows = fit_rows(specs, "default")
    ended = [
        {"status": "succeeded", "w": 5.3671, "b": -17.3012, "loss": 2.927648, "val_loss": None},
        {"status": "succeeded", "w": 5.1964, "b": -16.7512, "loss": 3.0125, "val_loss": 3.5756, "validation": split},
        {"status": "diverged", "loss": 1.2e37, "diverged_at_epoch": 11},
    ]
    with engine.begin() as conn:
        for row, end in zip(rows, ended, strict=True):
            conn.execute(fits.insert().values({k: v for k, v in {**row, **end}.items() if k in fits.c}))
    engine.dispose()
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    with engine.connect() as conn:
        by_id = {r.id: r for r in conn.execute(sa.text("SELECT * FROM fits"))}
    engine.dispose()
    seed, split_fit, diverged = (by_id[row["id"]] for row in rows)
    assert seed.last_epoch_loss == 2.927648
    assert math.isclose(seed.loss, mse_at_line(T_U, T_C, 0.53671, -17.3012), rel_tol=1e-12)
    kept = [i for i in range(11) if i not in (2, 10)]
    assert math.isclose(
        split_fit.loss, mse_at_line([T_U[i] for i in kept], [T_C[i] for i in kept], 0.51964, -16.7512), rel_tol=1e-12
    )
    assert math.isclose(split_fit.val_loss, mse_at_line([T_U[2], T_U[10]], [T_C[2], T_C[10]], 0.51964, -16.7512))
    assert (split_fit.last_epoch_loss, split_fit.last_epoch_val_loss) == (3.0125, 3.5756)
    assert diverged.loss is None and diverged.last_epoch_loss == 1.2e37
