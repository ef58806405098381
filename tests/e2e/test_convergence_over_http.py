"""Results a metrologist can trust (both backends, real processes): every fit says whether gradient
descent reached the least-squares line, checked against statsmodels' OLS computed here and the
book's loop run here in float64; epochs "auto" stops where the fit converges; an interval on a
fit that has not converged is refused or widened; the CLI takes the ids it prints."""

from __future__ import annotations

import csv
import io
import subprocess

import numpy as np
import statsmodels.api as sm

from services.cli import processes
from tests.stack import Stack

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
TOL = 0.01


def sensors(count: int = 300, readings: int = 15, seed: int = 7) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The plant's night: raw readings between 20 and 90, slopes near 0.55, offsets near -17.5."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(count):
        t_u = np.round(rng.uniform(20, 90, readings), 2)
        t_c = np.round(rng.normal(0.55, 0.02) * t_u + rng.normal(-17.5, 0.5) + rng.normal(0, 0.3, readings), 3)
        out[f"TT-{i:03d}"] = (t_u, t_c)
    return out


def long_csv(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    lines = ["series,t_u,t_c"] + [
        f"{name},{u},{c}" for name, (us, cs) in data.items() for u, c in zip(us, cs, strict=True)
    ]
    return "\n".join(lines) + "\n"


def results(stack: Stack, batch_id: str) -> dict[str, dict[str, str]]:
    text = stack.http.get(f"/v1/batches/{batch_id}/fits?format=csv").text
    return {row["series"]: row for row in csv.DictReader(io.StringIO(text))}


def first_converged_epoch(t_u: np.ndarray, t_c: np.ndarray, lr: float, scale: float, limit: int) -> int | None:
    """The book's loop in float64: the first epoch after which the line is within TOL standard errors."""
    ols = sm.OLS(t_c, sm.add_constant(t_u)).fit()
    (b_opt, w_opt), (se_b, se_w) = ols.params, ols.bse
    x = t_u * scale
    w, b = 1.0, 0.0
    for epoch in range(limit + 1):
        if abs(w * scale - w_opt) <= TOL * se_w and abs(b - b_opt) <= TOL * se_b:
            return epoch
        residual = w * x + b - t_c
        w, b = w - lr * 2 * np.mean(residual * x), b - lr * 2 * np.mean(residual)
    return None


def test_300_sensors_raw_are_not_converged_and_say_so(stack: Stack) -> None:
    data = sensors()
    r = stack.http.post(
        "/v1/batches?epochs=5000&learning_rate=auto", content=long_csv(data), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 202, r.text
    batch = stack.wait_batch(r.json()["id"], timeout=120)
    assert batch["counts"]["succeeded"] == 300 and batch["counts"]["not_converged"] == 300
    rows = results(stack, batch["id"])
    assert {"converged", "w_opt", "b_opt", "se_w", "se_b", "r2"} <= set(next(iter(rows.values())))
    fits = {
        f["labels"]["series"]: f for f in stack.http.get(f"/v1/batches/{batch['id']}/fits?limit=1000").json()["items"]
    }
    for name, (t_u, t_c) in data.items():
        row, fit = rows[name], fits[name]
        assert row["converged"] == "false" and fit["result"]["converged"] is False
        assert fit["stop_reason"] == "completed" and fit["result"]["convergence"]["epochs_needed"] > 5000
        ols = sm.OLS(t_c, sm.add_constant(t_u)).fit()
        assert np.isclose(float(row["w_opt"]), ols.params[1], rtol=1e-9)
        assert np.isclose(float(row["se_w"]), ols.bse[1], rtol=1e-9)
        gap_w = (fit["result"]["w_raw"] - ols.params[1]) / ols.bse[1]
        gap_b = (fit["result"]["b_raw"] - ols.params[0]) / ols.bse[0]
        assert np.isclose(fit["result"]["convergence"]["gap_se_w"], gap_w, rtol=1e-8)
        assert np.isclose(fit["result"]["convergence"]["gap_se_b"], gap_b, rtol=1e-8)
        assert abs(gap_w) > TOL or abs(gap_b) > TOL


def test_300_sensors_standardized_all_converge(stack: Stack) -> None:
    r = stack.http.post(
        "/v1/batches?epochs=5000&learning_rate=auto&normalize=standardize",
        content=long_csv(sensors()),
        headers={"Content-Type": "text/csv"},
    )
    batch = stack.wait_batch(r.json()["id"], timeout=120)
    assert batch["counts"]["succeeded"] == 300 and batch["counts"]["not_converged"] == 0
    assert {row["converged"] for row in results(stack, batch["id"]).values()} == {"true"}


def test_epochs_auto_on_raw_input_stops_where_the_books_loop_converges(stack: Stack) -> None:
    data = sensors(count=3, seed=11)
    body = {
        "defaults": {"epochs": "auto", "learning_rate": 1e-4},
        "fits": [{"t_u": u.tolist(), "t_c": c.tolist(), "labels": {"series": name}} for name, (u, c) in data.items()],
    }
    r = stack.http.post("/v1/batches", json=body)
    assert r.status_code == 202, r.text
    batch = stack.wait_batch(r.json()["id"], timeout=120)
    rows = results(stack, batch["id"])
    for name, (t_u, t_c) in data.items():
        fit = stack.http.get(f"/v1/fits/{rows[name]['fit_id']}").json()
        assert fit["status"] == "succeeded" and fit["result"]["converged"] is True
        assert fit["stop_reason"] == "converged" and fit["params"]["epochs_auto"] is True
        expected = first_converged_epoch(t_u, t_c, 1e-4, 1.0, 1_000_000)
        assert expected is not None and abs(fit["epochs_done"] - expected) <= 1, (fit["epochs_done"], expected)
        assert fit["result"]["convergence"]["epochs_needed"] == fit["epochs_done"]
    # The iterative optimizers check at every block (64 epochs at first), and stop at the first
    # block's end where it holds: sgd at 0.1 on standardized input shrinks the gap 0.8 times an epoch.
    sgd = stack.wait(
        stack.submit(
            {
                "t_u": T_U,
                "t_c": T_C,
                "epochs": "auto",
                "max_epochs": 200_000,
                "optimizer": "sgd",
                "learning_rate": 0.1,
                "normalize": "standardize",
            }
        )["id"],
        timeout=120,
    )
    assert sgd["status"] == "succeeded" and sgd["result"]["converged"] is True
    assert sgd["stop_reason"] == "converged" and sgd["epochs_done"] == 64
    assert len(stack.losses(sgd["id"])) == 64


def test_the_seed_fit_converges_and_100_epochs_do_not(stack: Stack) -> None:
    seed = {"t_u": T_U, "t_c": T_C, "epochs": 5000, "learning_rate": 1e-2, "input_scale": 0.1}
    full = stack.wait(stack.submit(seed)["id"])
    assert full["result"]["converged"] is True
    short = stack.wait(stack.submit(seed | {"epochs": 100})["id"])
    assert short["result"]["converged"] is False
    needed = first_converged_epoch(np.array(T_U), np.array(T_C), 1e-2, 0.1, 100_000)
    assert short["result"]["convergence"]["epochs_needed"] == needed == full["result"]["convergence"]["epochs_needed"]

    # An interval belongs to the least-squares line: on a fit that has not converged it is refused...
    r = stack.http.post(f"/v1/fits/{short['id']}/predict", json={"t_u": [50.0], "interval": 0.95})
    assert r.status_code == 409 and "SE in w" in r.json()["detail"]
    plain = stack.http.post(f"/v1/fits/{short['id']}/predict", json={"t_u": [50.0]}).json()
    assert plain["converged"] is False
    # ... or, when asked, its bounds hold the least-squares prediction and the fit's own.
    wide = stack.http.post(
        f"/v1/fits/{short['id']}/predict", json={"t_u": [20.0, 50.0, 90.0], "interval": 0.95, "allow_unconverged": True}
    ).json()
    ols = sm.OLS(np.array(T_C), sm.add_constant(np.array(T_U))).fit()
    for i, u in enumerate([20.0, 50.0, 90.0]):
        least_squares = ols.params[0] + ols.params[1] * u
        assert wide["lower"][i] <= least_squares <= wide["upper"][i]
        assert wide["lower"][i] <= wide["t_c"][i] <= wide["upper"][i]
    assert wide["bounds_include_gap"] is True
    done = stack.http.post(f"/v1/fits/{full['id']}/predict", json={"t_u": [50.0], "interval": 0.95}).json()
    assert done["converged"] is True and "bounds_include_gap" not in done


def _calib(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        processes.resolve(["calib", *args, "--url", stack.url]),
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_takes_the_ids_it_prints(stack: Stack) -> None:
    fit = stack.wait(stack.submit({"t_u": T_U, "t_c": T_C, "epochs": 100, "input_scale": 0.1})["id"])
    listed = _calib(stack, "list", "--limit", "200")
    assert fit["id"][:8] in listed.stdout and "converged" in listed.stdout.splitlines()[0]
    shown = _calib(stack, "status", fit["id"][:8])
    assert shown.returncode == 0, shown.stderr
    assert fit["id"] in shown.stdout and "NOT converged" in shown.stdout and "least squares" in shown.stdout
    assert _calib(stack, "losses", fit["id"][:8]).stdout.count("Epoch ") == 100
    ids = [f["id"] for f in stack.http.get("/v1/fits?limit=1000").json()["items"]]
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    ambiguous = _calib(stack, "status", shared)
    assert ambiguous.returncode == 3 and "several fit ids" in ambiguous.stderr
    assert _calib(stack, "status", "ffffffff-ffff").returncode == 3
