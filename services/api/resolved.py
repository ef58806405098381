"""A fit's spec resolved once, at submission: the split's indices, the model's input (scale and,
for "standardize", the training data's mean and 1/SD), the learning rate ("auto" from the data),
the epoch bound ("auto" runs to max_epochs at most), and the optimizer with every option's
default (shared/contract/optimizers.py). The API stores it in the fit's row; the worker reads it
back from there and resolves nothing (services/worker/store.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.contract.model_kinds import TRANSFORMED, LineModel, PolynomialModel
from shared.contract.optimizers import is_plain
from shared.contract.schemas import FitCreate
from shared.domain.calibration import DataStats, Values, data_stats, standardization, warnings_for
from shared.domain.functions import function_of
from shared.domain.model_stats import (
    ModelStats,
    distance_stats,
    function_stats,
    polynomial_stats,
    uncertainty_of,
)
from shared.domain.splits import split

# Where "auto" finds no stable rate in the data (a degenerate fit): the service's default rate.
FALLBACK_LEARNING_RATE = 0.01


@dataclass(frozen=True)
class ResolvedFit:
    spec: FitCreate
    held_out: list[int] | None
    input_shift: float
    input_scale: float
    learning_rate: float
    epochs: int
    stats: DataStats
    # A non-line model's exact least squares (None for the line, whose figures are in stats).
    model_stats: ModelStats | None = None
    # With stated uncertainties: the weighted fit's χ² test (shared/domain/model_stats.py).
    chi2: dict[str, Any] | None = None

    def warnings(self) -> list[str]:
        model = self.model_stats
        determined = None if model is None else None not in model.parameters_opt
        return warnings_for(self.stats, self.learning_rate, determined)

    def columns(self) -> dict[str, Any]:
        """The fit's columns that say how it runs, every default filled in."""
        spec = self.spec
        optimizer = spec.optimizer_spec()
        return dict(
            model=spec.model.stored(split(spec.t_c, self.held_out)[0] if self.held_out else spec.t_c),
            solution=self.model_stats.solution() if self.model_stats is not None else None,
            chi2=self.chi2,
            epochs=self.epochs,
            epochs_auto=spec.epochs == "auto",
            convergence_tolerance=spec.convergence_tolerance,
            learning_rate=self.learning_rate,
            init_w=spec.init.w,
            init_b=spec.init.b,
            input_scale=self.input_scale,
            input_shift=self.input_shift,
            normalize=spec.normalize,
            optimizer=optimizer.kind,
            optimizer_options=optimizer.options(),
            validation=_validation_record(spec, self.held_out),
            early_stopping=_early_stopping_rule(spec),
            warnings=self.warnings(),
        )


def resolve(specs: Sequence[FitCreate], max_epochs: int) -> list[ResolvedFit]:
    """Every spec resolved; the data's statistics (pre-flight, least squares) in one pass for all."""
    held_out = [spec.held_out() for spec in specs]
    # Everything the data says (standardization, pre-flight, least squares) is about the
    # points the line is fitted to: the held-out ones must not leak in.
    training = [
        (split(spec.t_u, out)[0], split(spec.t_c, out)[0]) if out else (spec.t_u, spec.t_c)
        for spec, out in zip(specs, held_out, strict=True)
    ]
    inputs = [_model_input(spec) for spec in specs]
    stats = data_stats(
        [u for u, _ in training], [c for _, c in training], [s for _, s in inputs], [h for h, _ in inputs]
    )
    stated = [
        (_training(spec.stated_u_t_c(), out), _training(spec.stated_u_t_u(), out))
        for spec, out in zip(specs, held_out, strict=True)
    ]
    by_model = _model_stats(specs, training, inputs, stated)
    stats = [_for_the_model(st, by_model.get(i), specs[i]) for i, st in enumerate(stats)]
    return [
        ResolvedFit(
            spec=spec,
            held_out=out,
            input_shift=shift,
            input_scale=scale,
            learning_rate=spec.learning_rate
            if spec.learning_rate != "auto"
            else (st.lr_auto or FALLBACK_LEARNING_RATE),
            # "auto": run until converged, at most max_epochs; the bound is what `epochs` stores.
            epochs=spec.epochs if spec.epochs != "auto" else (spec.max_epochs or max_epochs),
            stats=st,
            model_stats=by_model.get(i) if not isinstance(spec.model, LineModel) else None,
            chi2=by_model[i].chi2 if i in by_model else None,
        )
        for i, (spec, out, (shift, scale), st) in enumerate(zip(specs, held_out, inputs, stats, strict=True))
    ]


def _training(stated: np.ndarray | None, held_out: list[int] | None) -> np.ndarray | None:
    """Stated uncertainties of the training points, or None."""
    if stated is None or not held_out:
        return stated
    return split(stated, held_out)[0]


def _model_stats(
    specs: Sequence[FitCreate],
    training: Sequence[tuple[Values, Values]],
    inputs: list[tuple[float, float]],
    stated: list[tuple[np.ndarray | None, np.ndarray | None]],
) -> dict[int, ModelStats]:
    """The exact least squares and pre-flight of every fit that is not an unweighted line (a polynomial,
    a transformed function, a line with stated uncertainties as degree 1, or by generalized distance
    regression where its readings' are stated too), by its index: one vectorised pass per group.
    `stated`: each fit's training u(t_c) and u(t_u), or None."""
    polynomials: dict[tuple[int, bool], list[int]] = {}
    functions: dict[tuple[tuple[tuple[str, Any], ...], bool], list[int]] = {}
    found: dict[int, ModelStats] = {}
    for i, spec in enumerate(specs):
        u_t_c, u_t_u = stated[i]
        weighted = u_t_c is not None
        if u_t_u is not None:
            assert u_t_c is not None, "FitCreate takes u_t_u with u_t_c only, on a line"
            shift, scale = inputs[i]
            u, c = (np.asarray(values, dtype=np.float64) for values in training[i])
            found[i] = distance_stats(u, c, u_t_u, u_t_c, scale, shift)
        elif isinstance(spec.model, PolynomialModel):
            polynomials.setdefault((spec.model.degree, weighted), []).append(i)
        elif isinstance(spec.model, TRANSFORMED):
            stored = tuple(sorted((spec.model.stored(training[i][1]) or {}).items()))
            functions.setdefault((stored, weighted), []).append(i)
        elif weighted:
            polynomials.setdefault((1, True), []).append(i)

    def column(rows: list[int], part: int) -> list[Values]:
        return [training[i][part] for i in rows]

    def scales(rows: list[int]) -> tuple[list[float], list[float]]:
        return [inputs[i][1] for i in rows], [inputs[i][0] for i in rows]

    def stated_u_t_c(rows: list[int], weighted: bool) -> list[np.ndarray] | None:
        return [u for i in rows if (u := stated[i][0]) is not None] if weighted else None

    for (degree, weighted), rows in polynomials.items():
        stats = polynomial_stats(column(rows, 0), column(rows, 1), degree, *scales(rows), stated_u_t_c(rows, weighted))
        found.update(zip(rows, stats, strict=True))
    for (stored, weighted), rows in functions.items():
        function = function_of(dict(stored))
        assert function is not None
        stats = function_stats(function, column(rows, 0), column(rows, 1), *scales(rows), stated_u_t_c(rows, weighted))
        found.update(zip(rows, stats, strict=True))
    return found


def _for_the_model(line: DataStats, model: ModelStats | None, spec: FitCreate) -> DataStats:
    """The data's statistics as the fit's row stores them: a weighted line's least squares from its
    stated uncertainties; a non-line model's pre-flight, R² and residual SD in place of the line's,
    and no line figures (its own are in `solution`)."""
    if model is None:
        return line
    if isinstance(spec.model, LineModel):
        # Degree 1's parameters are (a1, a0): the line's (w, b).
        opt, cov = model.parameters_opt, model.covariance
        return dataclasses.replace(
            line,
            lr_max=model.lr_max,
            lr_auto=model.lr_auto,
            condition_number=model.condition_number,
            w_opt=opt[0],
            b_opt=opt[1],
            se_w=uncertainty_of(cov[0][0]) if cov else None,
            se_b=uncertainty_of(cov[1][1]) if cov else None,
            cov_wb=cov[0][1] if cov else None,
            r2=model.r2,
            residual_sd=model.residual_sd,
        )
    return dataclasses.replace(
        line,
        lr_max=model.lr_max,
        lr_auto=model.lr_auto,
        condition_number=model.condition_number,
        w_opt=None,
        b_opt=None,
        se_w=None,
        se_b=None,
        cov_wb=None,
        r2=model.r2,
        residual_sd=model.residual_sd,
        # The fallback verdict's scale is the variance of what the fit fits (Ω², K⁻² for a function).
        t_c_var=model.response_var if isinstance(spec.model, TRANSFORMED) else line.t_c_var,
    )


def _model_input(spec: FitCreate) -> tuple[float, float]:
    """(input_shift, input_scale) of x = (t_u - shift) * scale, as the fit's normalize says (for a
    transformed function, x is its regressor's: shared/domain/functions.py)."""
    if spec.normalize == "scale":
        return 0.0, spec.input_scale
    if spec.normalize == "none":
        return 0.0, 1.0
    found = standardization(spec.training_regressor())
    assert found is not None, "FitCreate refuses standardize for t_u without spread"
    return found


def _validation_record(spec: FitCreate, indices: list[int] | None) -> dict[str, object] | None:
    """The split as requested, with the indices it picked (seed 0 when a fraction came without one)."""
    if spec.validation is None or indices is None:
        return None
    by_fraction = spec.validation.fraction is not None
    return {
        "fraction": spec.validation.fraction,
        "seed": (spec.validation.seed or 0) if by_fraction else None,
        "indices": indices,
    }


def _early_stopping_rule(spec: FitCreate) -> dict[str, object] | None:
    """The rule with its monitor resolved: the validation loss when there is a split."""
    rule = spec.early_stopping
    if rule is None:
        return None
    monitor = rule.monitor or ("val_loss" if spec.validation is not None else "loss")
    return {"monitor": monitor, "min_delta": rule.min_delta, "patience": rule.patience}


# Options that converge whatever the data: API.md "normalize" and "auto" (shared/schemas.Suggestion).
CONVERGING = {"learning_rate": "auto", "normalize": "standardize", "epochs": "auto"}


def preflight(fit: ResolvedFit) -> dict[str, Any]:
    """POST /v1/preflight's answer (FitPreflight): will this learning rate stay stable?"""
    st, spec = fit.stats, fit.spec
    plain = is_plain(spec.optimizer_spec().kind)
    stable = fit.learning_rate < st.lr_max if plain and st.lr_max is not None else None
    return {
        "n_points": len(spec.t_u),
        "learning_rate": fit.learning_rate,
        "lr_max": st.lr_max,
        "condition_number": st.condition_number,
        "stable": stable,
        "warnings": fit.warnings(),
        "suggestion": dict(CONVERGING) if stable is False else None,
    }
