"""Validation splits and early stopping through the HTTP API, on both backends: the book's split
run, the validation losses in pages, CSV and buckets, seeded fractions, early stopping that a
client can re-derive from the served losses, and a mixed batch whose fits each end their own way."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from tests.conftest import DATA
from tests.oracles import keras_stop, mse_at_line
from tests.stack import Stack
from tests.tolerance import param_close, printed_loss_close

REFERENCE = json.loads((DATA / "thermometer.json").read_text())
SPLIT_RUN = REFERENCE["validation_split_run"]
DATA_BODY = {"t_u": REFERENCE["t_u"], "t_c": REFERENCE["t_c"]}


def val_losses(stack: Stack, fit_id: str) -> tuple[list[float], list[float]]:
    page = stack.http.get(f"/v1/fits/{fit_id}/losses?limit=100000").json()
    return page["loss"], page["val_loss"]


def test_the_books_split_run(stack: Stack) -> None:
    done = stack.wait(stack.submit({**DATA_BODY, **SPLIT_RUN["request"]})["id"])
    assert done["status"] == "succeeded" and done["stop_reason"] == "completed", done
    assert done["params"]["validation"] == {"fraction": None, "seed": None, "indices": [2, 10]}
    loss, val = val_losses(stack, done["id"])
    assert len(loss) == len(val) == 3000
    assert printed_loss_close(loss[-1], SPLIT_RUN["epoch_3000"]["loss"])
    assert printed_loss_close(val[-1], SPLIT_RUN["epoch_3000"]["val_loss"])
    result = done["result"]
    assert param_close(result["w"], SPLIT_RUN["params"]["w"]) and param_close(result["b"], SPLIT_RUN["params"]["b"])
    assert result["last_epoch_loss"] == loss[-1] and result["last_epoch_val_loss"] == val[-1]
    # The result's losses are those of its line, on the training and on the held-out points.
    held = SPLIT_RUN["request"]["validation"]["indices"]
    kept = [i for i in range(len(REFERENCE["t_u"])) if i not in held]
    for name, points in (("loss", kept), ("val_loss", held)):
        at_line = mse_at_line(
            [REFERENCE["t_u"][i] for i in points],
            [REFERENCE["t_c"][i] for i in points],
            result["w_raw"],
            result["b_raw"],
        )
        assert math.isclose(result[name], at_line, rel_tol=1e-9), (name, result[name], at_line)
    # The statistics are the training points': 9 of them, without the held-out 2 and 10.
    train = sorted(SPLIT_RUN["train_indices"])
    t_u = [REFERENCE["t_u"][i] for i in train]
    mean = sum(t_u) / len(t_u)
    assert math.isclose(
        result["w_opt"],
        sum((u - mean) * REFERENCE["t_c"][i] for u, i in zip(t_u, train, strict=True))
        / sum((u - mean) ** 2 for u in t_u),
        rel_tol=1e-9,
    )

    text = stack.http.get(f"/v1/fits/{done['id']}/losses?format=csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["epoch", "loss", "val_loss"] and len(rows) == 3000
    assert float(rows[-1]["val_loss"]) == val[-1]
    buckets = stack.http.get(f"/v1/fits/{done['id']}/losses?points=10").json()["buckets"]
    assert len(buckets) == 10 and buckets[-1]["val_last"] == val[-1]
    assert buckets[0]["val_max"] == max(val[:300]) and buckets[0]["val_min"] == min(val[:300])


def test_a_fraction_with_a_seed_holds_out_the_same_points_and_standardizes_on_the_rest(stack: Stack) -> None:
    body = {
        **DATA_BODY,
        "epochs": 200,
        "optimizer": "adam",
        "learning_rate": 0.1,
        "normalize": "standardize",
        "validation": {"fraction": 0.2, "seed": 7},
    }
    first, second = stack.submit(body), stack.submit(body)
    indices = first["params"]["validation"]["indices"]
    assert len(indices) == 2 and indices == second["params"]["validation"]["indices"]
    assert first["params"]["validation"]["seed"] == 7
    kept = [u for i, u in enumerate(REFERENCE["t_u"]) if i not in indices]
    assert math.isclose(first["params"]["input_shift"], sum(kept) / len(kept), rel_tol=1e-12)
    done = stack.wait(first["id"])
    assert done["status"] == "succeeded" and done["result"]["val_loss"] is not None
    unseeded = stack.submit({**DATA_BODY, "epochs": 10, "validation": {"fraction": 0.2}})
    assert unseeded["params"]["validation"]["seed"] == 0


def test_early_stopping_ends_where_the_served_losses_say(stack: Stack) -> None:
    rule = {"monitor": "val_loss", "min_delta": 1e-3, "patience": 10}
    done = stack.wait(stack.submit({**DATA_BODY, **SPLIT_RUN["request"], "early_stopping": rule})["id"])
    assert done["status"] == "succeeded" and done["stop_reason"] == "early_stopped", done
    assert done["params"]["early_stopping"] == rule
    loss, val = val_losses(stack, done["id"])
    full = stack.wait(stack.submit({**DATA_BODY, **SPLIT_RUN["request"]})["id"])
    _, full_val = val_losses(stack, full["id"])
    stop = keras_stop(full_val, 10, 1e-3, 3000)
    assert done["epochs_done"] == stop == len(loss) == len(val) < 3000
    assert val == full_val[:stop]
    # Its result is the fit of exactly that many epochs.
    exact = stack.wait(stack.submit({**DATA_BODY, **SPLIT_RUN["request"], "epochs": stop})["id"])
    assert done["result"]["w"] == exact["result"]["w"] and done["result"]["b"] == exact["result"]["b"]
    assert exact["stop_reason"] == "completed"
    # Without a split the monitor is the training loss.
    plain = stack.submit({**DATA_BODY, "epochs": 100, "early_stopping": {"patience": 3}})
    assert plain["params"]["early_stopping"] == {"monitor": "loss", "min_delta": 0.0, "patience": 3}


def test_bad_splits_and_rules_are_422s_naming_the_field(stack: Stack) -> None:
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"validation": {"indices": [2, 11]}}, ["validation", "indices", 1]),
        ({"validation": {"fraction": 0.05}}, ["validation", "fraction"]),
        ({"validation": {"indices": list(range(10))}}, ["validation"]),
        ({"validation": {"indices": [1], "seed": 2}}, ["validation", "seed"]),
        ({"validation": {"fraction": 0.2, "indices": [1]}}, ["validation"]),
        ({"early_stopping": {"monitor": "val_loss"}}, ["early_stopping", "monitor"]),
        ({"early_stopping": {"patience": 0}}, ["early_stopping", "patience"]),
        ({"early_stopping": {"min_delta": -1}}, ["early_stopping", "min_delta"]),
    ]
    for extra, loc in cases:
        r = stack.http.post("/v1/fits", json={**DATA_BODY, **extra})
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["errors"][0]["loc"] == loc, (extra, r.json())


def _worker_log(stack: Stack) -> str:
    return "".join(path.read_text() for path in stack.logs.glob("worker*.log"))


def test_a_mixed_batch_runs_as_one_chunk_and_each_fit_ends_its_own_way(stack: Stack) -> None:
    rule = {"monitor": "val_loss", "min_delta": 1e-3, "patience": 10}
    split_run = {k: v for k, v in SPLIT_RUN["request"].items()}
    fits = [
        {**DATA_BODY, **split_run, "labels": {"case": "book split"}},
        {**DATA_BODY, **split_run, "early_stopping": rule, "labels": {"case": "early sgd"}},
        {**DATA_BODY, **split_run, "optimizer": "gd", "early_stopping": rule, "labels": {"case": "early gd"}},
        {**DATA_BODY, "optimizer": "adam", "learning_rate": 0.1, "epochs": 2000, "labels": {"case": "adam"}},
        {
            **DATA_BODY,
            "optimizer": "momentum",
            "learning_rate": 1e-3,
            "input_scale": 0.1,
            "epochs": 500,
            "validation": {"fraction": 0.3, "seed": 1},
            "labels": {"case": "momentum split"},
        },
        {**DATA_BODY, "learning_rate": 1e-2, "epochs": 100, "labels": {"case": "divergent"}},
        {
            **DATA_BODY,
            "learning_rate": 1e-2,
            "epochs": 100,
            "optimizer": "sgd",
            "early_stopping": {"patience": 20},
            "labels": {"case": "divergent sgd with a rule"},
        },
    ]
    runs_before = _worker_log(stack).count(f"claimed {len(fits)} fits")
    r = stack.http.post("/v1/batches", json={"defaults": {"init": {"w": 1.0, "b": 0.0}}, "fits": fits})
    assert r.status_code == 202, r.text
    assert stack.wait_batch(r.json()["id"])["status"] == "completed"
    items = stack.http.get(f"/v1/batches/{r.json()['id']}/fits?limit=100").json()["items"]
    by_case = {fit["labels"]["case"]: fit for fit in items}
    assert {fit["attempt"] for fit in items} == {1}
    assert _worker_log(stack).count(f"claimed {len(fits)} fits") == runs_before + 1  # one claim, one run

    book = by_case["book split"]
    assert book["stop_reason"] == "completed" and param_close(book["result"]["w"], SPLIT_RUN["params"]["w"])
    for case in ("early sgd", "early gd"):  # gd and sgd are the same update: the same stop
        assert by_case[case]["stop_reason"] == "early_stopped"
        assert by_case[case]["epochs_done"] == by_case["early sgd"]["epochs_done"] < 3000
    assert by_case["adam"]["status"] == "succeeded" and by_case["adam"]["epochs_done"] == 2000
    assert by_case["momentum split"]["status"] == "succeeded" and by_case["momentum split"]["result"]["val_loss"]
    for case in ("divergent", "divergent sgd with a rule"):
        assert by_case[case]["status"] == "diverged" and by_case[case]["diverged_at_epoch"] == 11, by_case[case]
        assert by_case[case]["stop_reason"] is None
