"""`calib plot`: a fit's loss curve (log scale, with the min/max envelope of the downsampled
endpoint) beside its data and fitted line, drawn with matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.client import Fit


def draw_fit(fit: Fit, out: Path, points: int = 2000) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    buckets = fit.loss_curve(points=points)
    data = fit.readings()
    figure, (curve, line) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    figure.suptitle(f"fit {fit.id[:8]} · {fit.status} · {fit.epochs_done}/{fit.epochs} epochs")

    for prefix, colour, name in (("", "tab:blue", "training loss"), ("val_", "tab:orange", "validation loss")):
        if not buckets or f"{prefix}last" not in buckets[0]:
            continue
        epochs = np.array([b["last_epoch"] for b in buckets])
        low = np.array([np.nan if b[prefix + "min"] is None else b[prefix + "min"] for b in buckets])
        high = np.array([np.nan if b[prefix + "max"] is None else b[prefix + "max"] for b in buckets])
        last = np.array([np.nan if b[prefix + "last"] is None else b[prefix + "last"] for b in buckets])
        curve.fill_between(epochs, low, high, color=colour, alpha=0.25, linewidth=0)
        curve.plot(epochs, last, color=colour, label=name)
    curve.set(xlabel="epoch", ylabel="mean squared error", yscale="log", title="loss per epoch (min/max envelope)")
    curve.grid(True, which="both", alpha=0.3)
    if buckets:
        curve.legend()

    t_u, t_c = np.asarray(data["t_u"]), np.asarray(data["t_c"])
    held = np.zeros(len(t_u), dtype=bool)
    held[data["validation_indices"]] = True
    line.scatter(t_u[~held], t_c[~held], color="tab:blue", label="training points", zorder=3)
    if held.any():
        line.scatter(t_u[held], t_c[held], color="tab:orange", marker="s", label="validation points", zorder=3)
    result = fit.result
    if result and result.get("w_raw") is not None:
        xs = np.linspace(t_u.min(), t_u.max(), 50)
        line.plot(
            xs,
            result["w_raw"] * xs + result["b_raw"],
            color="black",
            label=f"t_c = {result['w_raw']:.4f}·t_u {result['b_raw']:+.3f}",
        )
    elif result and result.get("parameters"):
        # Any other model: its curve as the service predicts it (a Callendar–Van Dusen fit inverted).
        xs = np.linspace(t_u.min(), t_u.max(), 97)
        kind = (fit.data.get("params", {}).get("model") or {}).get("kind", "model")
        named = ", ".join(f"{name} {result['parameters'][name]:.5g}" for name in result["parameter_names"])
        line.plot(xs, fit.predict(list(xs))["t_c"], color="black", label=f"{kind.replace('_', ' ')}\n{named}")
    line.set(xlabel="t_u (raw reading)", ylabel="t_c (reference)", title="data and fitted function")
    line.grid(True, alpha=0.3)
    line.legend(loc="upper left", fontsize="small")
    figure.savefig(out, dpi=110)
    plt.close(figure)
