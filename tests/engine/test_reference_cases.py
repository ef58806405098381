"""Both engines reproduce every figure of thermometer.json (each case on its own)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from services.worker.engine import GradientDescent, SeriesBatch, reference_fit
from tests.conftest import DATA
from tests.tolerance import loss_close, param_close

REFERENCE = json.loads((DATA / "thermometer.json").read_text())
CASES = [c for c in REFERENCE["cases"] if c["request"]["optimizer"] == "gd"]


def one_fit(case: dict[str, Any]) -> SeriesBatch:
    r = case["request"]
    return SeriesBatch.build(
        [REFERENCE["t_u"]],
        [REFERENCE["t_c"]],
        epochs=[r["epochs"]],
        learning_rate=[r["learning_rate"]],
        input_scale=[r["input_scale"]],
        w0=[r["init"]["w"]],
        b0=[r["init"]["b"]],
    )


def check(case: dict[str, Any], losses: torch.Tensor, done: int, diverged_at: int, w: float, b: float) -> None:
    for epoch, expected in case["losses"].items():
        got = float(losses[int(epoch) - 1])
        assert loss_close(got, expected), (epoch, got, expected)
    if case.get("expected_status") == "diverged":
        assert diverged_at == case["diverged_at_epoch"]
        assert done == diverged_at - 1
        assert torch.isnan(losses[diverged_at - 1 :]).all()
    else:
        assert diverged_at == 0
        assert done == case["request"]["epochs"]
        assert param_close(w, case["params"]["w"]) if "params" in case else True
        assert param_close(b, case["params"]["b"]) if "params" in case else True
    if "params_raw_units" in case:
        assert param_close(w * case["request"]["input_scale"], case["params_raw_units"]["w"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_closed_form_reproduces_the_book(case: dict[str, Any]) -> None:
    engine = GradientDescent(one_fit(case))
    losses = engine.losses(1, case["request"]["epochs"], torch.float64)[0]
    check(case, losses, int(engine.epochs_done[0]), int(engine.diverged_at[0]), float(engine.w[0]), float(engine.b[0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_book_loop_reproduces_the_book(case: dict[str, Any], dtype: torch.dtype) -> None:
    out = reference_fit(one_fit(case), dtype)
    check(case, out.losses[0], int(out.epochs_done[0]), int(out.diverged_at[0]), float(out.w[0]), float(out.b[0]))


def test_all_cases_in_one_batch_match_each_alone() -> None:
    """Fits of different epochs and learning rates share one call and do not disturb each other."""
    reqs = [c["request"] for c in CASES]
    batch = SeriesBatch.build(
        [REFERENCE["t_u"]] * len(CASES),
        [REFERENCE["t_c"]] * len(CASES),
        epochs=[r["epochs"] for r in reqs],
        learning_rate=[r["learning_rate"] for r in reqs],
        input_scale=[r["input_scale"] for r in reqs],
        w0=[1.0] * len(CASES),
        b0=[0.0] * len(CASES),
    )
    engine = GradientDescent(batch)
    losses = engine.losses(1, max(r["epochs"] for r in reqs), torch.float64)
    for i, case in enumerate(CASES):
        check(
            case,
            losses[i],
            int(engine.epochs_done[i]),
            int(engine.diverged_at[i]),
            float(engine.w[i]),
            float(engine.b[i]),
        )
