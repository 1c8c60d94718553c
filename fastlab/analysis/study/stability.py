"""How stable a study's answer is: the recommendation refitted on random subsamples of the trials.

A best value read from 320 noisy trials is one draw. Refit the same analysis on subsamples of 50,
100, 200 ... trials (several random subsamples each, without replacement) and the spread of the
best value and of the verdict across them says how many trials the answer needs before it stops
moving: once the spread at ``n`` is about that at ``2n`` and the verdict agrees, more trials buy
little. :func:`stability` measures it from the trials, never from the forest's own bootstrap.

Each refit is a cheaper copy of the analysis (:data:`CHEAP`: fewer trees and refits), since it is
the best value and the verdict that are compared, not their fine print.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fastlab.analysis.errors import MetaError
from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.verdict import verdict_label
from fastlab.analysis.sources.table import TrialsTable

SIZES = (50, 100, 200)  # subsample sizes below the full table (which is always added)
REPEATS = 5  # random subsamples per size
# Settings of each subsample's refit: enough for its argmax and verdict. A forest costs ~3 ms a
# tree whatever the trials (sklearn's per-tree overhead), so this is ~600 trees, 1-2 s a refit.
CHEAP = {"n_estimators": 60, "n_boot": 20, "n_boot_estimators": 25, "n_splits": 2,
         "n_repeats": 1, "progress": None, "anova": False, "mechanism": False}
SETTLED = 0.05  # a spread (in log10 of the focus) below this counts as settled: x/÷ 1.12


def subsample(table: TrialsTable, rows: Sequence[int]) -> TrialsTable:
    """The trials ``rows`` of ``table`` (indices into its trials), everything else kept."""
    rows = [int(i) for i in rows]

    def pick(xs: tuple) -> tuple:
        return tuple(xs[i] for i in rows) if xs else xs

    return replace(table, params=pick(table.params), values=np.asarray(table.values)[rows],
                   status=pick(table.status), numbers=pick(table.numbers),
                   job_dirs=pick(table.job_dirs), metrics=pick(table.metrics), judged=pick(table.judged))


def _answer(m: MetaAnalysis) -> dict[str, Any]:
    rec = m.recommendation_
    return {"best": rec["best"], "clear": bool(rec["clear_optimum"]),
            "reference_inside": rec["reference_inside"],
            "verdict": verdict_label(rec["clear_optimum"], rec["reference_inside"],
                                     rec["reference"])}


def spread(best: Sequence[float], log: bool) -> float:
    """The spread of best values: the standard deviation of their log10 (a log-scale focus) or of
    the values themselves; 0 for fewer than two."""
    x = np.log10(np.asarray(best, dtype=float)) if log else np.asarray(best, dtype=float)
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def stability(m: MetaAnalysis, table: TrialsTable, sizes: Sequence[int] = SIZES,
              repeats: int = REPEATS, seed: int = 0,
              cheap: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``stability`` entry of ``summary.json`` for a fitted analysis ``m`` of ``table``.

    Parameters
    ----------
    m : the fitted full analysis (its focus, direction and derive specs are reused).
    table : the trials ``m`` was fitted on, as read (before ``--derive``).
    sizes : subsample sizes; those not below the table's size are skipped, the full table is
        always the last row (its one answer is ``m``'s own).
    repeats : random subsamples per size.
    seed : seeds the subsamples and every refit.
    cheap : the refits' settings (:class:`MetaAnalysis` parameters; default :data:`CHEAP`).

    Returns
    -------
    ``{param, log, sizes: [{n, repeats, best [per subsample], median, lo, hi, spread, verdicts
    {label: count}, agree (share with the full table's verdict)}], full_verdict, settled_at,
    text}``; ``spread`` is in log10 units for a log-scale focus.
    """
    rec = m.recommendation_
    if rec is None:
        raise MetaError("the stability of an answer needs a focus parameter to recommend: "
                        "--focus schedule.lr_ratio")
    f = m.encoded_.features[m.encoded_.index(m.focus_)]
    rng = np.random.default_rng(seed)
    full = _answer(m)
    rows = []
    for n in sorted({int(s) for s in sizes if 0 < int(s) < len(table)}):
        answers = []
        for r in range(repeats):
            pick = np.sort(rng.choice(len(table), size=n, replace=False))
            # a fresh estimator from m's parameters, not sklearn's clone: clone deep-copies
            # them, and a progress line holds an open stream
            # the full analysis's margin, even one a confirmation grid measured after its fit
            params = {**m.get_params(deep=False), **(CHEAP if cheap is None else cheap),
                      "margin": m.margin_, "random_state": seed + 1000 * n + r,
                      # where the lowest rate carries the effect, the ratio read in its basis
                      **({"mechanism": "lowest_rate"} if m.judged_in_ is not None else {})}
            cheap_m = type(m)(**params)
            try:
                answers.append(_answer(cheap_m.fit(subsample(table, pick))))
            except MetaError:  # too few usable trials in this subsample: say so, go on
                continue
        rows.append(_row(n, answers, full["verdict"], f.log))
    rows.append(_row(len(table), [full], full["verdict"], f.log))
    settled = next((r["n"] for r in rows if r["spread"] is not None and r["spread"] <= SETTLED
                    and r["agree"] == 1.0), None)
    out = {"param": m.focus_, "log": bool(f.log), "repeats": repeats, "seed": seed,
           "sizes": rows, "full_verdict": full["verdict"], "settled_at": settled}
    out["text"] = stability_text(out)
    return out


def _row(n: int, answers: list[dict[str, Any]], full_verdict: str, log: bool) -> dict[str, Any]:
    best = [float(a["best"]) for a in answers]
    verdicts: dict[str, int] = {}
    for a in answers:
        verdicts[a["verdict"]] = verdicts.get(a["verdict"], 0) + 1
    agree = (verdicts.get(full_verdict, 0) / len(answers)) if answers else None
    return {"n": n, "repeats": len(answers), "best": best,
            "median": float(np.median(best)) if best else None,
            "lo": min(best) if best else None, "hi": max(best) if best else None,
            "spread": spread(best, log) if len(best) > 1 else None,
            "verdicts": verdicts, "agree": agree}


def stability_text(s: dict[str, Any]) -> str:
    """One plain sentence on how stable the answer is."""
    unit = "log10 units" if s["log"] else "units"
    parts = []
    for r in s["sizes"][:-1]:
        if r["repeats"] == 0:
            continue
        factor = f" (x/÷ {10 ** r['spread']:.2f})" if s["log"] and r["spread"] is not None else ""
        parts.append(f"{r['n']} trials: best {r['lo']:.3g} to {r['hi']:.3g}, spread "
                     f"{r['spread']:.3f} {unit}{factor}, verdict agrees in {r['agree']:.0%}"
                     if r["spread"] is not None else f"{r['n']} trials: one usable subsample")
    full = s["sizes"][-1]
    head = (f"Over random subsamples ({s['repeats']} each) the best `{s['param']}` moves as "
            + "; ".join(parts) + "." if parts else
            f"The sweep has too few trials for subsamples of {SIZES[0]} or more.")
    if s["settled_at"] is not None:
        tail = (f" The answer settles (spread <= {SETTLED} {unit}, the same verdict every time) "
                f"from {s['settled_at']} trials.")
    else:
        tail = (f" It has not settled at {full['n']} trials (no subsample size has spread <= "
                f"{SETTLED} {unit} with every verdict the same): read the best value as a range.")
    return head + tail + f" All {full['n']} trials: {s['full_verdict']}."


def mean_spread(s: dict[str, Any]) -> float:
    """The spread at the largest subsample size (NaN when there is none): one number per study."""
    rows = [r for r in s["sizes"][:-1] if r["spread"] is not None]
    return float(rows[-1]["spread"]) if rows else math.nan
