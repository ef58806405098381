"""Optimizers through the API: either form of `optimizer`, the options as they ran in
`params.optimizer_options`, and a fit by RMSprop (the optimizer the registry's seam was proven with:
its declaration, its rule and this test) against torch.optim.RMSprop on the book's data."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.api.test_fits_api import problem
from tests.in_process import run_fit
from tests.oracles import torch_optim_run

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
EPOCHS = 500


def _losses(client: FlaskClient, fit_id: str) -> list[float]:
    page = client.get(f"/v1/fits/{fit_id}/losses?limit={EPOCHS}").get_json()
    return [float(v) for v in page["loss"]]


# Rates where the run is not chaotic: with alpha 0.9 at lr 1e-2, torch's own losses move by 3e-4
# (relative) when w0 moves by 1e-15, so no two implementations could agree there.
@pytest.mark.parametrize(
    "form, lr, options",
    [
        ({"optimizer": "rmsprop"}, 1e-2, {"alpha": 0.99, "eps": 1e-8}),
        ({"optimizer": {"kind": "rmsprop", "alpha": 0.9, "eps": 1e-6}}, 1e-3, {"alpha": 0.9, "eps": 1e-6}),
    ],
)
def test_a_fit_by_rmsprop_is_torchs(
    client: FlaskClient, form: dict[str, Any], lr: float, options: dict[str, float]
) -> None:
    body = {"t_u": T_U, "t_c": T_C, "input_scale": 0.1, "epochs": EPOCHS, "learning_rate": lr, **form}
    fit = client.post("/v1/fits", json=body).get_json()
    assert fit["params"]["optimizer"] == "rmsprop" and fit["params"]["optimizer_options"] == options
    run_fit(client, fit["id"])
    done = client.get(f"/v1/fits/{fit['id']}").get_json()
    assert done["status"] == "succeeded" and done["epochs_done"] == EPOCHS
    x = [0.1 * t for t in T_U]  # the book's input_scale
    losses, (w, b) = torch_optim_run(x, T_C, "rmsprop", lr, options, EPOCHS)
    # Losses are stored float32 (API.md), the parameters float64.
    assert _losses(client, fit["id"]) == pytest.approx(losses, rel=1e-5)
    assert done["result"]["w"] == pytest.approx(w, rel=1e-6) and done["result"]["b"] == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize(
    "form, options",
    [
        ({"optimizer": "adam", "betas": [0.8, 0.99]}, {"betas": [0.8, 0.99], "eps": 1e-8}),
        ({"optimizer": {"kind": "adam", "betas": [0.8, 0.99]}}, {"betas": [0.8, 0.99], "eps": 1e-8}),
        ({"optimizer": "momentum"}, {"momentum": 0.9}),
        (
            {"optimizer": {"kind": "gd", "gradient": "finite_difference"}},
            {"gradient": "finite_difference", "delta": 0.1},
        ),
        ({"gradient": "autograd"}, {"gradient": "autograd"}),
        ({"optimizer": {"kind": "sgd"}}, {}),
    ],
)
def test_both_forms_store_the_same_resolved_options(
    client: FlaskClient, form: dict[str, Any], options: dict[str, Any]
) -> None:
    fit = client.post("/v1/fits", json={"t_u": T_U, "t_c": T_C, **form}).get_json()
    assert fit["params"]["optimizer_options"] == options


@pytest.mark.parametrize(
    "form, loc",
    [
        ({"optimizer": "rmsprop", "alpha": 0.9}, ["alpha"]),  # a later optimizer's options: object form only
        ({"optimizer": {"kind": "adam"}, "eps": 1e-6}, ["eps"]),
        ({"optimizer": {"kind": "rmsprop", "alpha": 1.5}}, ["optimizer", "alpha"]),
        ({"optimizer": {"kind": "rmsprop", "betas": [0.9, 0.9]}}, ["optimizer", "betas"]),
        ({"optimizer": {"kind": "lbfgs"}}, ["optimizer"]),
        ({"optimizer": {"kind": "gd", "delta": 0.5}}, ["optimizer", "delta"]),
        ({"optimizer": "rmsprop", "momentum": 0.9}, ["momentum"]),
    ],
)
def test_a_wrong_optimizer_is_a_422_naming_the_field(client: FlaskClient, form: dict[str, Any], loc: list[str]) -> None:
    err = problem(client.post("/v1/fits", json={"t_u": T_U, "t_c": T_C, **form}), 422)
    assert err["errors"][0]["loc"] == loc, err
