"""`calib demo`: the book's runs, submitted to a running service, shown beside the book's figures,
then two nights of three thermometers, one of which drifts, and that instrument's history.

The figures the service prints come from the service; the book's own figures
are shown next to them only to compare (the book computes in float32, the
service in float64, so they agree to about 1e-7 relative, not to every digit).
"""

from __future__ import annotations

from typing import Any

import click
import numpy as np

from services.cli.tables import instrument_history, verdict_line
from services.client import Client

# The thermometer data of Deep Learning with PyTorch, chapter 5.
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]

# What the book's float32 loop prints for the final fit, for comparison only.
BOOK_LOSSES = {
    1: 80.364342,
    2: 37.574917,
    3: 30.871077,
    10: 29.030487,
    11: 28.941875,
    99: 22.214186,
    100: 22.14871,
    4000: 2.92768,
    5000: 2.927648,
}
BOOK_PARAMS = {"w": 5.3671, "b": -17.3012, "w_raw": 0.53671, "b_raw": -17.3012}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else abs(a)


def run_demo(client: Client, progress: bool = True) -> None:
    request: dict[str, Any] = {"epochs": 5000, "learning_rate": 1e-2, "input_scale": 0.1, "init": {"w": 1.0, "b": 0.0}}
    click.echo("1. The seed's final fit: x = 0.1 * t_u, learning rate 1e-2, 5000 epochs")
    seed_fit = client.fit(T_U, T_C, **request)
    click.echo(f"   submitted fit {seed_fit.id}")
    seed_fit.wait(progress=progress)
    losses = seed_fit.losses()
    fit = seed_fit.data
    click.echo(f"   status: {fit['status']} after {fit['epochs_done']} epochs")
    for epoch, book in BOOK_LOSSES.items():
        loss = losses[epoch - 1]
        click.echo(f"   Epoch {epoch}, Loss {loss:.6f}    (book {book}, rel. diff {_rel(loss, book):.1e})")
    result = fit["result"]
    for name, book in BOOK_PARAMS.items():
        digits = 5 if name == "w_raw" else 4  # as many decimals as the book prints
        click.echo(f"   {name:<5} = {result[name]:.{digits}f}    ({result[name]!r}; book {book})")
    click.echo(f"   calibration: t_c = {result['w_raw']:.5f} * t_u {result['b_raw']:+.4f}")
    click.echo(
        f"   loss of this line {result['loss']:.6f} (the epoch-5000 line above is the loss before "
        f"that epoch's update: last_epoch_loss {result['last_epoch_loss']:.6f})"
    )
    click.echo("   " + verdict_line(result))

    click.echo("\n2. The same fit on raw t_u: the learning rate 1e-2 is far too large")
    raw = {**request, "input_scale": 1.0, "epochs": 100}
    checked = client.preflight(T_U, T_C, **raw)
    click.echo(
        f"   pre-flight: stable {checked['stable']}, lr_max {checked['lr_max']:.3g}; "
        "submitted anyway, as the book runs it"
    )
    diverging = client.fit(T_U, T_C, allow_divergence=True, **raw).wait(progress=progress)
    tail = diverging.losses()
    fit = diverging.data
    click.echo(f"   status: {fit['status']}, diverged_at_epoch: {fit['diverged_at_epoch']} (book: 11)")
    if tail:
        click.echo(f"   last finite loss: epoch {len(tail)}, Loss {tail[-1]:.6g}")
    click.echo(f"   verdict  none: a diverged fit has no line to judge (the rate is past lr_max {fit['lr_max']:.3g})")

    exercise(client, progress)

    click.echo(
        "\n4. Instruments: three thermometers calibrated on two nights; TT-103 reads 0.6 degrees high on the second"
    )
    nights = [night_of_thermometers(1, drifted=set()), night_of_thermometers(2, drifted={"TT-103"})]
    for number, night in enumerate(nights, start=1):
        batch = client.submit_batch(night, epochs="auto", normalize="standardize", learning_rate="auto").wait()
        succeeded, drifted_now = batch.counts["succeeded"], batch.data["drifted"]
        click.echo(f"   night {number}: batch {batch.id}, {succeeded} calibrations, {drifted_now} drifted")
    drifted = [row["id"] for row in client.instruments(drifted=True) if row["id"].startswith("TT-10")]
    click.echo(f"   drifted at their last calibration: {', '.join(drifted) or 'none'}")
    click.echo("   calib instrument TT-103:")
    for line in instrument_history(client.instrument("TT-103")).splitlines():
        click.echo("   " + line)
    click.echo(f"   its page, while the service runs: {client.url}/ui/instruments/TT-103")


def exercise(client: Client, progress: bool) -> None:
    """The chapter's exercise: the quadratic w2·t_u² + w1·t_u + b on the same readings, its loss beside the
    line's at the same epochs, and whether it is better, from a validation split and its own uncertainty."""
    click.echo("\n3. The chapter's exercise: t_c = w2 * t_u**2 + w1 * t_u + b on the same readings")
    quadratic = {"kind": "polynomial", "degree": 2}
    same: dict[str, Any] = {"epochs": 5000, "learning_rate": 1e-4, "input_scale": 0.1}
    line = client.fit(T_U, T_C, **same).wait(progress=progress)
    curve = client.fit(T_U, T_C, model=quadratic, **same).wait(progress=progress)
    lines, curves = line.losses(), curve.losses()
    click.echo("   at learning rate 1e-4 (the quadratic diverges at the book's 1e-2), 5000 epochs:")
    for epoch in (1, 100, 1000, 5000):
        click.echo(f"   Epoch {epoch:>4}: line {lines[epoch - 1]:10.6f}   quadratic {curves[epoch - 1]:10.6f}")
    converging: dict[str, Any] = {"epochs": "auto", "learning_rate": "auto", "normalize": "standardize"}
    split: dict[str, Any] = {"validation": {"fraction": 0.2, "seed": 0}}
    best_line = client.fit(T_U, T_C, **converging).wait(progress=progress).data["result"]
    best = client.fit(T_U, T_C, model=quadratic, **converging).wait(progress=progress).data["result"]
    held_line = client.fit(T_U, T_C, **converging, **split).wait(progress=progress).data["result"]
    held = client.fit(T_U, T_C, model=quadratic, **converging, **split).wait(progress=progress).data["result"]
    click.echo(f"   run to convergence: loss {best['loss']:.6f} against the line's {best_line['loss']:.6f}: lower")
    click.echo(
        f"   with 2 of the 11 points held out: validation loss {held['val_loss']:.4f} against the line's "
        f"{held_line['val_loss']:.4f}"
    )
    a2, u_a2 = best["parameters"]["a2"], best["standard_uncertainties"]["a2"]
    click.echo(
        f"   but w2 = {a2:.3g} ± {u_a2:.2g} is {abs(a2) / u_a2:.1f} standard uncertainties from 0: eleven readings "
        "do not show the thermometer to be curved"
    )


def night_of_thermometers(night: int, drifted: set[str]) -> dict[str, tuple[list[float], list[float]]]:
    """Each thermometer read at 12 reference temperatures: its own line, a repeatable error pattern,
    a little fresh noise each night, and for a drifted one an offset 0.6 degrees up. Seeded, so every
    demo shows the same verdicts."""
    rng, fresh = np.random.default_rng(17), np.random.default_rng(night)
    readings_of: dict[str, tuple[list[float], list[float]]] = {}
    reference = np.linspace(-10.0, 90.0, 12)
    for k, name in enumerate(("TT-101", "TT-102", "TT-103")):
        w, b = 0.52 + 0.01 * k, -17.0 + 0.4 * k
        pattern = rng.normal(0, 0.04, reference.size) + fresh.normal(0, 0.004, reference.size)
        offset = 0.6 if name in drifted else 0.0
        readings = (reference - b - offset) / w + pattern / w
        readings_of[name] = (readings.round(4).tolist(), reference.tolist())
    return readings_of
