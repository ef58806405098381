"""The batched sgd/momentum/adam/rmsprop engine against torch.optim itself, fit by fit, in float64;
the optimizers' declarations (shared/contract/optimizers.py) and rules (engine/rules.py) name the same set."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
import pytest
import torch

from services.worker.engine import SeriesBatch
from services.worker.engine.iterative import Iterative
from services.worker.engine.rules import RULES
from shared.contract.optimizers import DECLARED, Name, options_of
from tests.oracles import torch_optim_run

EPOCHS = 300


@pytest.mark.parametrize(
    "kind, lr, given",
    [
        ("sgd", 1e-2, {}),
        ("momentum", 5e-3, {"momentum": 0.9}),
        ("adam", 0.1, {}),
        ("adam", 0.05, {"betas": (0.8, 0.99), "eps": 1e-3}),
        ("rmsprop", 3e-2, {}),
        ("rmsprop", 3e-3, {"alpha": 0.9, "eps": 1e-4}),
    ],
)
def test_matches_torch_optim(kind: str, lr: float, given: dict[str, Any]) -> None:
    options = options_of(kind, **given)
    rng = np.random.default_rng(11)
    xs = [rng.normal(3, 2, n) for n in (2, 7, 50)]
    ys = [0.5 * x - 1 + rng.normal(0, 0.3, len(x)) for x in xs]
    batch = SeriesBatch.build(
        xs, ys, epochs=[EPOCHS] * 3, learning_rate=[lr] * 3, input_scale=[1.0] * 3, w0=[1.0] * 3, b0=[0.0] * 3
    )
    engine = Iterative(batch, kind, [options] * 3).complete()
    got = engine.losses(1, EPOCHS, torch.float64).numpy()
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        expected = np.array(torch_optim_run(x, y, kind, lr, options, EPOCHS)[0])
        # The engine keeps losses in float32, as they are stored.
        np.testing.assert_allclose(got[i], expected, rtol=2e-7, atol=1e-7 * expected[0])
    assert engine.diverged_at.tolist() == [0, 0, 0]


def test_a_diverging_fit_freezes_while_the_others_go_on() -> None:
    x, y = [35.7, 55.9, 58.2, 81.9], [0.5, 14.0, 15.0, 28.0]
    batch = SeriesBatch.build(
        [x, x],
        [y, y],
        epochs=[100, 100],
        learning_rate=[1e-2, 1e-2],
        input_scale=[1.0, 0.1],
        w0=[1.0, 1.0],
        b0=[0.0, 0.0],
    )
    engine = Iterative(batch, "sgd", [options_of("sgd")] * 2).complete()
    assert int(engine.diverged_at[0]) == 11 and int(engine.diverged_at[1]) == 0  # as the book's gd run
    assert int(engine.epochs_done[0]) == int(engine.diverged_at[0]) - 1
    losses = engine.losses(1, 100, torch.float32)
    assert torch.isnan(losses[0, int(engine.epochs_done[0]) :]).all()
    assert not torch.isnan(losses[1]).any()


def test_fits_of_different_lengths_and_options_in_one_call() -> None:
    x, y = [35.7, 55.9, 58.2, 81.9, 56.3], [0.5, 14.0, 15.0, 28.0, 11.0]
    batch = SeriesBatch.build(
        [x] * 3,
        [y] * 3,
        epochs=[50, 200, 120],
        learning_rate=[0.1, 0.05, 0.1],
        input_scale=[1.0] * 3,
        w0=[1.0] * 3,
        b0=[0.0] * 3,
    )
    options = [
        options_of("adam", betas=(b1, b2), eps=eps)
        for b1, b2, eps in [(0.9, 0.999, 1e-8), (0.8, 0.99, 1e-6), (0.9, 0.999, 1e-8)]
    ]
    together = Iterative(batch, "adam", options).complete()
    for i, (epochs, lr, b1, b2, eps) in enumerate(
        [(50, 0.1, 0.9, 0.999, 1e-8), (200, 0.05, 0.8, 0.99, 1e-6), (120, 0.1, 0.9, 0.999, 1e-8)]
    ):
        alone = Iterative(
            SeriesBatch.build([x], [y], epochs=[epochs], learning_rate=[lr], input_scale=[1.0], w0=[1.0], b0=[0.0]),
            "adam",
            [options_of("adam", betas=(b1, b2), eps=eps)],
        ).complete()
        assert int(together.epochs_done[i]) == epochs
        torch.testing.assert_close(
            together.losses(1, 200, torch.float32)[i, :epochs], alone.losses(1, epochs, torch.float32)[0]
        )
        assert torch.isnan(together.losses(1, 200, torch.float32)[i, epochs:]).all()
        assert float(together.w[i]) == pytest.approx(float(alone.w[0]), rel=1e-12)
        assert float(together.b[i]) == pytest.approx(float(alone.b[0]), rel=1e-12)


@pytest.mark.parametrize("gradient", ["analytic", "autograd", "finite_difference"])
def test_the_three_gradients_of_gd_agree_with_the_closed_form(gradient: str) -> None:
    from services.worker.engine import GradientDescent

    rng = np.random.default_rng(5)
    xs = [rng.normal(5, 2, n) for n in (3, 11, 40)]
    ys = [0.5 * x - 1 + rng.normal(0, 0.3, len(x)) for x in xs]
    batch = SeriesBatch.build(
        xs, ys, epochs=[500] * 3, learning_rate=[1e-2] * 3, input_scale=[1.0] * 3, w0=[1.0] * 3, b0=[0.0] * 3
    )
    engine = Iterative(batch, "gd", [options_of("gd", gradient=gradient)] * 3).complete()
    exact = GradientDescent(batch)
    torch.testing.assert_close(
        engine.losses(1, 500, torch.float64), exact.losses(1, 500, torch.float32).double(), rtol=1e-6, atol=0
    )
    torch.testing.assert_close(engine.w, exact.w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(engine.b, exact.b, rtol=1e-9, atol=1e-12)


def test_every_declared_optimizer_has_its_rule() -> None:
    """A new optimizer is a declaration (shared/contract/optimizers.py) and a rule (engine/rules.py): the
    flat form's names, the union's kinds and the engine's rules are one set."""
    assert list(DECLARED) == list(get_args(Name))
    assert set(RULES) == set(DECLARED)
