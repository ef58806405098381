"""The iterative engine in blocks: a fit saved at a block's end and resumed by a new engine (as a
worker that yields or is lost does) gives exactly the losses and result of one uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.worker.engine import SeriesBatch
from services.worker.engine.iterative import Iterative
from services.worker.engine.stopping import StopRule
from shared.contract.optimizers import options_of

RULES = [
    None,
    {"monitor": "val_loss", "min_delta": 0.0, "patience": 5},
    {"monitor": "loss", "min_delta": 1e-3, "patience": 20},
    None,
]


def _batches(fits: list[int]) -> tuple[SeriesBatch, SeriesBatch]:
    rng = np.random.default_rng(5)
    xs = [rng.normal(4, 2, 12) for _ in range(4)]
    ys = [0.5 * x - 1 + rng.normal(0, 0.4, len(x)) for x in xs]
    epochs, rates = [700, 900, 1000, 250], [0.01, 0.02, 0.005, 0.05]
    common = {
        "epochs": [epochs[i] for i in fits],
        "learning_rate": [rates[i] for i in fits],
        "input_scale": [1.0] * len(fits),
        "w0": [1.0] * len(fits),
        "b0": [0.0] * len(fits),
    }
    return (
        SeriesBatch.build([xs[i][:9] for i in fits], [ys[i][:9] for i in fits], **common),
        SeriesBatch.build([xs[i][9:] for i in fits], [ys[i][9:] for i in fits], **common),
    )


def _engine(kind: str, fits: list[int], resume: list[dict[str, object]] | None = None) -> Iterative:
    train, val = _batches(fits)
    n = len(fits)
    return Iterative(
        train,
        kind,
        [options_of(kind)] * n,
        validation=val,
        stopping=StopRule.of([RULES[i] for i in fits], train.epochs),
        resume=resume,
    )


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam", "rmsprop"])
def test_resumed_in_blocks_equals_one_run(kind: str) -> None:
    whole = _engine(kind, [0, 1, 2, 3]).complete()
    first = _engine(kind, [0, 1, 2, 3])
    head = first.run(192)
    assert (head.first, head.last) == (1, 192) and not first.done
    torch.testing.assert_close(head.losses, whole.losses(1, 192, torch.float32), equal_nan=True, rtol=0, atol=0)
    # The fits still open, saved as JSON (as the runner stores them), resumed by a new engine
    # and run on in blocks of 64.
    open_ = [i for i in range(4) if not bool(first.ended[i])]
    assert open_ and len(open_) < 4  # one fit ended inside the first block (fit 3: 250 epochs, or a stop)
    states = json.loads(json.dumps(first.states()))
    second = _engine(kind, open_, resume=[states[i] for i in open_])
    assert second.epoch == 192
    blocks = []
    while not second.done:
        blocks.append(second.run(64))
    for j, i in enumerate(open_):
        losses = torch.cat([b.losses[j] for b in blocks])
        val = torch.cat([b.val_losses[j] for b in blocks if b.val_losses is not None])
        torch.testing.assert_close(
            losses, whole.losses(193, 192 + len(losses), torch.float32)[i], equal_nan=True, rtol=0, atol=0
        )
        torch.testing.assert_close(val, whole.val_losses(193, 192 + len(val))[i], equal_nan=True, rtol=0, atol=0)
        assert int(second.epochs_done[j]) == int(whole.epochs_done[i])
        assert bool(second.stopped_early[j]) == bool(whole.stopped_early[i])
        assert float(second.w[j]) == float(whole.w[i]) and float(second.b[j]) == float(whole.b[i])
    for i in set(range(4)) - set(open_):
        assert int(first.epochs_done[i]) == int(whole.epochs_done[i])
        assert float(first.w[i]) == float(whole.w[i])


def test_a_block_cut_by_its_time_ends_on_a_window_and_goes_on_unchanged() -> None:
    """A block given no time ends at its first stopping window; the next one goes on from there
    and the losses are those of one run (the runner cuts blocks when the machine slows down)."""
    whole = _engine("adam", [0, 1, 2, 3]).complete()
    engine = _engine("adam", [0, 1, 2, 3])
    cut = engine.run(64 * 100, seconds=0.0)
    assert (cut.first, cut.last) == (1, 64) and engine.epoch == 64
    rest = engine.run(128, seconds=60.0)
    assert (rest.first, rest.last) == (65, 192)
    torch.testing.assert_close(
        torch.cat([cut.losses, rest.losses], dim=1), whole.losses(1, 192, torch.float32), equal_nan=True, rtol=0, atol=0
    )


def test_a_block_reports_divergence_and_the_fits_that_ended() -> None:
    x = np.array([35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4])
    y = np.array([0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0])
    batch = SeriesBatch.build(
        [x, x],
        [y, y],
        epochs=[100, 1000],
        learning_rate=[1e-2, 1e-4],
        input_scale=[1.0, 1.0],
        w0=[1.0, 1.0],
        b0=[0.0, 0.0],
    )
    engine = Iterative(batch, "sgd", [options_of("sgd")] * 2)
    block = engine.run(64)
    assert block.ended.tolist() == [True, False]  # lr 1e-2 on raw input diverges at epoch 11, as in the book
    assert int(engine.diverged_at[0]) == 11 and int(engine.epochs_done[0]) == 10
    assert bool(torch.isnan(block.losses[0, 10:]).all()) and bool(torch.isfinite(block.losses[1]).all())
    with pytest.raises(ValueError):
        engine.run(100)  # blocks line up with the stopping windows
