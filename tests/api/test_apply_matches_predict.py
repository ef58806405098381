"""POST /v1/apply against POST /v1/instruments/{id}/predict on generated calibrations: every kind
of model, weighted or not, at several scales and offsets, with and without `interval` and a
`u_t_u` column. Both answer the same readings the same way: both refuse (with the same status
and kind of problem), or both give t_c, the bounds and u_t_c, equal to 1e-9 relative (apply reads
blocks of rows with pyarrow, predict a JSON list: the same arithmetic, two paths to it)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import numpy as np
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.in_process import run_fit


def _pt100(t: np.ndarray) -> np.ndarray:
    """IEC 60751's resistance of a Pt100 at t °C."""
    a, b, c = 3.9083e-3, -5.775e-7, -4.183e-12
    return 100 * (1 + a * t + b * t * t + np.where(t < 0, c * (t - 100) * t**3, 0.0))


def _points(kind: str, rng: np.random.Generator, scale: float, shift: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    if kind == "steinhart_hart":
        r = np.sort(rng.uniform(100, 1e5, n))
        ln = np.log(r)
        kelvin = 1 / (1.129e-3 + 2.341e-4 * ln + 8.775e-8 * ln**3)
        return r, kelvin - 273.15 + rng.normal(0, 0.01, n)
    if kind == "callendar_van_dusen":
        t = np.sort(rng.uniform(-200.0 if rng.random() < 0.5 else 0.0, 850.0, n))
        return _pt100(t) + rng.normal(0, 0.002, n), t
    u = np.sort(rng.uniform(-1, 1, n)) * scale + shift
    curve = 0.01 * u * u / scale if kind == "polynomial" else 0.0
    return u, 0.5 * u - 3 + curve + rng.normal(0, 0.01 * scale, n)


def _same(cell: str, value: float | None) -> bool:
    if cell == "" or value is None:
        return cell == "" and value is None
    return float(cell) == value or abs(float(cell) - value) <= 1e-9 * max(abs(float(cell)), abs(value))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["line", "polynomial", "callendar_van_dusen", "steinhart_hart"]),
    seed=st.integers(0, 10**6),
    scale=st.sampled_from([1e-3, 1.0, 100.0, 1e6]),
    shift=st.sampled_from([0.0, -50.0, 1e3]),
    n=st.integers(3, 8),
    weighted=st.booleans(),
    interval=st.booleans(),
    stated=st.booleans(),
)
def test_apply_answers_as_predict_does(
    make_client: Callable[..., FlaskClient],
    kind: str,
    seed: int,
    scale: float,
    shift: float,
    n: int,
    weighted: bool,
    interval: bool,
    stated: bool,
) -> None:
    client = make_client(rate_limit="1000000/minute")  # the app is made once per test, its client each example
    rng = np.random.default_rng(seed)
    name = f"I{seed}-{kind}"
    t_u, t_c = _points(kind, rng, scale, shift, n)
    body = {
        "t_u": t_u.tolist(),
        "t_c": t_c.tolist(),
        "model": {"kind": kind, **({"degree": 2} if kind == "polynomial" else {})},
        "instrument": name,
        "epochs": "auto",
        "learning_rate": "auto",
        "normalize": "standardize",
        **({"u_t_c": 0.05} if weighted else {}),
    }
    created = client.post("/v1/fits", json=body)
    if created.status_code != 202:  # e.g. too few points for the model: nothing to compare
        return
    run_fit(client, created.get_json()["id"])
    readings = np.sort(rng.choice(t_u, 4)) * (1 + rng.normal(0, 0.01, 4))
    header = "instrument,t_u" + (",u_t_u" if stated else "")
    rows = "".join(f"{name},{float(x)!r}" + (",0.1" if stated else "") + "\n" for x in readings)
    applied = client.post(
        f"/v1/apply{'?interval=0.95' if interval else ''}", data=f"{header}\n{rows}", content_type="text/csv"
    )
    asked = {
        "t_u": readings.tolist(),
        **({"interval": 0.95} if interval else {}),
        **({"u_t_u": [0.1] * 4} if stated else {}),
    }
    predicted = client.post(f"/v1/instruments/{name}/predict", json=asked)
    if predicted.status_code != 200 or applied.status_code != 200:
        answers = [(answer.status_code, (answer.get_json() or {}).get("type")) for answer in (applied, predicted)]
        assert answers[0] == answers[1], (applied.get_data(as_text=True)[:300], predicted.get_json())
        return
    served = predicted.get_json()
    for i, row in enumerate(csv.DictReader(io.StringIO(applied.get_data(as_text=True)))):
        assert _same(row["t_c"], served["t_c"][i]), (row, served)
        if interval:
            assert _same(row["lower"], served["lower"][i]) and _same(row["upper"], served["upper"][i]), (row, served)
        if stated:
            assert _same(row["u_t_c"], served["u_t_c"][i]), (row, served)
