"""A result's general form (API.md, third round: `parameter_names`, `parameters`, `parameters_opt`,
`standard_uncertainties`, `covariance`, `convergence.gap_se`): for a line, a second view of its own
fields, and its covariance the least-squares one, s²·(XᵀX)⁻¹ with s² the residuals' over n − 2."""

from __future__ import annotations

import numpy as np
import pytest
from flask.testing import FlaskClient

from tests.in_process import run_fit

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def _least_squares() -> tuple[np.ndarray, np.ndarray]:
    """(w, b) and their covariance, by the normal equations in float64 (no code of ours)."""
    x = np.column_stack([np.asarray(T_U), np.ones(len(T_U))])
    y = np.asarray(T_C)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    s2 = residual @ residual / (len(y) - 2)
    return beta, s2 * np.linalg.inv(x.T @ x)


def test_a_lines_result_in_the_general_form(client: FlaskClient) -> None:
    created = client.post("/v1/fits", json={"t_u": T_U, "t_c": T_C, "input_scale": 0.1, "epochs": 5000}).get_json()
    run_fit(client, created["id"])
    result = client.get(f"/v1/fits/{created['id']}").get_json()["result"]
    assert result["parameter_names"] == ["w", "b"]
    assert result["parameters"] == {"w": result["w_raw"], "b": result["b_raw"]}
    assert result["parameters_opt"] == {"w": result["w_opt"], "b": result["b_opt"]}
    assert result["standard_uncertainties"] == {"w": result["se_w"], "b": result["se_b"]}
    gap = result["convergence"]
    assert gap["gap_se"] == {"w": gap["gap_se_w"], "b": gap["gap_se_b"]}

    beta, covariance = _least_squares()
    assert [result["parameters_opt"]["w"], result["parameters_opt"]["b"]] == pytest.approx(beta, rel=1e-10)
    assert np.allclose(result["covariance"], covariance, rtol=1e-9, atol=0)
    assert result["covariance"][0][1] == result["covariance"][1][0] == result["cov_wb"]


def test_no_covariance_where_the_data_do_not_determine_it(client: FlaskClient) -> None:
    """Two points: a line through both, and no residual to estimate the scatter from."""
    created = client.post("/v1/fits", json={"t_u": [1.0, 2.0], "t_c": [3.0, 5.0], "epochs": 100}).get_json()
    run_fit(client, created["id"])
    result = client.get(f"/v1/fits/{created['id']}").get_json()["result"]
    assert result["parameters_opt"] == {"w": 2.0, "b": 1.0}
    assert result["standard_uncertainties"] == {"w": None, "b": None} and result["cov_wb"] is None
    assert result["covariance"] is None
