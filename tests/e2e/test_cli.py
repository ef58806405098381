"""The CLI against the running stack: fit, batch, list, status, losses and plot, with their exit codes."""

from __future__ import annotations

import csv
import io
import json
import math
import shlex
import subprocess
from pathlib import Path

import numpy as np
import statsmodels.api as sm

from services.cli import processes
from tests.stack import Stack

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def calib(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        processes.resolve(["calib", *args, "--url", stack.url]),
        capture_output=True,
        text=True,
        timeout=120,
        env=stack.env,
    )


def test_fit_wait_and_losses(stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "thermometer.csv"
    data.write_text("t_u,t_c\n" + "".join(f"{u},{c}\n" for u, c in zip(T_U, T_C, strict=True)))
    done = calib(stack, "fit", str(data), "--input-scale", "0.1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert "epochs [" in done.stderr  # the progress bar
    fit = json.loads(done.stdout)
    assert fit["status"] == "succeeded" and abs(fit["result"]["w"] - 5.3671) < 1e-3
    losses = calib(stack, "losses", fit["id"], "--csv")
    assert losses.stdout.splitlines()[0] == "epoch,loss" and len(losses.stdout.splitlines()) == 5001
    diverged = calib(stack, "fit", str(data), "--epochs", "100", "--yes", "--wait", "--json")
    assert diverged.returncode == 1 and json.loads(diverged.stdout)["diverged_at_epoch"] == 11
    missing = calib(stack, "status", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 3 and "404" in missing.stderr
    summary = calib(stack, "status", fit["id"])
    assert summary.returncode == 0 and "succeeded" in summary.stdout
    assert "t_c = 0.536709 * t_u -17.301" in summary.stdout
    bad = calib(stack, "fit", str(data), "--validation", '{"indices": [20]}')
    assert bad.returncode == 3 and "validation.indices[0]" in bad.stderr
    slow = calib(
        stack, "fit", str(data), "--input-scale", "0.1", "--wait", "--timeout", "0"
    )  # a fresh fit is queued: not done in 0 s
    assert slow.returncode == 4, slow.stderr


def test_a_first_fit_of_raw_data_is_stopped_before_it_diverges(stack: Stack, tmp_path: Path) -> None:
    """The book's defaults (lr 1e-2, raw t_u, 5000 epochs) diverge at epoch 11: `calib fit` says so
    before submitting, with the command that converges (exit 2); --yes submits it and it diverges as
    the book's does; --auto converges, and its loss is the least-squares line's."""
    data = tmp_path / "thermo.csv"
    data.write_text("t_u,t_c\n" + "".join(f"{u},{c}\n" for u, c in zip(T_U, T_C, strict=True)))
    before = [f["id"] for f in stack.http.get("/v1/fits?limit=1000").json()["items"]]
    refused = calib(stack, "fit", str(data), "--wait", "--label", "who=newcomer")
    assert refused.returncode == 2, refused.stderr
    assert "exceeds the stable limit 0.00034" in refused.stderr and "Nothing was submitted" in refused.stderr
    proposed = next(line.strip() for line in refused.stderr.splitlines() if line.strip().startswith("calib fit"))
    assert "--learning-rate auto --normalize standardize --epochs auto" in proposed and "--wait" in proposed
    assert [f["id"] for f in stack.http.get("/v1/fits?limit=1000").json()["items"]] == before  # nothing submitted
    # The proposed command, as printed, converges.
    args = shlex.split(proposed)[1:]
    converged = calib(stack, *args, "--json")
    assert converged.returncode == 0, converged.stderr
    fit = json.loads(converged.stdout)
    ols = sm.OLS(np.asarray(T_C), sm.add_constant(np.asarray(T_U))).fit()
    assert fit["result"]["converged"] is True and fit["labels"] == {"who": "newcomer"}
    assert math.isclose(fit["result"]["loss"], ols.ssr / len(T_U), rel_tol=1e-9)
    forced = calib(stack, "fit", str(data), "--yes", "--wait", "--json")
    assert forced.returncode == 1 and json.loads(forced.stdout)["diverged_at_epoch"] == 11
    auto = calib(stack, "fit", str(data), "--auto", "--wait")
    assert auto.returncode == 0, auto.stderr
    assert "verdict  converged" in auto.stdout and f"loss     {ols.ssr / len(T_U):.6g} (of this line" in auto.stdout
    clash = calib(stack, "fit", str(data), "--auto", "--epochs", "10")
    assert clash.returncode == 2 and "drop --epochs" in clash.stderr


def test_list_and_plot(stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "thermometer.csv"
    data.write_text("t_u,t_c\n" + "".join(f"{u},{c}\n" for u, c in zip(T_U, T_C, strict=True)))
    done = calib(
        stack,
        "fit",
        str(data),
        "--input-scale",
        "0.1",
        "--epochs",
        "3000",
        "--optimizer",
        "sgd",
        "--validation",
        '{"indices": [2, 10]}',
        "--label",
        "sensor=plot",
        "--wait",
        "--json",
    )
    fit = json.loads(done.stdout)
    listed = calib(stack, "list", "--label", "sensor:plot")
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:3] == ["id", "status", "epochs"] and row.startswith(fit["id"][:8])
    assert "succeeded" in row and "3000/3000" in row and "sensor=plot" in row
    text = calib(stack, "losses", fit["id"]).stdout.splitlines()
    assert len(text) == 3000 and text[-1].startswith("Epoch 3000, Loss 3.0125") and "Validation loss 3.575" in text[-1]
    out = tmp_path / "loss.png"
    drawn = calib(stack, "plot", fit["id"], "--out", str(out))
    assert drawn.returncode == 0, drawn.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_batch_wait_out(stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "sensors.csv"
    lines = ["series,t_u,t_c"]
    for series in ("A17", "B02", "C33"):
        lines += [f"{series},{u},{c}" for u, c in zip(T_U, T_C, strict=True)]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.csv"
    done = calib(stack, "batch", str(data), "--input-scale", "0.1", "--wait", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert sorted(r["series"] for r in rows) == ["A17", "B02", "C33"]
    assert all(r["status"] == "succeeded" and abs(float(r["w_raw"]) - 0.53671) < 1e-4 for r in rows)


def _night(path: Path, offset: dict[str, float]) -> Path:
    """Two cold-room thermometers read at six reference temperatures; `offset` moves one's readings."""
    lines = ["series,t_u,t_c"]
    for k, name in enumerate(("CR-1", "CR-2")):
        for i, c in enumerate((-20.0, -10.0, 0.0, 10.0, 20.0, 30.0)):
            wobble = (0.03, -0.02, 0.01, -0.03, 0.02, -0.01)[i]
            u = (c - offset.get(name, 0.0) + 17.0 + wobble) / (0.5 + 0.01 * k)
            lines.append(f"{name},{u:.5f},{c}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_instruments_instrument_and_apply(stack: Stack, tmp_path: Path) -> None:
    options = ["--epochs", "20000", "--learning-rate", "auto", "--input-scale", "0.1", "--wait"]
    first = calib(stack, "batch", str(_night(tmp_path / "n1.csv", {})), *options)
    assert first.returncode == 0, first.stderr
    second = calib(stack, "batch", str(_night(tmp_path / "n2.csv", {"CR-2": 1.5})), *options)
    assert second.returncode == 0 and "1 instruments DRIFTED" in second.stdout, second.stdout + second.stderr

    drifted = calib(stack, "instruments", "--drifted")
    assert drifted.returncode == 0 and "CR-2" in drifted.stdout and "CR-1" not in drifted.stdout
    history = calib(stack, "instrument", "CR-2")
    assert history.returncode == 1 and "DRIFTED" in history.stdout and "first" in history.stdout
    assert calib(stack, "instrument", "CR-1").returncode == 0

    readings = tmp_path / "readings.csv"
    readings.write_text("instrument,t_u\n" + "".join(f"CR-{1 + i % 2},{30 + i}\n" for i in range(1000)))
    out = tmp_path / "calibrated.csv"
    applied = calib(stack, "apply", str(readings), "--out", str(out), "--interval", "0.95")
    assert applied.returncode == 0 and "1,000 readings" in applied.stderr, applied.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    current = {
        name: json.loads(calib(stack, "instrument", name, "--json").stdout)["current"] for name in ("CR-1", "CR-2")
    }
    assert len(rows) == 1000
    for row in rows[:10]:
        line = current[row["instrument"]]
        assert float(row["t_c"]) == line["w_raw"] * float(row["t_u"]) + line["b_raw"]
        assert float(row["lower"]) < float(row["t_c"]) < float(row["upper"]) and row["fit_id"] == line["fit_id"]
    readings.write_text("instrument,t_u\nCR-1,1\nNOT-ONE,2\n")
    unknown = calib(stack, "apply", str(readings), "--out", str(out))
    assert unknown.returncode == 3 and "row 2" in unknown.stderr


def test_fit_a_model_and_plot_it(stack: Stack, tmp_path: Path) -> None:
    """`calib fit --model polynomial --degree 2` (the chapter's exercise) and `--model callendar_van_dusen`:
    the summary names each parameter with its uncertainty, and `calib plot` draws the curve."""
    data = tmp_path / "thermometer.csv"
    data.write_text("t_u,t_c\n" + "".join(f"{u},{c}\n" for u, c in zip(T_U, T_C, strict=True)))
    quadratic = calib(stack, "fit", str(data), "--model", "polynomial", "--degree", "2", "--auto", "--wait")
    assert quadratic.returncode == 0, quadratic.stderr
    assert "model    polynomial, degree 2" in quadratic.stdout and "  a2 " in quadratic.stdout
    assert "verdict  converged" in quadratic.stdout
    t = np.linspace(-50.0, 400.0, 10)
    resistance = 100 * (1 + 3.9083e-3 * t - 5.775e-7 * t**2 + np.where(t < 0, -4.183e-12, 0.0) * (t - 100) * t**3)
    prt = tmp_path / "pt100.csv"
    prt.write_text(
        "t_u,t_c\n" + "".join(f"{r!r},{c!r}\n" for r, c in zip(resistance.tolist(), t.tolist(), strict=True))
    )
    done = calib(stack, "fit", str(prt), "--model", "callendar_van_dusen", "--auto", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    fit = json.loads(done.stdout)
    assert abs(fit["result"]["parameters"]["R0"] - 100) < 1e-3 and fit["result"]["parameter_names"][-1] == "R0"
    out = tmp_path / "pt100.png"
    drawn = calib(stack, "plot", fit["id"], "--out", str(out))
    assert drawn.returncode == 0, drawn.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = calib(stack, "fit", str(data), "--degree", "2")
    assert wrong.returncode == 2 and "--degree goes with --model polynomial" in wrong.stderr
