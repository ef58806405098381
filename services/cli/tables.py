"""Fits as a person reads them in a terminal: a summary of one, a table of many."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _num(value: Any, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def fit_summary(fit: dict[str, Any]) -> str:
    lines = [
        f"fit      {fit['id']}",
        f"status   {fit['status']}" + (f" ({fit['stop_reason']})" if fit.get("stop_reason") else ""),
        f"epochs   {fit['epochs_done']}/{fit['epochs']}, {fit['params']['optimizer']}, "
        f"learning rate {_num(fit['params']['learning_rate'])}",
    ]
    result = fit.get("result")
    if result and result.get("w_raw") is None:
        lines += model_lines(fit["params"].get("model") or {}, result)
    elif result:
        lines += [
            f"line     t_c = {_num(result['w_raw'])} * t_u {result['b_raw']:+.6g}",
            f"loss     {_num(result['loss'])}"
            + (f", validation {_num(result['val_loss'])}" if result.get("val_loss") is not None else "")
            + f" (of this line; the last epoch's, before its update: {_num(result.get('last_epoch_loss'))})",
        ]
        lines.append(verdict_line(result))
        if result.get("w_opt") is not None:
            # The uncertainty belongs to the least-squares line: it is printed beside that line.
            lines.append(f"optimum  t_c = {_num(result['w_opt'])} * t_u {result['b_opt']:+.6g} (least squares)")
        if result.get("se_w") is not None:
            lines.append(
                f"± (1 SE) of the optimum: w {_num(result['se_w'], 3)}, b {_num(result['se_b'], 3)}; "
                f"R² {_num(result['r2'], 5)}"
            )
    if result and result.get("chi2_obs") is not None:
        lines.append(chi2_line(result))
    if fit.get("diverged_at_epoch"):
        lines.append(f"diverged at epoch {fit['diverged_at_epoch']}")
    if fit.get("error"):
        lines.append(f"error    {fit['error']['type']}: {fit['error']['detail']}")
    lines += [f"warning  {w}" for w in fit.get("warnings") or []]
    return "\n".join(lines)


def model_lines(model: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """A model other than the line: its function, each parameter with its standard uncertainty and
    least-squares value, the loss and the verdict."""
    names = result.get("parameter_names") or []
    opt, u = result.get("parameters_opt") or {}, result.get("standard_uncertainties") or {}
    kind = model.get("kind", "?") + (f", degree {model['degree']}" if "degree" in model else "")
    lines = [f"model    {kind}: {_formula(model.get('kind'), names)}"]
    for name in names:
        lines.append(
            f"  {name:<6} {_num(result['parameters'].get(name)):>13}"
            + (f"  ± {_num(u.get(name), 3)}" if u.get(name) is not None else "")
            + (f"  (least squares {_num(opt.get(name))})" if name in opt else "")
        )
    lines += [f"loss     {_num(result['loss'])} (of these parameters)", verdict_line(result)]
    return lines


def _formula(kind: str | None, names: list[str]) -> str:
    if kind == "callendar_van_dusen":
        return "R(T) = R0·(1 + A·T + B·T² + C·(T − 100)·T³), t_u = R in Ω, t_c = T in °C, C below 0 °C"
    if kind == "steinhart_hart":
        return "1/(t_c + 273.15) = a + b·ln t_u + c·(ln t_u)³, t_u in Ω"
    return "t_c = " + " + ".join(f"{name}·t_u^{name[1:]}" if name != "a0" else "a0" for name in names)


def chi2_line(result: dict[str, Any]) -> str:
    """A fit weighted by stated uncertainties: do the data agree with them (ISO/TS 28037's χ² test)?"""
    agree = "consistent with" if result.get("consistent") else "NOT consistent with"
    return (
        f"χ²       {_num(result['chi2_obs'], 5)} with {result['chi2_dof']} dof, p {_num(result['chi2_p'], 3)}: "
        f"the data are {agree} their stated uncertainties (95 %)"
    )


def verdict_line(result: dict[str, Any]) -> str:
    """Whether this line is the least-squares one, and if not, how far from it."""
    converged, detail = result.get("converged"), result.get("convergence") or {}
    needed = detail.get("epochs_needed")
    if converged is None:
        return "verdict  none (t_u all equal: the least-squares line is not unique)"
    if converged:
        return "verdict  converged: this is the least-squares line, within the tolerance"
    by_name = detail.get("gap_se") or {}
    if detail.get("gap_se_w") is not None:
        gap = f"{detail['gap_se_w']:+.3g} SE in w, {detail['gap_se_b']:+.3g} SE in b"
    elif by_name and all(value is not None for value in by_name.values()):
        gap = ", ".join(f"{value:+.3g} SE in {name}" for name, value in by_name.items())
    else:
        gap = f"excess loss {_num(detail.get('excess_loss'), 3)}"
    return (
        f"verdict  NOT converged: {gap} from the least-squares line"
        + (f"; this learning rate needs {needed} epochs" if needed is not None else "")
        + ' (try epochs "auto" or normalize "standardize")'
    )


def converged_cell(fit: dict[str, Any]) -> str:
    result = fit.get("result") or {}
    if not result:
        return ""
    converged = result.get("converged")
    return "-" if converged is None else ("yes" if converged else "NO")


COLUMNS = (
    ("id", 8),
    ("status", 9),
    ("epochs", 13),
    ("w_raw", 11),
    ("b_raw", 11),
    ("loss", 11),
    ("converged", 9),
    ("labels", 24),
)


def fits_table(fits: Sequence[dict[str, Any]]) -> str:
    def cells(fit: dict[str, Any]) -> list[str]:
        result = fit.get("result") or {}
        labels = ",".join(f"{k}={v}" for k, v in (fit.get("labels") or {}).items())
        return [
            fit["id"][:8],
            fit["status"],
            f"{fit['epochs_done']}/{fit['epochs']}",
            _num(result.get("w_raw")),
            _num(result.get("b_raw")),
            _num(result.get("loss")),
            converged_cell(fit),
            labels,
        ]

    rows = [[name for name, _ in COLUMNS]] + [cells(fit) for fit in fits]
    return "\n".join(
        "  ".join(cell[:width].ljust(width) for cell, (_, width) in zip(row, COLUMNS, strict=True)).rstrip()
        for row in rows
    )


def _verdict(calibration: dict[str, Any] | None) -> tuple[str, str]:
    drift = (calibration or {}).get("drift")
    if not drift:
        return "", "first" if calibration else ""
    return _num(drift["p_value"], 3), "DRIFTED" if drift["flagged"] else "stable"


def instruments_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per instrument: its current line, the drift verdict, tolerance and next due."""
    out = [
        f"{'instrument':<16} {'cal.':>4} {'last calibrated':<16} {'w_raw':>10} {'b_raw':>10} "
        f"{'p-value':>9} {'verdict':<8} {'tolerance':>9} {'next due':<10}"
    ]
    for row in rows:
        current = row.get("current")
        p_value, verdict = _verdict(current)
        out.append(
            f"{row['id'][:16]:<16} {row['calibrations']:>4} "
            f"{(current or {}).get('calibrated_at', '')[:16].replace('T', ' '):<16} "
            f"{_num((current or {}).get('w_raw')):>10} {_num((current or {}).get('b_raw')):>10} "
            f"{p_value:>9} {verdict:<8} {_num(row.get('tolerance'), 3):>9} {row.get('next_due') or '':<10}"
        )
    return "\n".join(out)


def _limits(instrument: dict[str, Any]) -> str:
    """The instrument's limits of error and decision rule, where it has them."""
    limits = instrument.get("limits")
    if not limits:
        return ""
    rule = (
        f"guard band w = {_num(instrument['coverage_factor'], 3)}·u"
        if instrument.get("decision_rule") == "guard_band"
        else "simple acceptance"
    )
    verdict = f"; as found: {instrument['verdict'].upper()}" if instrument.get("verdict") else ""
    return f", limits [{_num(limits['lower'], 4)}, {_num(limits['upper'], 4)}] ({rule}){verdict}"


def instrument_history(instrument: dict[str, Any]) -> str:
    """An instrument's calibrations, newest first, each with its drift from the one before."""
    lines = [
        f"instrument {instrument['id']}: {instrument['calibrations']} calibrations"
        + (f", tolerance {_num(instrument['tolerance'], 4)}" if instrument.get("tolerance") is not None else "")
        + (f", next due {instrument['next_due']}" if instrument.get("next_due") else "")
        + _limits(instrument),
        f"  {'calibrated (UTC)':<19} {'w_raw':>10} {'± SE':>8} {'b_raw':>10} {'± SE':>8} {'chi2':>9} {'p-value':>9} "
        f"{'verdict':<8} {'as found':>9} {'as left':>9}  {'conformity':<16}  fit",
    ]
    for cal in instrument["history"]:
        drift = cal.get("drift") or {}
        p_value, verdict = _verdict(cal)
        lines.append(
            f"  {cal['calibrated_at'][:19].replace('T', ' '):<19} {_num(cal['w_raw']):>10} {_num(cal['se_w'], 2):>8} "
            f"{_num(cal['b_raw']):>10} {_num(cal['se_b'], 2):>8} {_num(drift.get('chi2'), 3):>9} {p_value:>9} "
            f"{verdict:<8} {_num(drift.get('as_found_rms'), 3):>9} {_num(drift.get('as_left_rms'), 3):>9}  "
            f"{(cal.get('decision') or {}).get('verdict') or '':<16}  {cal['fit_id'][:8]}"
        )
        model = cal.get("model") or {"kind": "line"}
        if model["kind"] != "line":
            # Another function: its parameters on a line of their own, under the blank w_raw and b_raw.
            u = cal.get("standard_uncertainties") or {}
            shown = "; ".join(f"{n} {_num(v)} ± {_num(u.get(n), 2)}" for n, v in (cal.get("parameters") or {}).items())
            lines.append(f"  {'':<19} {model['kind']}: {shown}")
    return "\n".join(lines)
