"""The engine on CUDA gives what it gives on the CPU (skipped where torch sees no GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.worker.engine import GradientDescent, SeriesBatch
from services.worker.engine.ends import ends_of
from services.worker.engine.iterative import Iterative
from shared.contract.optimizers import options_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path runs where one is")

T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def _batch(fits: int, epochs: int, device: str) -> SeriesBatch:
    rng = np.random.default_rng(7)
    return SeriesBatch.build(
        [T_U] * fits,
        list(np.asarray(T_C) + rng.normal(0, 0.5, (fits, len(T_C)))),
        epochs=[epochs] * fits,
        learning_rate=[1e-2] * fits,
        input_scale=[0.1] * fits,
        w0=[1.0] * fits,
        b0=[0.0] * fits,
        device=torch.device(device),
    )


def test_the_closed_form_on_cuda_matches_the_cpu() -> None:
    cpu, gpu = GradientDescent(_batch(1000, 5000, "cpu")), GradientDescent(_batch(1000, 5000, "cuda"))
    np.testing.assert_allclose(
        gpu.losses(1, 5000, torch.float32).cpu().numpy(), cpu.losses(1, 5000, torch.float32).numpy(), rtol=1e-5
    )
    a, b = ends_of(cpu), ends_of(gpu)
    np.testing.assert_allclose(b.w, a.w, rtol=1e-6)
    np.testing.assert_allclose(b.b, a.b, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "rmsprop"])
def test_the_iterative_engine_on_cuda_matches_the_cpu(optimizer: str) -> None:
    def run(device: str) -> Iterative:
        fits = 200
        return Iterative(
            _batch(fits, 2000, device),
            optimizer,
            [options_of(optimizer)] * fits,
        ).complete()

    cpu, gpu = run("cpu"), run("cuda")
    np.testing.assert_allclose(
        gpu.losses(1, 2000, torch.float32).cpu().numpy(), cpu.losses(1, 2000, torch.float32).numpy(), rtol=1e-4
    )
