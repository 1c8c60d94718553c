"""The report's figures (matplotlib, Agg): importance, 1-D and 2-D partial dependence, the
forest's out-of-bag fit and, for a sweep of several objectives, the Pareto front. Each function takes a fitted :class:`MetaAnalysis` and writes one PNG
atomically; file names are part of the report contract (DESIGN.md)."""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import numpy as np

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.sources.objectives import front_rows, objective_value
from fastlab.analysis.sources.table import COMPLETED, DIVERGED, INFEASIBLE, TrialsTable
from fastlab.plots import pyplot, save_figure


def safe_name(name: str) -> str:
    """A parameter name as a file-name part: ``schedule.lr_ratio`` stays, ``arch@x`` -> ``arch_x``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def pd_file(name: str) -> str:
    return f"pd_{safe_name(name)}.png"


def pd2d_file(a: str, b: str) -> str:
    return f"pd2d_{safe_name(a)}__{safe_name(b)}.png"


IMPORTANCE_FILE = "importance.png"
OOB_FILE = "observed_vs_oob.png"
PARETO_FILE = "pareto.png"
PARETO_PLANES = 4  # objectives drawn pairwise at most: 6 planes


def _objective(m: MetaAnalysis) -> str:
    return m.table_.objective or "objective"


def plot_importance(m: MetaAnalysis, path: Path) -> Path:
    """Horizontal bars of held-out permutation importance (mean, with the spread as error bars)."""
    plt = pyplot()
    names = sorted(m.importance_, key=m.importance_.get)  # least important at the bottom
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.4))
    ax.barh(names, [m.importance_[n] for n in names], xerr=[m.importance_std_[n] for n in names],
            color="C0", alpha=0.8, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="held-out permutation importance (rise in squared error / variance)",
           title=f"What matters for {_objective(m)} ({m.n_trials_} trials)")
    return save_figure(fig, path)


def plot_pd(m: MetaAnalysis, name: str, path: Path) -> Path:
    """1-D partial dependence of ``name`` with its bootstrap band and the trials as a rug; for the
    focus parameter also the best value, its interval, the neutral and the reference values."""
    plt = pyplot()
    enc = m.encoded_
    f = enc.features[enc.index(name)]
    p = m.pd_[name]
    pct = f"{m.level:.0%}"
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if not f.numeric:
        x = np.arange(len(f.categories))
        ax.bar(x, p["mean"], yerr=[p["mean"] - p["lo"], p["hi"] - p["mean"]], color="C0",
               alpha=0.8, capsize=4, label=f"partial dependence ({pct} bootstrap band)")
        ax.set_xticks(x, f.categories, rotation=30 if len(f.categories) > 4 else 0)
        low = min(p["lo"].min(), p["mean"].min())
        high = max(p["hi"].max(), p["mean"].max())
        pad = 0.1 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)
    else:
        x = p["values"]
        ax.fill_between(x, p["lo"], p["hi"], color="C0", alpha=0.2, label=f"{pct} bootstrap band")
        ax.plot(x, p["mean"], color="C0", lw=2, label="partial dependence")
        observed = f.from_x(enc.X[:, enc.index(name)])
        ax.plot(observed, np.full_like(observed, np.nanmin(p["lo"])), "|", color="k", alpha=0.4,
                ms=10, label="trials")
        if f.log:
            ax.set_xscale("log")
        rec = m.recommendation_
        if rec is not None and rec["param"] == name:
            lo, hi = rec["interval"]
            ax.axvspan(lo, hi, color="C2", alpha=0.15, label=f"{pct} interval of the best value")
            ax.axvline(rec["best"], color="C2", lw=2, label=f"best {rec['best']:.3g}")
            if rec["neutral"] is not None:
                ax.axvline(rec["neutral"], color="C3", ls="--", label=f"neutral {rec['neutral']:g}")
            if rec["reference"] is not None:
                ax.axvline(rec["reference"], color="k", ls=":", label=f"reference {rec['reference']:g}")
    title = f"{name}: importance {m.importance_[name]:.3g} ± {m.importance_std_[name]:.2g}"
    rec = m.recommendation_
    if rec is not None and rec["param"] == name:  # the verdict's own words (fastlab.analysis.forest.verdict)
        title += "; clear optimum" if rec["clear_optimum"] else "; no clear optimum"
    ax.set(xlabel=name, ylabel=f"{_objective(m)} (partial dependence)", title=title)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_pd2d(m: MetaAnalysis, path: Path) -> Path:
    """2-D partial dependence of the focus against the most important other parameter, with the
    focus's best value for each value of the other (the conditional optimum) and the trials."""
    plt = pyplot()
    p, enc = m.pd2d_, m.encoded_
    fa, fb = enc.features[enc.index(p["a"])], enc.features[enc.index(p["b"])]
    xa = p["values_a"]
    yb = p["values_b"] if fb.numeric else np.arange(len(fb.categories), dtype=float)
    fig, ax = plt.subplots(figsize=(7, 5))
    mesh = ax.pcolormesh(xa, yb, p["surface"].T, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=f"{_objective(m)} (partial dependence)")
    ax.plot(p["best_a"], yb, "o-", color="w", ms=3, lw=1.5, label=f"best {p['a']} given {p['b']}")
    ta = fa.from_x(enc.X[:, enc.index(p["a"])])
    tb = enc.X[:, enc.index(p["b"])]
    tb = fb.from_x(tb) if fb.numeric else tb
    ax.scatter(ta, tb, s=6, c="k", alpha=0.35, label="trials")
    if fa.log:
        ax.set_xscale("log")
    if fb.numeric and fb.log:
        ax.set_yscale("log")
    if not fb.numeric:
        ax.set_yticks(yb, fb.categories)
    ax.set(xlabel=p["a"], ylabel=p["b"], title=f"{p['a']} x {p['b']}: the conditional optimum")
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)


def plot_oob(m: MetaAnalysis, path: Path) -> Path:
    """Observed response against the forest's out-of-bag prediction (trials it did not see)."""
    plt = pyplot()
    enc = m.encoded_
    y, pred = enc.y, m.oob_prediction_
    diverged = np.asarray([m.table_.status[i] == DIVERGED for i in enc.rows])
    fig, ax = plt.subplots(figsize=(5, 5))
    ok = np.isfinite(pred)
    ax.scatter(pred[ok & ~diverged], y[ok & ~diverged], s=12, alpha=0.6, label="completed")
    if (ok & diverged).any():
        ax.scatter(pred[ok & diverged], y[ok & diverged], s=12, color="C3", alpha=0.6,
                   label="diverged (scored worst)")
    lims = [np.nanmin([y.min(), np.nanmin(pred) if ok.any() else y.min()]),
            np.nanmax([y.max(), np.nanmax(pred) if ok.any() else y.max()])]
    ax.plot(lims, lims, "k--", lw=1, label="perfect prediction")
    r2 = "n/a" if not np.isfinite(m.oob_r2_) else f"{m.oob_r2_:.3f}"
    ax.set(xlabel="out-of-bag prediction", ylabel=f"observed {_objective(m)}",
           title=f"Forest fit: OOB R^2 = {r2}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def goal_label(name: str, direction: str | None) -> str:
    """An objective's axis name with the way it is better, e.g. ``cost (minimize: lower is better)``."""
    way = {"maximize": "higher", "minimize": "lower"}.get(str(direction))
    return f"{name} ({direction}: {way} is better)" if way else name


def plot_pareto(table: TrialsTable, path: Path) -> Path:
    """The completed trials in the plane of the first two objectives (every pair of the first
    four with more): feasible ones, infeasible ones (they broke a constraint) and the Pareto
    front highlighted; with two objectives the front is joined in order of the first."""
    plt = pyplot()
    names = list(table.objectives)[:PARETO_PLANES]
    planes = list(combinations(names, 2))
    cols = min(3, len(planes))
    rows = -(-len(planes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.5 * rows), squeeze=False)
    done = np.asarray([s in (COMPLETED, INFEASIBLE) for s in table.status])
    bad = table.infeasible()
    front = np.asarray(front_rows(table), dtype=int)
    broken = sorted({c for j in table.judged for c in ((j or {}).get("violated") or ())})
    values = {n: np.asarray([objective_value(table, i, n) for i in range(len(table))]) for n in names}
    for ax, (a, b) in zip(axes.flat, planes):
        x, y = values[a], values[b]
        seen = done & np.isfinite(x) & np.isfinite(y)
        ok, no = seen & ~bad, seen & bad
        ax.scatter(x[ok], y[ok], s=18, color="C0", alpha=0.6, label=f"feasible ({ok.sum()})")
        if no.any():
            ax.scatter(x[no], y[no], s=22, marker="x", color="0.5", label=f"infeasible ({no.sum()}; broke {', '.join(broken)})")
        if len(front):
            order = front[np.argsort(x[front], kind="stable")] if len(names) == 2 else front
            ax.plot(x[order], y[order], "o" + ("-" if len(names) == 2 else ""), color="C3", ms=7,
                    lw=1.5, mfc="none", mew=2, label=f"Pareto front ({len(front)})")
        ax.set(xlabel=goal_label(a, table.objectives[a]), ylabel=goal_label(b, table.objectives[b]))
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[len(planes):]:
        ax.axis("off")
    more = f" (first {PARETO_PLANES} of {len(table.objectives)})" if len(table.objectives) > len(names) else ""
    fig.suptitle(f"Pareto front of {len(front)} of {int(done.sum())} completed trials{more}")
    return save_figure(fig, path)
