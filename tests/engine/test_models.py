"""Models behind one seam: any model linear in its parameters runs in the closed form from the
eigen-decomposition of its Gram matrix, and agrees with the book's training loop written for that
model (autograd, float64) epoch by epoch, including the chapter's own exercise, the quadratic
w2·t_u² + w1·t_u + b."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from services.worker.engine import GradientDescent, SeriesBatch, convergence
from services.worker.engine.iterative import Iterative
from services.worker.engine.models import LINE, Polynomial, model_of
from services.worker.engine.series import FLOAT32_MAX
from services.worker.engine.spectra import LineSpectrum
from shared.contract.optimizers import options_of
from tests.oracles import torch_optim


def batch_of(t_u: list[np.ndarray], t_c: list[np.ndarray], epochs: int, lr: float, scale: float) -> SeriesBatch:
    k = len(t_u)
    return SeriesBatch.build(
        t_u, t_c, epochs=[epochs] * k, learning_rate=[lr] * k, input_scale=[scale] * k, w0=[1.0] * k, b0=[0.0] * k
    )


def the_books_loop(
    model: Polynomial, x: np.ndarray, y: np.ndarray, theta0: list[float], lr: float, epochs: int
) -> tuple[list[float], torch.Tensor, int]:
    """Chapter 5's loop for this model: loss before each update, autograd's gradient, float64; the
    epoch whose sum of squared residuals passes float32's range is the divergence (0: none)."""
    xs, ys = torch.tensor(x), torch.tensor(y)
    theta = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        t_p = (model.features(xs) * theta[:-1]).sum(-1) + theta[-1]
        loss = ((t_p - ys) ** 2).mean()
        if not float(loss.detach()) * len(x) <= FLOAT32_MAX:
            return losses, theta.detach(), epoch
        losses.append(float(loss.detach()))
        theta.grad = None
        loss.backward()
        assert theta.grad is not None
        with torch.no_grad():
            theta -= lr * theta.grad
    return losses, theta.detach(), 0


def start_of(model: Polynomial, fits: int) -> torch.Tensor:
    """The book's start for the line (w = 1, b = 0), extended: every other coefficient 0."""
    ones = torch.ones(fits, dtype=torch.float64)
    return model.start(ones, 0 * ones)


@pytest.mark.parametrize("lr,epochs", [(1e-2, 300), (5e-4, 5000), (1e-4, 5000)])
def test_the_chapters_quadratic_exercise_matches_its_training_loop(
    reference: dict[str, Any], lr: float, epochs: int
) -> None:
    # t_u scaled by 0.1, as the book does. The line's learning rate, 1e-2, is past 2/λ_max of the
    # quadratic (x² up to 67 makes E[x⁴] about 1,000): it diverges, as the exercise finds.
    t_u, t_c = np.asarray(reference["t_u"]), np.asarray(reference["t_c"])
    model = Polynomial(2)
    batch = batch_of([t_u], [t_c], epochs, lr, 0.1)
    fast = GradientDescent(batch, model=model, theta0=start_of(model, 1))
    losses, theta, diverged = the_books_loop(model, 0.1 * t_u, t_c, [1.0, 0.0, 0.0], lr, epochs)
    assert int(fast.diverged_at[0]) == diverged
    done = int(fast.epochs_done[0])
    assert done == len(losses)
    np.testing.assert_allclose(fast.losses(1, done, torch.float64)[0].numpy(), losses, rtol=1e-9)
    if not diverged:
        np.testing.assert_allclose(fast.theta[0].numpy(), theta.numpy(), rtol=1e-8, atol=1e-10)
    assert (diverged > 0) == (lr == 1e-2)
    # The exercise's question, is the loss lower: at the optimum, yes (a line is a quadratic with w2 = 0).
    assert float(fast.spectrum.loss_opt[0]) < float(GradientDescent(batch).spectrum.loss_opt[0])


@pytest.mark.parametrize("degree", [1, 3, 5])
def test_polynomials_match_their_training_loop_with_a_validation_split(degree: int) -> None:
    rng = np.random.default_rng(degree)
    t_u = [rng.uniform(-1, 1, n) for n in (14, 30, 12)]
    t_c = [1 + 2 * u - 0.5 * u**3 + rng.normal(0, 0.05, len(u)) for u in t_u]
    held = [u[:3] for u in t_u], [c[:3] for c in t_c]
    train = [u[3:] for u in t_u], [c[3:] for c in t_c]
    model = Polynomial(degree)
    lr, epochs = 0.05, 400
    fast = GradientDescent(
        batch_of(*train, epochs, lr, 1.0),
        batch_of(*held, epochs, lr, 1.0),
        model=model,
        theta0=start_of(model, 3),
    )
    val = fast.val_losses(1, epochs)
    assert val is not None
    for i in range(3):
        losses, theta, diverged = the_books_loop(model, train[0][i], train[1][i], [1.0] + [0.0] * degree, lr, epochs)
        assert diverged == 0
        np.testing.assert_allclose(fast.losses(1, epochs, torch.float64)[i].numpy(), losses, rtol=1e-9)
        np.testing.assert_allclose(fast.theta[i].numpy(), theta.numpy(), rtol=1e-9, atol=1e-12)
        # The validation loss of each epoch: at the parameters before that epoch's update.
        before = [torch.tensor([1.0] + [0.0] * degree, dtype=torch.float64)]
        before += list(fast.params_after(torch.arange(1, epochs, dtype=torch.int64)[None, :].expand(3, -1))[i])
        xs, ys = torch.tensor(held[0][i]), torch.tensor(held[1][i])
        expected = [float((((model.features(xs) * t[:-1]).sum(-1) + t[-1] - ys) ** 2).mean()) for t in before]
        np.testing.assert_allclose(val[i].numpy(), expected, rtol=1e-5)


def test_a_degree_one_polynomial_is_the_line() -> None:
    # The same function through torch's eigh instead of the line's closed-form 2×2: the same figures
    # to rounding, so the general path is checked against the published one.
    rng = np.random.default_rng(7)
    t_u = [rng.uniform(20, 90, n) for n in (5, 11, 40)]
    t_c = [0.55 * u - 17 + rng.normal(0, 1, len(u)) for u in t_u]
    batch = batch_of(t_u, t_c, 3000, 1e-2, 0.1)
    line, general = GradientDescent(batch), GradientDescent(batch, model=Polynomial(1))
    np.testing.assert_allclose(
        general.losses(1, 3000, torch.float64).numpy(), line.losses(1, 3000, torch.float64).numpy(), rtol=1e-9
    )
    np.testing.assert_allclose(general.theta.numpy(), line.theta.numpy(), rtol=1e-9)
    np.testing.assert_allclose(general.spectrum.theta_opt.numpy(), line.spectrum.theta_opt.numpy(), rtol=1e-9)


def test_raw_coefficients_predict_what_the_model_space_ones_do() -> None:
    model = Polynomial(3)
    theta = torch.tensor([[0.3, -0.2, 0.05, 1.5], [2.0, 0.0, -1.0, -4.0]], dtype=torch.float64)
    scale, shift = torch.tensor([0.1, 2.0], dtype=torch.float64), torch.tensor([50.0, -3.0], dtype=torch.float64)
    t_u = torch.linspace(-10, 90, 11, dtype=torch.float64)[None, :].expand(2, -1)
    in_model_space = model.predict(theta, (t_u - shift[:, None]) * scale[:, None])
    in_raw_units = model.predict(model.raw_coefficients(theta, scale, shift), t_u)
    np.testing.assert_allclose(in_raw_units.numpy(), in_model_space.numpy(), rtol=1e-10)


def test_models_are_named_as_the_contract_names_them() -> None:
    assert model_of("line") is LINE and LINE.names == ("w", "b")
    assert model_of("polynomial", degree=2).names == ("a1", "a2", "a0")
    with pytest.raises(ValueError):
        Polynomial(6)
    with pytest.raises(ValueError):
        model_of("spline")


def test_a_fit_whose_features_do_not_vary_gets_the_minimum_norm_optimum() -> None:
    # All t_u equal: only a0 + a1 x + a2 x² = mean(t_c) is determined; nothing is NaN.
    model = Polynomial(2)
    fast = GradientDescent(batch_of([np.full(6, 2.0)], [np.arange(6.0)], 50, 1e-3, 1.0), model=model)
    assert bool(fast.spectrum.theta_opt.isfinite().all()) and math.isfinite(float(fast.losses(50, 50, torch.float64)))
    prediction = model.predict(fast.spectrum.theta_opt, torch.tensor([[2.0]], dtype=torch.float64))
    assert float(prediction) == pytest.approx(2.5, rel=1e-9)


def test_every_gradient_of_the_iterative_engine_follows_the_closed_form_for_a_polynomial() -> None:
    # gd stepped epoch by epoch on the model's own gradient (analytic, autograd, or the book's
    # central difference) is the closed form's trajectory: its parameters to float64's rounding, its
    # losses to float32's (the iterative engine keeps them as they are stored).
    rng = np.random.default_rng(11)
    t_u = [rng.uniform(-1.5, 1.5, n) for n in (9, 25)]
    t_c = [0.3 - u + 0.8 * u**2 + rng.normal(0, 0.1, len(u)) for u in t_u]
    model, epochs = Polynomial(2), 300
    batch = batch_of(t_u, t_c, epochs, 0.05, 1.0)
    exact = GradientDescent(batch, model=model)
    for gradient in ("analytic", "autograd", "finite_difference"):
        options = options_of("gd", gradient=gradient, **({"delta": 1e-4} if gradient == "finite_difference" else {}))
        stepped = Iterative(batch, "gd", [options] * 2, model=model).complete()
        rtol = 1e-6 if gradient == "finite_difference" else 1e-9
        np.testing.assert_allclose(
            stepped.losses(1, epochs, torch.float64).numpy(), exact.losses(1, epochs, torch.float64).numpy(), rtol=2e-7
        )
        np.testing.assert_allclose(stepped.theta.numpy(), exact.theta.numpy(), rtol=rtol)


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam", "rmsprop"])
def test_a_quadratic_steps_as_torch_optim_steps_it(reference: dict[str, Any], kind: str) -> None:
    # The chapter's exercise with each of torch.optim's optimizers (the book's later sections),
    # torch.optim driving the model written as the book writes it.
    t_u, t_c = np.asarray(reference["t_u"]), np.asarray(reference["t_c"])
    model, lr, epochs = Polynomial(2), 1e-4, 500
    options = options_of(kind)
    engine = Iterative(batch_of([t_u], [t_c], epochs, lr, 0.1), kind, [options], model=model).complete()
    xs, ys = torch.tensor(0.1 * t_u), torch.tensor(t_c)
    params = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch_optim(kind, params, lr, options)
    losses = []
    for _ in range(epochs):
        w1, w2, b = params
        loss = ((w2 * xs**2 + w1 * xs + b - ys) ** 2).mean()
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    np.testing.assert_allclose(engine.losses(1, epochs, torch.float64)[0].numpy(), losses, rtol=1e-5)
    np.testing.assert_allclose(engine.theta[0].numpy(), params.detach().numpy(), rtol=1e-6, atol=1e-9)


def test_the_convergence_rule_on_vectors_finds_the_epoch_a_brute_force_walk_finds() -> None:
    # Each raw parameter within its target from some epoch on: found from the eigen-decomposition,
    # against every epoch's parameters mapped to raw units one by one.
    rng = np.random.default_rng(5)
    t_u = [rng.uniform(20, 90, n) for n in (8, 20, 13)]
    t_c = [3 + 0.4 * u - 0.002 * u**2 + rng.normal(0, 0.2, len(u)) for u in t_u]
    model, limit = Polynomial(2), 4000
    batch = SeriesBatch.build(
        t_u,
        t_c,
        epochs=[limit] * 3,
        learning_rate=[0.05] * 3,
        input_scale=[0.02] * 3,
        w0=[1.0] * 3,
        b0=[0.0] * 3,
        input_shift=[50.0] * 3,
    )
    fast = GradientDescent(batch, model=model)
    scale, shift = torch.full((3,), 0.02, dtype=torch.float64), torch.full((3,), 50.0, dtype=torch.float64)
    raw = model.raw_map(scale, shift)
    targets = torch.tensor([[1e-2, 1e-4, 1.0], [1e-3, 1e-5, 1e-1], [1e-3, 1e-5, 1e-1]], dtype=torch.float64)
    found = convergence.epochs_to_converge(
        convergence.deviations(fast.spectrum, raw),
        fast.spectrum,
        targets,
        torch.zeros(3, dtype=torch.float64),
        torch.ones(3, dtype=torch.bool),
        limit,
    )
    every = fast.params_after(torch.arange(0, limit + 1)[None, :].expand(3, -1))  # (3, limit + 1, p)
    best = model.raw_coefficients(fast.spectrum.theta_opt, scale, shift)
    for i in range(3):
        raw_every = model.raw_coefficients(every[i], scale[i].expand(limit + 1), shift[i].expand(limit + 1))
        inside = ((raw_every - best[i]).abs() <= targets[i]).all(1).numpy()
        expected = next(k for k in range(limit + 1) if inside[k:].all()) if inside[-1] else -1
        assert int(found[i]) == expected
    assert (found > 0).all()


# The convergence search's tests: inputs scaled by 1/35 about 55.
SCALE, SHIFT = 1 / 35, 55.0


def drawn_batch(
    rng: np.random.Generator, fits: int, limit: int, rates: Callable[[np.random.Generator], np.ndarray]
) -> SeriesBatch:
    """`fits` series of 4-14 points of a quadratic in t_u (20-90) with noise of sd 0.01, 0.3 or 2,
    each run `limit` epochs at the learning rate `rates` draws (after the series)."""
    t_u = [rng.uniform(20, 90, int(rng.integers(4, 15))) for _ in range(fits)]
    t_c = [3 + 0.4 * u - 0.002 * u**2 + rng.normal(0, rng.choice([0.01, 0.3, 2.0]), len(u)) for u in t_u]
    return SeriesBatch.build(
        t_u,
        t_c,
        epochs=[limit] * fits,
        learning_rate=list(rates(rng)),
        input_scale=[SCALE] * fits,
        w0=[1.0] * fits,
        b0=[0.0] * fits,
        input_shift=[SHIFT] * fits,
    )


@pytest.mark.parametrize("model", [LINE, Polynomial(2)], ids=["line", "quadratic"])
def test_the_convergence_scans_window_finds_the_brute_force_epoch_whatever_its_size(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rates up to the edge of stability (deviations that oscillate and cross their targets far
    below where the decreasing bound meets them) and targets over six decades: the backward scan,
    whatever its windows, finds the epoch a walk over every epoch finds."""
    rng = np.random.default_rng(11)
    fits, limit = 60, 3000
    fast = GradientDescent(drawn_batch(rng, fits, limit, lambda r: r.uniform(0.05, 0.85, fits)), model=model)
    scale, shift = torch.full((fits,), SCALE, dtype=torch.float64), torch.full((fits,), SHIFT, dtype=torch.float64)
    raw = model.raw_map(scale, shift)
    targets = torch.tensor(10 ** rng.uniform(-6, 0, (fits, raw.shape[1])))

    def found() -> torch.Tensor:
        coefficients = convergence.deviations(fast.spectrum, raw)
        no_excess = torch.zeros(fits, dtype=torch.float64)
        return convergence.epochs_to_converge(
            coefficients, fast.spectrum, targets, no_excess, torch.ones(fits, dtype=torch.bool), limit
        )

    every = fast.params_after(torch.arange(0, limit + 1)[None, :].expand(fits, -1))
    # The line's (w, b) are a degree-1 polynomial's (a1, a0): the same map to raw units.
    to_raw = model if isinstance(model, Polynomial) else Polynomial(1)
    best = to_raw.raw_coefficients(fast.spectrum.theta_opt, scale, shift)
    expected = []
    for i in range(fits):
        raw_every = to_raw.raw_coefficients(every[i], scale[i].expand(limit + 1), shift[i].expand(limit + 1))
        inside = ((raw_every - best[i]).abs() <= targets[i]).all(1).numpy()
        expected.append(next(k for k in range(limit + 1) if inside[k:].all()) if inside[-1] else -1)
    assert found().tolist() == expected
    # Windows of 1, 2 and 3 epochs: many passes, each fit closing in a later one.
    monkeypatch.setattr(convergence, "_FIRST_SCAN", 1)
    monkeypatch.setattr(convergence, "_SCAN", 3)
    assert found().tolist() == expected
    assert sum(k > 0 for k in expected) >= fits // 2 and -1 in expected


@pytest.mark.parametrize("model", [LINE, Polynomial(2)], ids=["line", "quadratic"])
def test_the_excess_loss_rule_finds_the_epoch_a_walk_over_every_epoch_finds(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule where standard errors are not defined: the excess loss Σ ½λz²ρ^2k within its target.
    Rates from slow to the edge of stability and targets over ten decades; the search (bracket, halvings,
    window, backward scan) agrees with the excess evaluated at every epoch, whether a fit's bracket
    is evaluated whole or halved down to the narrowest window."""
    rng = np.random.default_rng(17)
    fits, limit = 60, 3000
    slow_to_edge = drawn_batch(rng, fits, limit, lambda r: 10 ** r.uniform(-4, math.log10(0.99), fits))
    spectrum = GradientDescent(slow_to_edge, model=model).spectrum
    p = spectrum.rho.shape[1]
    target_excess = torch.tensor(10 ** rng.uniform(-10, 0, fits))
    k = torch.arange(0, limit + 1, dtype=torch.float64)
    walked = (spectrum.excess[:, None, :] * torch.pow(spectrum.rho[:, None, :], 2 * k[None, :, None])).sum(-1)
    inside = (walked <= target_excess[:, None]).numpy()
    expected = [next(j for j in range(limit + 1) if row[j:].all()) if row[-1] else -1 for row in inside]

    def found() -> list[int]:
        return convergence.epochs_to_converge(
            torch.zeros(fits, p, p, dtype=torch.float64),
            spectrum,
            torch.zeros(fits, p, dtype=torch.float64),
            target_excess,
            torch.zeros(fits, dtype=torch.bool),
            limit,
        ).tolist()

    assert found() == expected
    monkeypatch.setattr(convergence, "_CELLS", 0)  # every bracket halved down to _WINDOW epochs
    assert found() == expected
    assert sum(j > 0 for j in expected) >= fits // 3 and -1 in expected


def test_a_bracket_that_does_not_check_out_falls_back_to_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each end of the terms' bracket is checked on the bound itself: a wrong bracket (the bound
    holding at its low end, failing at its high end) costs halvings, never a wrong epoch."""
    rng = np.random.default_rng(23)
    fits, limit = 40, 3000
    fast = GradientDescent(drawn_batch(rng, fits, limit, lambda r: r.uniform(0.05, 0.9, fits)))
    scale, shift = torch.full((fits,), SCALE, dtype=torch.float64), torch.full((fits,), SHIFT, dtype=torch.float64)
    targets = torch.tensor(10 ** rng.uniform(-6, 0, (fits, 2)))

    def found() -> list[int]:
        coefficients = convergence.line_deviations(fast.spectrum, scale, shift)
        no_excess = torch.zeros(fits, dtype=torch.float64)
        return convergence.epochs_to_converge(
            coefficients, fast.spectrum, targets, no_excess, torch.ones(fits, dtype=torch.bool), limit
        ).tolist()

    right = found()
    assert sum(j > 0 for j in right) >= fits // 2
    wrong = (torch.full((fits,), limit - 1, dtype=torch.int64), torch.zeros(fits, dtype=torch.int64))
    monkeypatch.setattr(convergence, "_bracket", lambda *_: wrong)
    assert found() == right


def test_the_lines_raw_map_is_its_deviation_formulas() -> None:
    rng = np.random.default_rng(2)
    t_u = [rng.uniform(20, 90, n) for n in (5, 11)]
    t_c = [0.5 * u - 17 + rng.normal(0, 1, len(u)) for u in t_u]
    batch = SeriesBatch.build(
        t_u,
        t_c,
        epochs=[100] * 2,
        learning_rate=[0.01] * 2,
        input_scale=[0.1] * 2,
        w0=[1.0] * 2,
        b0=[0.0] * 2,
        input_shift=[40.0] * 2,
    )
    spectrum = GradientDescent(batch).spectrum
    assert isinstance(spectrum, LineSpectrum)
    scale, shift = torch.full((2,), 0.1, dtype=torch.float64), torch.full((2,), 40.0, dtype=torch.float64)
    np.testing.assert_allclose(
        convergence.deviations(spectrum, LINE.raw_map(scale, shift)).numpy(),
        convergence.line_deviations(spectrum, scale, shift).numpy(),
        rtol=1e-12,
        atol=1e-15,
    )
