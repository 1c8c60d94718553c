"""The cross-study report of the study matrix: when does ULMFiT's 2.6 hold?

``scripts/study.sh matrix`` runs the lr-ratio study in several cells along three axes (labels per
class 5, 10, 30, 100; layer groups 3, 4, 5; a far source against a near one) and the text
classifier, each a sweep with its own meta report. This module reads those reports and writes one
report across them; it fits nothing:

    <matrix>/<cell>/cell.json          what the cell is: {name, label, task, groups, labels, axis,
                                       source, shift, order} (axis, source, shift: newer cells)
    <matrix>/<cell>/meta/summary.json  the cell's fastlab-meta --confirm --stability summary
    ─► <matrix>/report.md, summary.json, pd_overlay.png

    fastlab-meta --matrix outputs/studies/matrix

Each cell gets one **answer**, and where the forest and the confirmation grid disagree the answer
rests on the grid (controlled runs beat a model of random ones): :func:`cell_answer`. Beside the
answer a row carries what the cell's summary says of the mechanism (a ratio, or a band of the
lowest group's rate), the non-inferiority of ratios 1 and 2.6, the spread and the lowest rate.
The conclusion (:func:`conclusion`) is worded from the answers and the numbers alone, with one
sentence per axis on how the best ratio, the gain over 1 and the mechanism move along it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fastlab.analysis.errors import MetaError
from fastlab.analysis.forest.verdict import fmt

REFERENCE = 2.6
OVERLAY_FILE = "pd_overlay.png"
# The answers a cell can give, in the order the conclusion lists them.
HOLDS = "2.6 holds"
ELSEWHERE = "discrimination helps, best ratio elsewhere"
UNPINNED = "discrimination helps, best ratio not pinned down"
NO_GAIN = "no measurable gain over ratio 1"
HURTS = "ratio 1 does better"
ANSWERS = (HOLDS, ELSEWHERE, UNPINNED, NO_GAIN, HURTS)
SHAKY_AGREE = 0.8  # a cell whose verdict agrees with itself in fewer subsamples is "still moving"
# The matrix's axes, in report order: name -> (what moves along it, the cell's key that orders it).
AXES = {"labels": ("labels per class (3 groups)", "labels"),
        "depth": ("layer groups (10 labels per class)", "groups"),
        "shift": ("the source (3 groups, 10 labels per class)", "shift")}
SHIFTS = ("far", "near")  # how far the source model's task lies from the target's, in axis order
# summary.json's mechanism basis in words ("cannot tell": neither basis predicts clearly better)
BASES = {"ratio": "a ratio", "lowest_rate": "a band of the lowest group's rate",
         "cannot tell": "undecided"}


def read_cells(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """``(cells, missing)``: each cell's ``cell.json`` with its ``summary`` (the meta report's
    summary.json), in ``order``; ``missing`` names cells without a meta report yet."""
    if not root.is_dir():
        raise MetaError(f"--matrix {root}: no such dir; run bash scripts/study.sh matrix first")
    cells, missing = [], []
    for manifest in sorted(root.glob("*/cell.json")):
        cell = json.loads(manifest.read_text())
        summary = manifest.parent / "meta" / "summary.json"
        if not summary.is_file():
            missing.append(cell.get("name", manifest.parent.name))
            continue
        cell["summary"] = json.loads(summary.read_text())
        cell["dir"] = str(manifest.parent)
        cells.append(cell)
    if not cells:
        raise MetaError(f"--matrix {root}: no cell has a meta report (<cell>/cell.json and "
                        "<cell>/meta/summary.json); run bash scripts/study.sh matrix")
    cells.sort(key=_axis_order)
    return cells, missing


def _axis_order(cell: dict[str, Any]) -> tuple[int, float, int, str]:
    """Cells by their first axis (``AXES``' order), along it by what moves on it (labels, groups,
    far before near), then by ``order``: cells without an axis (the text cell, cells written
    before axes) come last, among themselves in ``order``."""
    first = (cell.get("axis") or [None])[0]
    if first not in AXES:
        return len(AXES), 0.0, cell.get("order", 99), cell["name"]
    return list(AXES).index(first), _along(cell, first), cell.get("order", 99), cell["name"]


def _along(cell: dict[str, Any], axis: str) -> float:
    """Where a cell lies along ``axis`` (NaN-free: a cell that does not say sorts last)."""
    v = cell.get(AXES[axis][1])
    if AXES[axis][1] == "shift":
        return float(SHIFTS.index(v)) if v in SHIFTS else float(len(SHIFTS))
    return float(v) if isinstance(v, int | float) else float("inf")


def cell_answer(s: dict[str, Any], reference: float = REFERENCE,
                groups: int | None = None) -> dict[str, Any]:
    """One cell's row of the matrix from its meta summary ``s``: the numbers and the answer.

    The forest *helps* when its optimum is clear (the verdict rule); the grid *helps* when the
    tested ratio beats 1 by more than two standard errors (``confirmation.beats``). The answer
    takes the grid's side when both exist. "2.6 holds" needs a gain over ratio 1 and either the
    grid confirming 2.6 itself, or a clear forest optimum whose interval holds 2.6: a wide
    interval from a forest that found no clear optimum holds 2.6 without saying anything about
    it, so such a cell answers "not pinned down". ``groups`` (the cell's layer groups) picks the
    spread and the lowest rate when the summary has them for several group counts.
    """
    rec = s["recommendation"]
    if rec is None:
        raise MetaError(f"{s['source']['path']}: the meta report has no recommendation: rerun "
                        "fastlab-meta with --focus schedule.lr_ratio")
    imp = s["importance"].get(rec["param"])
    rank = list(s["importance"]).index(rec["param"]) + 1 if rec["param"] in s["importance"] else None
    conf = s.get("confirmation")
    # the gain over ratio 1 when 1 was sampled, else over the low end of the sampled range
    # (a Sobol sweep's lowest ratio is a hair above 1): the baseline nearest "no discrimination"
    base = min(rec["baselines"], key=lambda b: (b["what"] != "the neutral", b["value"]))
    forest = "helps" if rec["clear_optimum"] else ("hurts" if base["gain_interval"][1] < 0
                                                   else "cannot tell")
    grid, tested = "not run", None
    if conf is not None and conf.get("difference") is not None:
        grid = {True: "helps", False: "hurts", None: "cannot tell"}[conf["beats"]]
        tested = conf["values"][1]
    decided = grid if grid != "not run" else forest
    lo, hi = rec["interval"]
    ref_in = lo <= reference <= hi
    if decided == "helps":
        confirmed_ref = tested is not None and abs(tested - reference) < 1e-9
        if confirmed_ref or (rec["clear_optimum"] and ref_in):
            answer = HOLDS
        else:
            answer = ELSEWHERE if rec["clear_optimum"] else UNPINNED
    else:
        answer = HURTS if decided == "hurts" else NO_GAIN
    st = s.get("stability")
    last = [r for r in st["sizes"][:-1] if r["spread"] is not None] if st else []
    cond = s.get("conditional_optimum")
    return {
        "best": rec["best"], "interval": [lo, hi], "gain": base["gain"],
        "gain_interval": base["gain_interval"], "gain_over": base["value"],
        "reference_in_interval": ref_in,
        "clear": bool(rec["clear_optimum"]), "importance": imp,
        "importance_std": s["importance_std"].get(rec["param"]), "importance_rank": rank,
        "n_params": len(s["importance"]), "n_trials": s["n_trials"], "oob_r2": s["oob_r2"],
        "trust": s["trust"]["grade"],
        "conditional": None if cond is None else {
            "given": cond["given"], "rows": cond["rows"], "at_best": cond["at_best"]},
        "forest": forest, "grid": grid, "grid_tested": tested,
        "grid_difference": None if conf is None else conf.get("difference"),
        "grid_se": None if conf is None else conf.get("difference_se"),
        "disagree": grid != "not run" and grid != forest,
        "answer": answer,
        "stability_spread": last[-1]["spread"] if last else None,
        "stability_n": last[-1]["n"] if last else None,
        "stability_agree": last[-1]["agree"] if last else None,
        "settled_at": st["settled_at"] if st else None,
        **_mechanism(s.get("mechanism")), **_noninferior(s.get("noninferior"), reference),
        **_spread(s.get("spread"), s.get("lowest_rate"), groups),
    }


def _mechanism(m: dict[str, Any] | None) -> dict[str, Any]:
    """The row's mechanism fields from summary.json's ``mechanism`` (None in older summaries and
    where it does not apply): which basis the held-out R^2 prefers, and by how much."""
    if not m:
        return {"mechanism": None, "mechanism_difference": None, "mechanism_interval": None,
                "mechanism_text": None}
    return {"mechanism": m.get("basis"), "mechanism_difference": m.get("difference"),
            "mechanism_interval": m.get("interval"), "mechanism_text": m.get("text")}


def _noninferior(ni: dict[str, Any] | None, reference: float) -> dict[str, Any]:
    """Ratio 1's and the reference's arms of summary.json's ``noninferior`` (each None where it
    was not read: no such summary, or the value not on the focus's grid)."""
    def arm(value: float) -> dict[str, Any] | None:
        a = next((a for a in (ni or {}).get("arms", [])
                  if abs(a["value"] - value) <= 1e-6 * value), None)
        return None if a is None else {k: a[k] for k in ("value", "loss", "interval", "within")}

    return {"noninferior_1": arm(1.0), "noninferior_ref": arm(reference),
            "noninferior_at": None if ni is None else ni.get("at")}


def _spread(spread: dict[str, Any] | None, lowest: dict[str, Any] | None,
            groups: int | None) -> dict[str, Any]:
    """The spread (head rate / lowest rate) and the lowest group's rate at the cell's layer
    groups: ``groups`` when the summary has it, else the one group count the trials recorded."""
    values = (spread or {}).get("values") or {}
    key = str(groups) if str(groups) in values else (next(iter(values)) if len(values) == 1
                                                     else None)
    low = (lowest or {}).get("values") or {}
    return {"spread": None if key is None else values[key],
            "spread_groups": None if key is None else int(key),
            "lowest_rate": low.get(key) if key is not None else None,
            "head_rate": (lowest or {}).get("head_rate")}


def _names(rows: list[dict[str, Any]]) -> str:
    # "; ": a cell's label may hold commas ("vision, 3 groups, 10 labels")
    return "; ".join(r["label"] for r in rows)


def _way(values: list[float], up: str = "rises", down: str = "falls") -> str:
    """How a sequence moves: ``up``, ``down``, "stays" or "does not move one way"."""
    steps = [b - a for a, b in zip(values, values[1:])]
    if all(d == 0 for d in steps):
        return "stays"
    return up if all(d > 0 for d in steps) else down if all(d < 0 for d in steps) else \
        "does not move one way"


def _moves(rows: list[dict[str, Any]], at: list[str]) -> tuple[str, str]:
    """"the best ratio ... ; the gain over ratio 1 ..." along ``rows`` (in axis order), each
    point named by ``at``."""
    bests = [r["best"] for r in rows]
    steps = " -> ".join(f"{fmt(r['best'])} [{fmt(r['interval'][0])}, {fmt(r['interval'][1])}]"
                        f" at {a}" for r, a in zip(rows, at))
    gains = " -> ".join(fmt(r["gain"], True) for r in rows)
    return (f"the best ratio {_way(bests)} ({steps})",
            f"the gain over ratio 1 {_way([r['gain'] for r in rows], 'grows', 'shrinks')} "
            f"({gains})")


def _trend(rows: list[dict[str, Any]], key: str, what: str) -> str | None:
    """"<what>: the best ratio goes x -> y -> z" over cells sorted by ``key`` (cells written
    before axes; :func:`_axis_sentence` reads the axes)."""
    rows = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[key])
    if len(rows) < 2:
        return None
    best, gain = _moves(rows, [str(r[key]) for r in rows])
    return f"{what}: {best}; {gain}."


def _axis_sentence(rows: list[dict[str, Any]], axis: str) -> str | None:
    """One sentence on how the best ratio, the gain over 1 (and how many gain intervals lie
    above 0) and the mechanism's basis move along ``axis``, from the cells on it; None with
    fewer than two."""
    what, key = AXES[axis]
    on = sorted((r for r in rows if axis in (r.get("axis") or [])
                 and (r.get(key) in SHIFTS if key == "shift" else r.get(key) is not None)),
                key=lambda r: _along(r, axis))
    at = [f"{r[key]} ({r.get('source') or '?'})" if key == "shift" else str(r[key]) for r in on]
    if len(on) < 2:
        return None
    best, gain = _moves(on, at)
    above = [a for r, a in zip(on, at) if r["gain_interval"][0] > 0]
    below = [a for r, a in zip(on, at) if r["gain_interval"][1] < 0]
    said = ([f"above 0 at {', '.join(above)}"] if above else []) + \
        ([f"below 0 at {', '.join(below)}"] if below else [])
    real = ("every interval includes 0" if not said else "its interval lies " + " and ".join(said)
            + (", elsewhere it includes 0" if len(above) + len(below) < len(on) else ""))
    bases = [r.get("mechanism") for r in on]
    if not any(bases):
        mech = "the mechanism was not measured"
    elif len(set(bases)) == 1:
        mech = f"the mechanism's basis stays {BASES.get(bases[0], bases[0])} throughout"
    else:
        mech = "the mechanism's basis moves: " + " -> ".join(
            f"{BASES.get(b, b) if b else '-'} at {a}" for b, a in zip(bases, at))
    return f"Along {what}: {best}; {gain}, {real}; {mech}."


def conclusion(rows: list[dict[str, Any]], missing: list[str]) -> str:
    """The answer to "when does 2.6 hold", in plain words, from the cells' answers and numbers."""
    by = {a: [r for r in rows if r["answer"] == a] for a in ANSWERS}
    n = len(rows)
    out = []
    if len(by[HOLDS]) == n:
        out.append(f"2.6 holds in every cell ({n} of {n}): discrimination beats ratio 1 and 2.6 "
                   "lies inside the interval of the best ratio everywhere.")
    elif not by[HOLDS]:
        out.append(f"2.6 holds in none of the {n} cells.")
    else:
        out.append(f"2.6 holds in {len(by[HOLDS])} of {n} cells: {_names(by[HOLDS])}.")
    for a, why in ((ELSEWHERE, "Discrimination helps, but the best ratio's interval leaves 2.6 "
                               "out, in"),
                   (UNPINNED, "Discrimination helps, but the forest found no clear optimum, so "
                              "the best ratio is not pinned down (2.6 neither confirmed nor ruled "
                              "out), in"),
                   (NO_GAIN, "No measurable gain over ratio 1 (2.6 neither confirmed nor ruled "
                             "out) in"),
                   (HURTS, "Ratio 1 does better than discrimination in")):
        if by[a]:
            detail = "; ".join(f"{r['label']} (best {fmt(r['best'])}, interval "
                               f"{fmt(r['interval'][0])} to {fmt(r['interval'][1])})"
                               for r in by[a])
            out.append(f"{why}: {detail}.")
    if len(by[HOLDS]) not in (0, n):
        out.append("So 2.6 is no universal constant here: it holds in " + _names(by[HOLDS])
                   + ", not in " + _names([r for r in rows if r["answer"] != HOLDS]) + ".")
    if any(r.get("axis") for r in rows):
        trends = [_axis_sentence(rows, axis) for axis in AXES]
    else:  # cells written before axes: the trends across depth and labels
        vision = [r for r in rows if r.get("task") == "vision"]
        few = [r for r in vision if r.get("labels") == min((v.get("labels") or 0) for v in vision)]
        trends = [_trend(few, "groups", "With more layer groups"),
                  _trend([r for r in vision if r.get("groups") == 3], "labels",
                         "With more labels per class (3 groups)")]
    out += [t for t in trends if t]
    for r in rows:
        if r.get("task") == "text":
            out.append(f"The text classifier ({r['label']}): {r['answer']} (best "
                       f"{fmt(r['best'])}, interval {fmt(r['interval'][0])} to "
                       f"{fmt(r['interval'][1])}, gain over 1 {fmt(r['gain'], True)}).")
    split = [r for r in rows if r["disagree"]]
    if split:
        out.append("The forest and the confirmation grid disagree in "
                   + "; ".join(f"{r['label']} (forest: {r['forest']}, grid: {r['grid']} at "
                               f"ratio {fmt(r['grid_tested'])}, difference "
                               f"{fmt(r['grid_difference'], True)} ± {fmt(r['grid_se'])})"
                               for r in split)
                   + ": the answers above rest on the grid there.")
    shaky = [r for r in rows if r["stability_agree"] is not None
             and r["stability_agree"] < SHAKY_AGREE]
    if shaky:
        out.append("Still moving with the trial count (the verdict agrees in fewer than "
                   f"{SHAKY_AGREE:.0%} of subsamples): " + _names(shaky)
                   + "; read their answers as provisional.")
    weak = [r for r in rows if r["trust"] in ("weak", "do not trust")]
    if weak:
        out.append("The forest's fit is weak or untrustworthy in " + _names(weak)
                   + " (OOB R^2): there the grid carries the answer.")
    if missing:
        out.append(f"Not yet run: {', '.join(missing)}; this conclusion covers the other cells.")
    return " ".join(out)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _iv(v: list[float], signed: bool = False) -> str:
    return f"{fmt(v[0], signed)} to {fmt(v[1], signed)}"


def _within(arm: dict[str, Any] | None) -> str:
    if arm is None:
        return "-"
    word = {True: "within", False: "not within", None: "undecided"}[arm["within"]]
    return f"{word} ({fmt(arm['loss'], True)}; {_iv(arm['interval'], True)})"


def _mechanism_row(r: dict[str, Any]) -> list[str]:
    """A row of the second table: axis, source, mechanism, non-inferiority, spread."""
    mech = "-" if r.get("mechanism") is None else r["mechanism"]
    if r.get("mechanism_difference") is not None:
        mech += f" ({fmt(r['mechanism_difference'], True)}"
        mech += f"; {_iv(r['mechanism_interval'], True)})" if r.get("mechanism_interval") else ")"
    spread = "-" if r.get("spread") is None else f"{fmt(r['spread'])} ({r['spread_groups']})"
    low = "-" if r.get("lowest_rate") is None else \
        f"{fmt(r['lowest_rate'])} ({fmt(r['head_rate'])})"
    return [r["label"], ", ".join(r.get("axis") or []) or "-", r.get("source") or "-", mech,
            _within(r.get("noninferior_1")), _within(r.get("noninferior_ref")), spread, low]


def markdown(rows: list[dict[str, Any]], text: str, missing: list[str]) -> str:
    """``report.md`` of the matrix: the conclusion, the table, the overlay, per-cell details."""
    table = [[r["label"], str(r["n_trials"]), fmt(r["best"]), _iv(r["interval"]),
              f"{fmt(r['gain'], True)} ({_iv(r['gain_interval'], True)})"
              + ("" if abs(r["gain_over"] - 1) < 1e-9 else f" vs {fmt(r['gain_over'])}"),
              "yes" if r["reference_in_interval"] else "no",
              f"{fmt(r['importance'])} (#{r['importance_rank']} of {r['n_params']})",
              f"{fmt(r['oob_r2'])} ({r['trust']})", r["forest"],
              r["grid"] + (f" at {fmt(r['grid_tested'])}" if r["grid_tested"] else ""),
              fmt(r["stability_spread"]) + (f" @ {r['stability_n']}" if r["stability_n"] else ""),
              r["answer"]] for r in rows]
    parts = ["# When does 2.6 hold? The lr-ratio study across cells", "",
             f"**Conclusion.** {text}", "",
             "## The cells", "",
             _table(["cell", "trials", "best ratio", "interval", "gain over 1 (interval)",
                     "2.6 inside", "ratio importance", "OOB R^2", "forest", "grid",
                     "spread (log10)", "answer"], table), "",
             "Gain over 1: over the lowest sampled ratio when 1 itself was not sampled "
             "(\"vs\" names it). "
             "Best ratio and its interval: the forest's partial dependence and its bootstrap "
             "(each cell's report states the level). Forest *helps* = a clear optimum by the "
             "verdict rule; grid *helps* = the tested ratio beats 1 by more than two standard "
             "errors with the head rate tuned for each. Where they disagree the answer rests "
             "on the grid. Spread: standard deviation of log10(best ratio) over random "
             "subsamples of the trials, at the largest subsample size.", "",
             "## Mechanism, non-inferiority and the spread", "",
             _table(["cell", "axis", "source", "mechanism (R^2 lowest rate - ratio)",
                     "ratio 1 within the margin", "2.6 within the margin",
                     "spread (groups)", "lowest rate (head rate)"],
                    [_mechanism_row(r) for r in rows]), "",
             "Mechanism: which basis predicts the objective better on held-out trials, the "
             "ratio or the lowest group's rate (each cell's report says how it is measured); "
             "\"-\" where the cell's summary has none. Within the margin: what the simple "
             "ratio loses against the best at the tuned head rate, its loss and interval "
             "(undecided: the interval straddles the margin). Spread: head rate / lowest rate "
             "= best ratio^(groups - 1).", "",
             f"![partial dependence of the ratio, each cell]({OVERLAY_FILE})", "",
             "## The best ratio given the head rate", ""]
    for r in rows:
        c = r["conditional"]
        if c is None:
            continue
        steps = ", ".join(f"{fmt(x['best_a'])} at {fmt(x['b'])}" for x in c["rows"])
        parts.append(f"- {r['label']} (given `{c['given']}`): {steps}; where the objective "
                     f"peaks ({fmt(c['at_best']['b'])}) the best ratio is "
                     f"{fmt(c['at_best']['best_a'])}.")
    parts += ["", "## Cell reports", ""]
    parts += [f"- {r['label']}: `{r['dir']}/meta/report.md`" for r in rows]
    if missing:
        parts += ["", f"Not yet run: {', '.join(missing)}."]
    return "\n".join(parts) + "\n"


def plot_overlay(cells: list[dict[str, Any]], path: Path) -> Path | None:
    """Each cell's partial dependence of the ratio, as gain over ratio 1 (log x axis)."""
    from fastlab.plots import pyplot, save_figure

    curves = [(c, c["summary"].get("focus_curve")) for c in cells]
    curves = [(c, fc) for c, fc in curves if fc is not None]
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (c, fc) in enumerate(curves):
        x, y = np.asarray(fc["values"], float), np.asarray(fc["mean"], float)
        # at 1 when sampled (the grid then holds it), else at the lowest sampled ratio. No
        # bands: the bootstrap's bands are of the level, which moves between refits, and would
        # hide the curves; each cell's interval of the gain is in the table.
        base = float(np.interp(1.0, x, y))
        ax.plot(x, y - base, color=f"C{i}", lw=2, label=c["label"])
    ax.axvline(REFERENCE, color="k", ls="--", lw=1, label="2.6")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set(xlabel="schedule.lr_ratio", ylabel="objective minus its value at ratio 1",
           title="Partial dependence of the lr ratio, each cell")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def build_matrix(root: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Read every cell under ``root`` and write the matrix report into ``out`` (default
    ``root``); returns the summary written."""
    from fastlab.rundir import atomic_write_text, write_json

    root = Path(root)
    out = Path(out) if out is not None else root
    cells, missing = read_cells(root)
    rows = []
    for c in cells:
        row = {"name": c["name"], "label": c.get("label", c["name"]), "task": c.get("task"),
               "groups": c.get("groups"), "labels": c.get("labels"), "axis": c.get("axis"),
               "source": c.get("source"), "shift": c.get("shift"), "dir": c["dir"]}
        rows.append({**row, **cell_answer(c["summary"], groups=c.get("groups"))})
    text = conclusion(rows, missing)
    out.mkdir(parents=True, exist_ok=True)
    figure = plot_overlay(cells, out / OVERLAY_FILE)
    summary = {"reference": REFERENCE, "cells": rows, "missing": missing, "conclusion": text,
               "answers": {r["name"]: r["answer"] for r in rows},
               "figures": [] if figure is None else [OVERLAY_FILE]}
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", markdown(rows, text, missing))
    return summary


def run_matrix(root: Path, out: Path | None = None) -> int:
    """``fastlab-meta --matrix DIR``: build the report, print where it is and the conclusion."""
    summary = build_matrix(root, out)
    where = Path(out) if out is not None else Path(root)
    print(f"fastlab-meta: matrix report: {where / 'report.md'} (summary.json, {OVERLAY_FILE})")
    print(summary["conclusion"])
    return 0
