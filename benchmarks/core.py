"""The engine against the book's loop, in one process run: `python -m benchmarks.core`.

(a) 10,000 fits x 11 points x 5000 epochs, every loss kept;
(b) 1 fit x 1,000,000 points x 5000 epochs;
(c) Adam: 10,000 fits x 11 points x 2000 epochs, every loss kept, against the
    book's torch.optim.Adam loop (raw input, lr 0.1) on one fit;
(d) the book's split run for 10,000 fits (9 training and 2 validation points, SGD lr 1e-2
    on 0.1·t_u, 3000 epochs), training and validation losses kept, early stopping on the
    validation loss (min_delta 1e-3, patience 10): by sgd, and (e) by gd's closed form;
    against the book's training loop with a validation split on one fit;
(q) the chapter's exercise, w2·x² + w1·x + b: 10,000 quadratics x 11 points x 5000 epochs
(v) Callendar–Van Dusen: 10,000 Pt100s x 12 points (−100…400 °C) x 5000 epochs
    (lr 1e-4 on 0.1·t_u), every loss kept, beside (a) for the line; against the exercise's loop on one fit;
(f) only when asked (`--cases f`, the GPU's case): 100,000 fits x 5000 epochs, every loss kept.
`--device cuda` runs every case on the GPU (the closed form's float64 parts there too).
The book's loop is timed on fewer epochs where it would take minutes; its cost
per fit-epoch is constant, so fit-epochs per second compare directly. Each case
runs in a child process so that its peak memory (max RSS) is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from services.cli.demo import T_C, T_U  # the book's thermometer data, as the demo sends it
from services.worker.engine import GradientDescent, SeriesBatch, reference_fit
from services.worker.engine.device import pick_device
from services.worker.engine.iterative import Iterative
from services.worker.engine.models import Model, Polynomial, Transformed
from services.worker.engine.stopping import StopRule
from shared.contract.optimizers import options_of
from shared.domain.functions import CallendarVanDusen


def thermometer_batch(
    fits: int, epochs: int, device: torch.device, seed: int = 0, learning_rate: float = 1e-2, input_scale: float = 0.1
) -> SeriesBatch:
    """The book's readings `fits` times, each t_c with noise of SD 0.5."""
    rng = np.random.default_rng(seed)
    t_c = np.asarray(T_C) + rng.normal(0, 0.5, (fits, len(T_C)))
    return SeriesBatch.build(
        [T_U] * fits,
        list(t_c),
        epochs=[epochs] * fits,
        learning_rate=[learning_rate] * fits,
        input_scale=[input_scale] * fits,
        w0=[1.0] * fits,
        b0=[0.0] * fits,
        device=device,
    )


def big_batch(points: int, epochs: int, device: torch.device) -> SeriesBatch:
    rng = np.random.default_rng(1)
    t_u = rng.uniform(20, 90, points)
    t_c = 0.5367 * t_u - 17.3 + rng.normal(0, 1.7, points)
    return SeriesBatch.build(
        [t_u], [t_c], epochs=[epochs], learning_rate=[1e-2], input_scale=[0.1], w0=[1.0], b0=[0.0], device=device
    )


def median_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def engine_all_losses(batch: SeriesBatch, epochs: int) -> torch.Tensor:
    engine = GradientDescent(batch)
    # float32 out, as the worker stores them.
    return engine.losses(1, epochs, torch.float32)


def case_a(device_name: str, repeats: int) -> dict[str, Any]:
    device = torch.device(device_name)
    fits, epochs, book_epochs = 10_000, 5000, 5000
    batch = thermometer_batch(fits, epochs, device)
    engine_s = median_seconds(lambda: engine_all_losses(batch, epochs), repeats, device)
    one = thermometer_batch(1, book_epochs, torch.device("cpu"))
    book_s = median_seconds(lambda: reference_fit(one, torch.float32), max(1, repeats // 2), torch.device("cpu"))
    return {
        "case": "a: 10,000 fits x 11 points x 5000 epochs",
        "engine_s": engine_s,
        "fit_epochs": fits * epochs,
        "book_s_per_fit_epoch": book_s / book_epochs,
    }


def case_b(device_name: str, repeats: int) -> dict[str, Any]:
    device = torch.device(device_name)
    points, epochs, book_epochs = 1_000_000, 5000, 100
    batch = big_batch(points, epochs, device)

    def build_and_run() -> torch.Tensor:
        # Includes the pass over the million points, which is most of the work.
        return engine_all_losses(batch, epochs)

    engine_s = median_seconds(build_and_run, repeats, device)
    short = big_batch(points, book_epochs, torch.device("cpu"))
    book_s = median_seconds(lambda: reference_fit(short, torch.float32), 1, torch.device("cpu"))
    return {
        "case": "b: 1 fit x 1,000,000 points x 5000 epochs",
        "engine_s": engine_s,
        "fit_epochs": epochs,
        "book_s_per_fit_epoch": book_s / book_epochs,
    }


def book_adam_loop(epochs: int) -> list[float]:
    """The book's later section: torch.optim.Adam on the thermometer data, float32, one fit."""
    t_u, t_c = torch.tensor(T_U), torch.tensor(T_C)
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    optimizer = torch.optim.Adam([params], lr=0.1)
    losses = []
    for _ in range(epochs):
        loss = ((params[0] * t_u + params[1] - t_c) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def case_c(device_name: str, repeats: int) -> dict[str, Any]:
    device = torch.device(device_name)
    fits, epochs, book_epochs = 10_000, 2000, 2000
    batch = thermometer_batch(fits, epochs, device, seed=2, learning_rate=0.1, input_scale=1.0)

    def run() -> torch.Tensor:
        engine = Iterative(batch, "adam", [options_of("adam")] * fits).complete()
        return engine.losses(1, epochs, torch.float32)

    engine_s = median_seconds(run, repeats, device)
    book_s = median_seconds(lambda: book_adam_loop(book_epochs), max(1, repeats // 2), torch.device("cpu"))
    return {
        "case": "c: Adam, 10,000 fits x 11 points x 2000 epochs",
        "engine_s": engine_s,
        "fit_epochs": fits * epochs,
        "book_s_per_fit_epoch": book_s / book_epochs,
    }


def book_split_loop(epochs: int) -> tuple[float, float]:
    """The book's training loop with a validation split (SGD, 0.1·t_u, float32), one fit."""
    t_u, t_c = torch.tensor(T_U) * 0.1, torch.tensor(T_C)
    val, train = torch.tensor(SPLIT), torch.tensor([i for i in range(len(T_U)) if i not in SPLIT])
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    optimizer = torch.optim.SGD([params], lr=1e-2)
    for _ in range(epochs):
        train_loss = ((params[0] * t_u[train] + params[1] - t_c[train]) ** 2).mean()
        with torch.no_grad():
            val_loss = ((params[0] * t_u[val] + params[1] - t_c[val]) ** 2).mean()
        optimizer.zero_grad()
        train_loss.backward()
        optimizer.step()
    return train_loss.item(), val_loss.item()


SPLIT = [2, 10]


def split_batches(fits: int, epochs: int, device: torch.device) -> tuple[SeriesBatch, SeriesBatch]:
    rng = np.random.default_rng(3)
    t_c = np.asarray(T_C) + rng.normal(0, 0.5, (fits, len(T_C)))
    keep = [i for i in range(len(T_U)) if i not in SPLIT]
    common = dict(
        epochs=[epochs] * fits,
        learning_rate=[1e-2] * fits,
        input_scale=[0.1] * fits,
        w0=[1.0] * fits,
        b0=[0.0] * fits,
        device=device,
    )
    train = SeriesBatch.build([[T_U[i] for i in keep]] * fits, [row[keep] for row in t_c], **common)
    val = SeriesBatch.build([[T_U[i] for i in SPLIT]] * fits, [row[SPLIT] for row in t_c], **common)
    return train, val


def split_case(engine_name: str, device_name: str, repeats: int) -> dict[str, Any]:
    device = torch.device(device_name)
    fits, epochs, book_epochs = 10_000, 3000, 3000
    train, val = split_batches(fits, epochs, device)
    rule = {"monitor": "val_loss", "min_delta": 1e-3, "patience": 10}

    def run() -> tuple[torch.Tensor, torch.Tensor | None]:
        stopping = StopRule.of([rule] * fits, train.epochs)
        if engine_name == "gd":
            engine: GradientDescent | Iterative = GradientDescent(train, val, stopping)
        else:
            engine = Iterative(train, "sgd", [options_of("sgd")] * fits, validation=val, stopping=stopping).complete()
        last = int(engine.epochs_done.max())
        return engine.losses(1, last, torch.float32), engine.val_losses(1, last)

    engine_s = median_seconds(run, repeats, device)
    book_s = median_seconds(lambda: book_split_loop(book_epochs), max(1, repeats // 2), torch.device("cpu"))
    label = "d: split + early stop, sgd" if engine_name == "sgd" else "e: split + early stop, gd closed form"
    return {
        "case": f"{label}, 10,000 x 3000",
        "engine_s": engine_s,
        "fit_epochs": fits * epochs,
        "book_s_per_fit_epoch": book_s / book_epochs,
    }


def case_f(device_name: str, repeats: int) -> dict[str, Any]:
    """The GPU target of issue 13: 100,000 fits x 5000 epochs, every loss kept (2 GB of float32)."""
    device = torch.device(device_name)
    fits, epochs = 100_000, 5000
    batch = thermometer_batch(fits, epochs, device)
    engine_s = median_seconds(lambda: engine_all_losses(batch, epochs), repeats, device)
    one = thermometer_batch(1, epochs, torch.device("cpu"))
    book_s = median_seconds(lambda: reference_fit(one, torch.float32), 1, torch.device("cpu"))
    return {
        "case": "f: 100,000 fits x 11 points x 5000 epochs",
        "engine_s": engine_s,
        "fit_epochs": fits * epochs,
        "book_s_per_fit_epoch": book_s / epochs,
    }


def book_quadratic_loop(epochs: int) -> float:
    """The chapter's exercise as its solution writes it: float32, autograd, one fit; its last loss."""
    t_u, t_c = torch.tensor(T_U) * 0.1, torch.tensor(T_C)
    params = torch.tensor([0.0, 1.0, 0.0], requires_grad=True)  # w2, w1, b: calib's start
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        if params.grad is not None:
            params.grad.zero_()
        loss = ((params[0] * t_u**2 + params[1] * t_u + params[2] - t_c) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            params -= 1e-4 * params.grad
    return float(loss.detach())


def case_q(device_name: str, repeats: int) -> dict[str, Any]:
    device = torch.device(device_name)
    batch = thermometer_batch(10_000, 5000, device, learning_rate=1e-4)
    label = "q: 10,000 quadratics x 11 points x 5000 epochs"
    return _model_case(label, batch, Polynomial(2), book_quadratic_loop, repeats, device)


def _model_case(
    label: str,
    batch: SeriesBatch,
    model: Model,
    book_loop: Callable[[int], float],
    repeats: int,
    device: torch.device,
    book_epochs: int = 2000,
) -> dict[str, Any]:
    """A model's case: its batch's every epoch's loss in the engine, beside the book's loop of one fit."""
    epochs = int(batch.epochs.max())
    engine_s = median_seconds(
        lambda: GradientDescent(batch, model=model).losses(1, epochs, torch.float32), repeats, device
    )
    book_s = median_seconds(lambda: book_loop(book_epochs), max(1, repeats // 2), torch.device("cpu"))
    return {
        "case": label,
        "engine_s": engine_s,
        "fit_epochs": batch.size * epochs,
        "book_s_per_fit_epoch": book_s / book_epochs,
    }


PT100_T = np.linspace(-100.0, 400.0, 12)  # 12 calibration points across 0 °C
PT100 = CallendarVanDusen(below_zero=True)
PT100_COEFFICIENTS = np.array([100 * 3.9083e-3, 100 * -5.775e-7, 100 * -4.183e-12, 100.0])  # IEC 60751


def pt100_batch(fits: int, epochs: int, device: torch.device) -> SeriesBatch:
    """`fits` Pt100s (IEC 60751's coefficients, 2 mΩ of noise), as the worker builds them: regressor
    T, response R, T standardized, learning rate 0.1 (below the pre-flight's lr_max)."""
    rng = np.random.default_rng(3)
    r = PT100.design(PT100_T) @ PT100_COEFFICIENTS
    return SeriesBatch.build(
        [PT100_T] * fits,
        list(r + rng.normal(0, 0.002, (fits, PT100_T.size))),
        epochs=[epochs] * fits,
        learning_rate=[0.1] * fits,
        input_scale=[float(1 / PT100_T.std())] * fits,
        input_shift=[float(PT100_T.mean())] * fits,
        w0=[1.0] * fits,
        b0=[0.0] * fits,
        device=device,
    )


def book_cvd_loop(epochs: int) -> float:
    """One Pt100 by float32 autograd on the same model-space features: its last loss."""
    n = PT100_T.size
    design = PT100.model_design(PT100_T, np.full(n, PT100_T.mean()), np.full(n, 1 / PT100_T.std()))
    features = torch.from_numpy(design).float()
    y = torch.from_numpy(PT100.design(PT100_T) @ PT100_COEFFICIENTS).float()
    params = torch.tensor([1.0, 0.0, 0.0, 0.0], requires_grad=True)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        if params.grad is not None:
            params.grad.zero_()
        loss = ((features @ params - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            params -= 0.1 * params.grad
    return float(loss.detach())


def case_v(device_name: str, repeats: int) -> dict[str, Any]:
    device = torch.device(device_name)
    label = "v: 10,000 Pt100s (Callendar–Van Dusen) x 12 points x 5000 epochs"
    return _model_case(label, pt100_batch(10_000, 5000, device), Transformed(PT100), book_cvd_loop, repeats, device)


def _child(name: str, device: str, repeats: int, out: Any) -> None:
    cases: dict[str, Callable[[str, int], dict[str, Any]]] = {
        "f": case_f,
        "a": case_a,
        "b": case_b,
        "c": case_c,
        "d": lambda dev, n: split_case("sgd", dev, n),
        "e": lambda dev, n: split_case("gd", dev, n),
        "q": case_q,
        "v": case_v,
    }
    result = cases[name](device, repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    # f (100,000 fits, 2 GB of losses) is the GPU's case: `--device cuda --cases a b c d e f`.
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["a", "b", "c", "d", "e", "q", "v"],
        choices=["a", "b", "c", "d", "e", "f", "q", "v"],
    )
    args = parser.parse_args()
    device = str(pick_device(args.device))
    ctx = mp.get_context("spawn")
    rows = []
    for name in args.cases:
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(name, device, args.repeats, queue))
        child.start()
        row = queue.get()
        child.join()
        row["engine_fit_epochs_per_s"] = row["fit_epochs"] / row["engine_s"]
        row["book_fit_epochs_per_s"] = 1 / row["book_s_per_fit_epoch"]
        row["speedup"] = row["engine_fit_epochs_per_s"] / row["book_fit_epochs_per_s"]
        rows.append(row)
    gpu = f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""
    print(f"device: {device}{gpu}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'case':<52} {'engine s':>9} {'fit-epochs/s':>14} {'book f-e/s':>12} {'ratio':>9} {'peak MB':>8}")
    for r in rows:
        print(
            f"{r['case']:<52} {r['engine_s']:>9.4f} {r['engine_fit_epochs_per_s']:>14.3e} "
            f"{r['book_fit_epochs_per_s']:>12.3e} {r['speedup']:>9.0f} {r['peak_rss_mb']:>8.0f}"
        )
    print(json.dumps({"benchmark": "core", "device": device, "rows": rows}))


if __name__ == "__main__":
    main()
