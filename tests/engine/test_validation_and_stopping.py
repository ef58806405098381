"""Validation losses and early stopping in both engines: the book's split run, the stop rule
against a plain Keras-style loop, and a stopped fit's parameters against a run of exactly that length."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from services.worker.engine import GradientDescent, SeriesBatch
from services.worker.engine.iterative import Iterative
from services.worker.engine.stopping import StopRule
from shared.contract.optimizers import options_of
from shared.domain.splits import choose_indices, split
from tests.oracles import keras_stop
from tests.tolerance import param_close, printed_loss_close


def series(
    t_u: list[float],
    t_c: list[float],
    held_out: list[int],
    part: int,
    epochs: int,
    lr: float,
    scale: float = 0.1,
    copies: int = 1,
) -> SeriesBatch:
    u, c = split(t_u, held_out)[part], split(t_c, held_out)[part]
    return SeriesBatch.build(
        [u] * copies,
        [c] * copies,
        epochs=[epochs] * copies,
        learning_rate=[lr] * copies,
        input_scale=[scale] * copies,
        w0=[1.0] * copies,
        b0=[0.0] * copies,
    )


def sgd(batch: SeriesBatch, **kwargs: Any) -> Iterative:
    size = batch.size
    return Iterative(batch, "sgd", [options_of("sgd")] * size, **kwargs).complete()


@pytest.mark.parametrize("engine", ["sgd", "closed_form"])
def test_the_books_split_run(reference: dict[str, Any], engine: str) -> None:
    run = reference["validation_split_run"]
    held = run["request"]["validation"]["indices"]
    assert sorted(set(range(11)) - set(held)) == sorted(run["train_indices"])
    train, val = (series(reference["t_u"], reference["t_c"], held, part, 3000, 1e-2) for part in (0, 1))
    fit = sgd(train, validation=val) if engine == "sgd" else GradientDescent(train, val)
    val_losses = fit.val_losses(3000, 3000)
    assert val_losses is not None
    assert printed_loss_close(float(fit.losses(3000, 3000, torch.float32)[0, 0]), run["epoch_3000"]["loss"])
    assert printed_loss_close(float(val_losses[0, 0]), run["epoch_3000"]["val_loss"])
    assert param_close(float(fit.w[0]), run["params"]["w"]) and param_close(float(fit.b[0]), run["params"]["b"])


def test_a_fraction_and_seed_pick_the_same_points_every_time() -> None:
    picked = choose_indices(11, 0.2, seed=0)
    assert len(picked) == 2 and picked == choose_indices(11, 0.2, seed=0) and picked == sorted(picked)
    assert len({tuple(choose_indices(11, 0.2, seed)) for seed in range(20)}) > 5  # the seed matters


@pytest.mark.parametrize("min_delta", [0.0, 0.05])
@pytest.mark.parametrize("window", [1, 7, 64])
def test_the_stop_rule_is_kerass_rule_window_by_window(min_delta: float, window: int) -> None:
    rng = np.random.default_rng(3)
    epochs = 200
    # Noisy curves that go down and then up (over-fitting), some with NaN and inf in them.
    curves = np.abs(np.linspace(3, -3, epochs)[None, :] ** 2 + rng.normal(0, 0.3, (12, epochs))).astype(np.float32)
    curves[3, 50:] = np.inf
    curves[4, 10] = np.nan
    patience = [1, 2, 5, 10, 30, 250] * 2
    limits = [200, 200, 200, 120, 200, 200, 40, 200, 200, 200, 200, 5]
    rules = [{"monitor": "loss", "min_delta": min_delta, "patience": p} for p in patience]
    rules[8] = None  # a fit without the rule never stops
    rule = StopRule(rules, torch.tensor(limits))
    for first in range(1, epochs + 1, window):
        rule.update(torch.from_numpy(curves[:, first - 1 : first - 1 + window].T.copy()), first)
    expected = [
        keras_stop(curves[i].astype(np.float64).tolist(), patience[i], min_delta, limits[i]) if rules[i] else limits[i]
        for i in range(12)
    ]
    assert rule.epochs().tolist() == expected
    assert 0 < sum(e < lim for e, lim in zip(expected, limits, strict=True)) < 12  # both outcomes occur


@pytest.mark.parametrize("kind", ["sgd", "adam", "closed_form"])
@pytest.mark.parametrize("monitor", ["loss", "val_loss"])
def test_a_stopped_fit_is_the_fit_of_exactly_that_many_epochs(kind: str, monitor: str) -> None:
    rng = np.random.default_rng(5)
    t_u = list(rng.uniform(20, 80, 30))
    t_c = [0.55 * u - 17 + rng.normal(0, 2) for u in t_u]
    held = choose_indices(30, 0.3, seed=1)
    # Three fits: two with rules that stop at different epochs, one without a rule.
    rules: list[dict[str, Any] | None] = [
        {"monitor": monitor, "min_delta": 1e-3, "patience": 5},
        None,
        {"monitor": monitor, "min_delta": 0.0, "patience": 3},
    ]
    lr = 0.05 if kind == "adam" else 1e-2

    def run(epochs: list[int], stop: list[dict[str, Any] | None] | None) -> GradientDescent | Iterative:
        train = SeriesBatch.build(
            [split(t_u, held)[0]] * 3,
            [split(t_c, held)[0]] * 3,
            epochs=epochs,
            learning_rate=[lr] * 3,
            input_scale=[0.1] * 3,
            w0=[1.0] * 3,
            b0=[0.0] * 3,
        )
        val = SeriesBatch.build(
            [split(t_u, held)[1]] * 3,
            [split(t_c, held)[1]] * 3,
            epochs=epochs,
            learning_rate=[lr] * 3,
            input_scale=[0.1] * 3,
            w0=[1.0] * 3,
            b0=[0.0] * 3,
        )
        stopping = StopRule.of(stop, train.epochs) if stop else None
        if kind == "closed_form":
            return GradientDescent(train, val, stopping)
        return Iterative(train, kind, [options_of(kind)] * 3, validation=val, stopping=stopping).complete()

    stopped = run([3000] * 3, rules)
    full = run([3000] * 3, None)
    for i, rule in enumerate(rules):
        if rule is None:
            assert int(stopped.epochs_done[i]) == 3000 and not bool(stopped.stopped_early[i])
            continue
        curve = full.val_losses(1, 3000) if monitor == "val_loss" else full.losses(1, 3000, torch.float32)
        assert curve is not None
        expected = keras_stop(curve[i].double().tolist(), int(rule["patience"]), float(rule["min_delta"]), 3000)
        assert expected < 3000, "the case must actually stop early"
        assert int(stopped.epochs_done[i]) == expected and bool(stopped.stopped_early[i])
        alone = run([expected] * 3, None)
        assert float(stopped.w[i]) == pytest.approx(float(alone.w[i]), rel=1e-12)
        assert float(stopped.b[i]) == pytest.approx(float(alone.b[i]), rel=1e-12)
        kept = stopped.losses(1, 3000, torch.float32)[i]
        assert not bool(kept[:expected].isnan().any()) and bool(kept[expected:].isnan().all())
    # The fit without a rule went on undisturbed by the others stopping.
    assert float(stopped.w[1]) == float(full.w[1])


@pytest.mark.parametrize("lr", [1e-3, 1e-2, 0.058])  # 0.058: just stable, the steep direction oscillates (ρ < 0)
def test_the_closed_form_validation_curve_is_the_iterations(lr: float) -> None:
    rng = np.random.default_rng(9)
    t_u = list(rng.uniform(20, 80, 40))
    t_c = [0.55 * u - 17 + rng.normal(0, 2) for u in t_u]
    held = choose_indices(40, 0.25, seed=4)
    train, val = (series(t_u, t_c, held, part, 4000, lr, copies=2) for part in (0, 1))
    exact = GradientDescent(train, val)
    assert float(exact.spectrum.rho[0, 0]) < 0 if lr == 0.058 else float(exact.spectrum.rho[0, 0]) > 0
    iterated = Iterative(train, "gd", [options_of("gd")] * 2, validation=val).complete()
    got, want = exact.val_losses(1, 4000), iterated.val_losses(1, 4000)
    assert got is not None and want is not None
    np.testing.assert_allclose(got.double().numpy(), want.double().numpy(), rtol=2e-6)
    np.testing.assert_allclose(exact.val_losses(1777, 2001), iterated.val_losses(1777, 2001), rtol=2e-6)
