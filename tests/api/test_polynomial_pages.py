"""A polynomial fit on the dashboard's pages and in the CLI's table: its curve, each parameter with
its uncertainty and least-squares value, and the gap of each where it has not converged."""

from __future__ import annotations

import html
import json
import re

from flask.testing import FlaskClient

from services.cli.tables import fit_summary
from tests.api.test_polynomial_fits import T_C, T_U
from tests.in_process import run_fit


def test_the_fit_page_and_the_cli_show_a_quadratic_by_its_parameters(client: FlaskClient) -> None:
    body = {
        "t_u": T_U,
        "t_c": T_C,
        "model": {"kind": "polynomial", "degree": 2},
        "epochs": 300,
        "learning_rate": 1e-4,
        "input_scale": 0.1,
    }
    fit_id = client.post("/v1/fits", json=body).get_json()["id"]
    run_fit(client, fit_id)
    fit = client.get(f"/v1/fits/{fit_id}").get_json()
    page = client.get(f"/ui/fits/{fit_id}").get_data(as_text=True)
    assert 'id="curve"' in page and "t_u²" in page and "(polynomial of degree 2)" in page
    # The curve across the readings, as the predictions compute it: its ends are the fit's predictions.
    points = json.loads(html.unescape(re.search(r'data-curve="([^"]*)"', page).group(1)))  # type: ignore[union-attr]
    ends = client.post(f"/v1/fits/{fit_id}/predict", json={"t_u": [min(T_U), max(T_U)]}).get_json()["t_c"]
    assert len(points) == 97 and [points[0][1], points[-1][1]] == ends
    assert "data-curve-opt=" in page  # not converged: the least-squares curve beside it
    assert "data-w=" not in page
    assert "SE in a2" in page  # 300 epochs: not converged, its gap by parameter
    report = client.get(f"/ui/fits/{fit_id}/report").get_data(as_text=True)
    assert 'id="report-curve"' in report and "u(a2)" in report and "f(t_u)" in report
    assert "data-curve=" in report and "— over" not in report  # the residual RMS is computed
    table = fit_summary(fit)
    assert "polynomial, degree 2" in table and "SE in a2" in table and "least squares" in table
