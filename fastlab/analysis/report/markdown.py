"""The report dir: ``summary.json``, ``report.md`` (readable on its own, figures inline) and PNGs.

Every file is written under a temporary name and renamed into place, so a reader never sees half
a report; figures go first, so the Markdown never points at a missing one.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.verdict import (
    SCALE_TEXT,
    fmt,
    margin_comparison,
    margin_text,
    rule_text,
)
from fastlab.analysis.report.figures import (
    IMPORTANCE_FILE,
    OOB_FILE,
    PARETO_FILE,
    pd2d_file,
    pd_file,
    plot_importance,
    plot_oob,
    plot_pareto,
    plot_pd,
    plot_pd2d,
)
from fastlab.analysis.sources.objectives import front_rows, objective_value
from fastlab.rundir import atomic_write_text, write_json


def write_figures(m: MetaAnalysis, out: Path) -> list[Path]:
    """Every PNG of the report, into ``out``."""
    paths = [plot_importance(m, out / IMPORTANCE_FILE), plot_oob(m, out / OOB_FILE)]
    paths += [plot_pd(m, name, out / pd_file(name)) for name in m.encoded_.names]
    if m.pd2d_ is not None:
        paths.append(plot_pd2d(m, out / pd2d_file(m.pd2d_["a"], m.pd2d_["b"])))
    if len(m.table_.objectives) > 1:
        paths.append(plot_pareto(m.table_, out / PARETO_FILE))
    return paths


def write_report(m: MetaAnalysis, out: str | Path,
                 confirmation: dict[str, Any] | None = None,
                 stability: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the report of a fitted analysis into ``out``; returns the summary written.

    ``confirmation`` (from :mod:`fastlab.analysis.study.confirm`) and ``stability`` (from
    :mod:`fastlab.analysis.study.stability`) add their sections and summary keys.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_figures(m, out)
    summary = m.summary()
    if confirmation is not None:
        summary["confirmation"] = confirmation
    if stability is not None:
        summary["stability"] = stability
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", markdown(m, summary))
    return summary


def importance_methods_section(permutation: dict[str, float], im: dict[str, Any]) -> list[str]:
    """What matters by a second method: fANOVA and PED-ANOVA (Optuna's evaluators) beside the
    held-out permutation importance, the largest fANOVA pair term and whether the methods agree."""
    if "skipped" in im:
        return [f"Importance by a second method: {im['skipped']}.", ""]
    fanova, ped = im["fanova"], im["ped_anova"] or {}
    rows = [[f"`{k}`", fmt(v), fmt(fanova[k]) if k in fanova else "-", fmt(ped[k]) if k in ped else "-"]
            for k, v in permutation.items()]
    return ["### By a second method", "",
            "fANOVA: the share of the variance of a forest's prediction over the swept space that a "
            "parameter explains alone. PED-ANOVA: how far the top 10% of trials depart from all of "
            "them in a parameter's values. Both are Optuna's evaluators, over the trials above.", "",
            _table(["parameter", "permutation", "fANOVA", "PED-ANOVA"], rows), "",
            f"- {im['pair_text']}.", f"- {im['text']}.", *[f"- {n}." for n in im["notes"]], ""]


def _replicate_lines(r: dict | None) -> list[str]:
    """A sweep with ``hydra.sweeper.repeats``: what a row is, and a single run's noise."""
    if not r:
        return []
    noise = f"; a single run's noise (their pooled sd around their configuration's mean) is {fmt(r['sd'])}" \
        if r.get("sd") is not None else ""
    return [f"- Each of the {r['configurations']} configurations ran {r['repeats']} seeds "
            f"(`hydra.sweeper.repeats`): a trial here is a configuration, its value the mean of its runs{noise}."]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _value(v: Any) -> str:
    return fmt(v) if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def markdown(m: MetaAnalysis, s: dict[str, Any]) -> str:
    """``report.md``: conclusion first, then the evidence, then the method."""
    obj, rec = s["objective"] or "objective", s["recommendation"]
    pct = f"{m.level:.0%}"
    parts = [f"# Meta-analysis of `{s['source']['path']}`", ""]
    parts += [conclusion(s), ""]
    parts += [f"> **Warning:** {w}." for w in s["warnings"]]
    if s["warnings"]:
        parts.append("")

    counts = ", ".join(f"{v} {k}" for k, v in s["trials"].items() if v)
    parts += ["## The trials", "",
              f"- Source: `{s['source']['path']}` (read from {s['source']['format']}).",
              f"- Objective: **{obj}**, to {s['direction']}.",
              *_objectives_lines(m, s),
              f"- {s['n_trials']} trials analysed ({counts}). Policy: {s['policy']['text']}.",
              *_replicate_lines(s.get("replicates")),
              ""]
    rows = []
    for name, f in s["features"].items():
        span = (", ".join(_value(v) for v in f["levels"]) if "levels" in f
                else f"{fmt(f['range'][0])} to {fmt(f['range'][1])}" if "range" in f
                else ", ".join(f["categories"]))
        why = f" ({f['why']})" if f["why"] not in ("", "linear", "categorical") else ""
        rows.append([f"`{name}`", f["kind"], f["scale"] + why, span])
    parts += [_table(["parameter", "kind", "scale", "values"], rows), ""]
    if s["derived"]:
        parts += ["Derived (`--derive`): " + "; ".join(f"`{k}` = `{v}`" for k, v in
                                                      s["derived"].items()) + ".", ""]
    if s["basis"]["replaced"]:
        parts += ["The forest's basis has no column that is a function of others, so partial "
                  "dependence never sets a derived column apart from what it is computed from: "
                  + "; ".join(f"`{d}` replaces `{r}`" if d != r else
                              f"`{d}` is left out (a function of the focus alone)"
                              for d, r in s["basis"]["replaced"].items()) + ".", ""]
    if s["skipped"]:
        parts += ["Not used as features: " + "; ".join(f"`{k}` ({v})" for k, v in
                                                        s["skipped"].items()) + ".", ""]

    r2 = s["oob_r2"]
    parts += ["## How well the forest explains the trials", "",
              f"A random forest of {m.n_estimators} trees predicts each trial from the trees that "
              f"did not see it: out-of-bag R^2 = **{fmt(r2)}** "
              f"({'it explains ' + format(r2, '.0%') + ' of the spread' if r2 is not None else 'undefined'}). "
              "Points near the diagonal are trials it predicts well.", "",
              f"Trust in this fit: **{s['trust']['grade']}**, on the scale {SCALE_TEXT}."
              + (f" {s['trust']['advice'][0].upper()}{s['trust']['advice'][1:]}."
                 if s["trust"]["advice"] else ""), "",
              f"![observed vs out-of-bag prediction]({OOB_FILE})", ""]

    conditional = {k: f for k, f in s["features"].items() if f.get("condition")}
    rows = [[str(i + 1), f"`{k}`" + (" (conditional)" if k in conditional else ""), fmt(v),
             fmt(s["importance_std"][k])] for i, (k, v) in enumerate(s["importance"].items())]
    parts += ["## What matters", "",
              "Held-out permutation importance: how much the forest's squared error on trials it "
              "did not train on rises when a parameter's values are shuffled among them, divided "
              f"by the variance of {obj} ({m.n_splits} folds x {m.n_repeats} shuffles; spread = "
              "their standard deviation). About 0 means the parameter does not matter.", "",
              _table(["rank", "parameter", "importance", "spread"], rows), "",
              *[f"- `{k}` is conditional: swept where `{f['condition']}`, in {f['active']} of the "
                f"{s['n_trials']} trials; its importance shuffles it among those trials only, and its partial "
                "dependence averages over them." for k, f in conditional.items()],
              *([""] if conditional else []),
              f"![importance]({IMPORTANCE_FILE})", ""]
    if s.get("importance_methods") is not None:
        parts += importance_methods_section(s["importance"], s["importance_methods"])

    if rec is not None:
        p = rec["param"]
        rows = [["best value", fmt(rec["best"])],
                [f"{pct} interval", f"{fmt(rec['interval'][0])} to {fmt(rec['interval'][1])}"],
                [f"predicted {obj} at the best", fmt(rec["predicted_best"])]]
        for b in rec["baselines"]:  # the neutral value, or both ends of the range
            rows.append([f"gain over {b['what']} {fmt(b['value'])}",
                         f"{fmt(b['gain'], True)} ({pct}: {fmt(b['gain_interval'][0], True)} "
                         f"to {fmt(b['gain_interval'][1], True)})"])
        if rec["reference"] is not None:
            rows.append([f"reference {fmt(rec['reference'])}", rec["reference_text"]])
        rows.append(["margin", fmt(rec["margin"])])
        rows.append(["clear optimum", rec["clear_text"]])
        margin = margin_text(rec["margin"], rec["margin_source"], obj)
        versus = margin_comparison(rec["baselines"], rec["margin"], m.level)
        judged = ([f"Read in the basis {rec['judged_in']}: the lowest group's rate carries "
                   f"the effect (below), so `{p}` has no effect of its own beyond the head rate "
                   "and the lowest rate it sets. The table, non-inferiority and tunability are "
                   "of that basis; the figure is the sweep's own basis, averaged over head rates.",
                   ""] if rec.get("judged_in") else [])
        parts += [f"## The recommendation for `{p}`", "", rec["verdict"], "", *judged,
                  f"{margin[0].upper()}{margin[1:]}; {versus}.",
                  "", _table(["", ""], rows), "",
                  f"The curve is the forest's partial dependence (its average prediction as `{p}` "
                  f"moves, every other parameter kept at the trials' values); the band and the "
                  f"interval come from {m.n_boot} refits on trials resampled with replacement: "
                  f"the interval holds the central {pct} of the refits' best values. "
                  + rule_text(rec["baselines"], rec["margin"]), "",
                  f"![partial dependence of {p}]({pd_file(p)})", ""]
        parts += comparison_section(s, obj, pct)
    if s.get("mechanism") is not None:
        parts += mechanism_section(s["mechanism"], obj)

    c = s["conditional_optimum"]
    if c is not None:
        a, b = c["param"], c["given"]
        rows = [[_value(r["b"]), fmt(r["best_a"]), fmt(r["predicted"])] for r in c["rows"]]
        parts += [f"## `{a}` given `{b}`: the conditional optimum", "",
                  f"`{b}` is the most important other parameter. The map is the forest's 2-D "
                  f"partial dependence; the white line is the best `{a}` for each value of `{b}`. "
                  f"A line that bends means the best `{a}` depends on `{b}`. These are the "
                  "forest's point estimates, without intervals"
                  + ("" if rec is not None and rec["clear_optimum"] else
                     ", and the optimum above is not clear: read them as a sketch") + ".", "",
                  _table([f"`{b}`", f"best `{a}`", f"predicted {obj}"], rows), "",
                  f"![2-D partial dependence]({pd2d_file(a, b)})", ""]

    others = [n for n in s["importance"] if rec is None or n != rec["param"]]
    if others:
        parts += ["## Partial dependence of the other parameters", ""]
        for name in others:
            pd = m.pd_[name]
            i = int((m.sign_ * pd["mean"]).argmax())
            best = pd["values"][i]
            rng = float(pd["mean"].max() - pd["mean"].min())
            parts += [f"`{name}`: best on its own at {_value(best)}; the curve spans "
                      f"{fmt(rng)} {obj}.", "", f"![partial dependence of {name}]({pd_file(name)})",
                      ""]

    if s.get("confirmation") is not None:
        parts += confirmation_section(s["confirmation"], obj)
    if s.get("stability") is not None:
        parts += stability_section(s["stability"])
    if s.get("pareto") is not None:
        parts += pareto_section(m, s)

    st = s["settings"]
    parts += ["## Method", "",
              f"- scikit-learn `RandomForestRegressor(n_estimators={st['n_estimators']}, "
              f"min_samples_leaf<={st['min_samples_leaf']}, max_features=1.0, oob_score=True, "
              f"random_state={st['random_state']})` on one column per swept parameter (log10 for "
              "parameters sampled on a log scale or spanning more than a decade; integer codes "
              "for categorical ones).",
              f"- Bootstrap: {st['n_boot']} refits ({st['n_boot_estimators']} trees each) on "
              f"resampled trials; intervals are central {pct} percentiles.",
              f"- Importance: `sklearn.inspection.permutation_importance` on held-out folds "
              f"({st['importance_folds']} folds x {st['importance_repeats']} repeats).",
              f"- Partial dependence: `sklearn.inspection.partial_dependence` on a "
              f"{st['grid_size']}-point grid over the observed range.",
              f"- Failed and diverged trials: {s['policy']['text']} (`--diverged "
              f"{st['diverged']}`).",
              f"- Pruned trials: {s['pruned']['text']} (`--pruned {st['pruned']}`).", "",
              "Reproduce: `fastlab-meta " + s["source"]["path"] + _cli_flags(m)
              + (" --confirm" if s.get("confirmation") is not None else "") + "`.", ""]
    return "\n".join(parts)


def comparison_section(s: dict[str, Any], obj: str, pct: str) -> list[str]:
    """Non-inferiority, tunability and the ratio as users meet it (spread, lowest rate)."""
    ni, tu, rec = s.get("noninferior"), s.get("tunability"), s["recommendation"]
    out: list[str] = []
    if ni is not None:
        p = rec["param"]
        at = (f"at the tuned `{ni['tuned']}` = {_value(ni['at'])} (where the 2-D partial "
              f"dependence is best)" if ni["tuned"] is not None else "on its own curve")
        rows = []
        for a, t in zip(ni["arms"], tu["arms"]):
            tuned = (f"{fmt(t['gain'], True)} ({pct}: {fmt(t['interval'][0], True)} to "
                     f"{fmt(t['interval'][1], True)})"
                     + (f", its own best `{ni['tuned']}` = {_value(t['at'])}"
                        if ni["tuned"] is not None else ""))
            rows.append([fmt(a["value"]), f"{fmt(a['loss'], True)} ({pct}: "
                         f"{fmt(a['interval'][0], True)} to {fmt(a['interval'][1], True)})",
                         a["text"], tuned])
        out += [f"### Non-inferiority and tunability of `{p}`", "",
                f"The best `{p}` {at} is {fmt(ni['best'])}. Non-inferiority: a value is within "
                f"the margin ({fmt(ni['margin'])} {obj}) when the {pct} interval of what it "
                "loses to the best there lies below the margin, not within when it lies above "
                "it. Tunability (Probst, Boulesteix and Bischl 2019): what tuning "
                f"`{p}` buys over fixing it at the value"
                + (f", `{ni['tuned']}` tuned for each" if ni["tuned"] is not None else "")
                + ". Both read the same points in every bootstrap refit.", "",
                _table([f"`{p}`", "loses to the best (same head rate)", "non-inferior?",
                        "tunability: best tuned minus this value tuned"], rows), ""]
    sp, low = s.get("spread"), s.get("lowest_rate")
    if sp is not None:
        lines = [f"- {fmt(sp['ratio'])} over {g} layer groups: a spread (head rate / lowest "
                 f"rate) of {fmt(v)}"
                 + (f"; at the recommended head rate {fmt(low['head_rate'])} "
                    f"({low['head_rate_from']}) the lowest group trains at "
                    f"{fmt(low['values'][g])}" if low is not None else "") + "."
                 for g, v in sp["values"].items()]
        out += ["### The ratio as users meet it", "",
                "A ratio r over n layer groups spreads the rates by r^(n-1); published recipes "
                "are compared by this spread in the manual's study page.", "", *lines, ""]
    return out


def mechanism_section(mech: dict[str, Any], obj: str) -> list[str]:
    """Whether the ratio itself or only the lowest group's rate carries the effect."""
    low = mech.get("lowest_rate")
    best = ([f"In that basis the best lowest group's rate is {fmt(low['best'])} ({low['level']:.0%} "
             f"interval {fmt(low['interval'][0])} to {fmt(low['interval'][1])}), at a head rate "
             f"of {fmt(low['head_rate'])} with {low['groups']} layer groups.", ""]
            if low is not None else [])
    return ["### The mechanism: the ratio, or the lowest group's rate?", "",
            f"The forest is fitted twice on the same {mech['folds']} folds ({mech['repeats']} "
            "shuffles): once on (head rate, ratio, ...) and once on (head rate, lowest group's "
            "rate, ...), where lowest rate = head rate / ratio^(groups - 1). Both hold the same "
            "runs; a forest splits along its axes, so the basis whose axis the objective follows "
            f"predicts held-out trials better. The interval is a bootstrap over the trials of "
            f"the paired held-out errors of {obj}.", "",
            f"**Basis: {mech['basis']}.** {mech['text'][0].upper()}{mech['text'][1:]}", "", *best]


def _objectives_lines(m: MetaAnalysis, s: dict[str, Any]) -> list[str]:
    """The trials section's lines on a sweep of several objectives: which one is analysed, and
    what became of the infeasible trials."""
    if not s.get("objectives"):
        return []
    goals = ", ".join(f"{k} ({v or 'direction not recorded'})" for k, v in s["objectives"].items())
    how = (f"`--metric {m.table_.metric}`" if m.table_.metric is not None
           else "the first; `--metric NAME` analyses another")
    return [f"- The sweep's objectives: {goals}; this report analyses {s['objective']} ({how}).",
            f"- Constraints: {s['infeasible']['text']} (`--infeasible {m.infeasible}`)."]


def pareto_section(m: MetaAnalysis, s: dict[str, Any]) -> list[str]:
    """The sweep's Pareto front: its trials with each objective's value and their params."""
    t = m.table_
    rows = front_rows(t)
    goals = ", ".join(f"{d} {n}" for n, d in t.objectives.items())
    names = [n for n in t.names if n not in t.derived]
    table = _table(["trial", *(f"`{n}`" for n in t.objectives), *(f"`{n}`" for n in names)],
                   [[str(t.numbers[i]), *(fmt(objective_value(t, i, n)) for n in t.objectives),
                     *(_value(t.params[i][n]) if n in t.params[i] else "" for n in names)]
                    for i in rows])
    return ["## Pareto front", "",
            f"{len(rows)} trial(s) are on the front ({goals}): completed, feasible, and no other "
            "feasible trial is better on every objective; best first by "
            f"{next(iter(t.objectives))}. It is the sweep's own front (`best.yaml`'s `pareto:`).", "",
            table if rows else "No trial is on the front: none completed feasible with every objective.", "",
            f"![Pareto front]({PARETO_FILE})", ""]


def _cli_flags(m: MetaAnalysis) -> str:
    flags = ""
    if m.table_.metric is not None:
        flags += f" --metric {shlex.quote(m.table_.metric)}"
    for spec in m.derive:
        flags += f" --derive {shlex.quote(spec)}"
    if m.focus is not None:
        flags += f" --focus {m.focus}"
    if m.reference is not None:
        flags += f" --reference {m.reference:g}"
    if m.margin is not None:
        flags += f" --margin {m.margin:g}"
    if isinstance(m.neutral, int | float):
        flags += f" --neutral {m.neutral:g}"
    if m.level != 0.9:
        flags += f" --level {m.level:g}"
    if m.diverged != "worst":
        flags += f" --diverged {m.diverged}"
    if m.pruned != "drop":
        flags += f" --pruned {m.pruned}"
    if m.infeasible != "keep":
        flags += f" --infeasible {m.infeasible}"
    if not m.mechanism:
        flags += " --no-mechanism"
    return flags


def conclusion(s: dict[str, Any]) -> str:
    """Three plain lines: the fit and what matters, the finding, the confirmation."""
    r2 = s["oob_r2"]
    top = ", ".join(f"`{k}` ({fmt(v)})" for k, v in list(s["importance"].items())[:3])
    lines = [f"**Fit:** {s['n_trials']} trials; the forest explains "
             f"{'no reliable part' if r2 is None or r2 <= 0 else format(r2, '.0%')} of the "
             f"spread of {s['objective'] or 'the objective'} out of bag (OOB R^2 = {fmt(r2)}, "
             f"trust: {s['trust']['grade']}); what matters most: {top}."]
    rec, c = s["recommendation"], s["conditional_optimum"]
    finding = rec["verdict"] if rec is not None else "no numeric parameter to recommend a value for."
    if c is not None:
        first, last, top = c["rows"][0], c["rows"][-1], c["at_best"]
        sketch = "" if rec is not None and rec["clear_optimum"] else " (a sketch, no interval)"
        finding += (f" Given `{c['given']}`, the forest's best `{c['param']}`{sketch} goes from "
                    f"{fmt(first['best_a'])} "
                    f"(at {_value(first['b'])}) to {fmt(last['best_a'])} (at {_value(last['b'])}); "
                    f"where {s['objective'] or 'the objective'} peaks ({_value(top['b'])}, "
                    f"predicted {fmt(top['predicted'])}) it is {fmt(top['best_a'])}.")
    lines.append(f"**Finding:** {finding}")
    if s.get("mechanism") is not None:
        lines.append(f"**Mechanism:** {s['mechanism']['basis']}: {s['mechanism']['text']}")
    c = s.get("confirmation")
    lines.append(f"**Confirmation:** {c['verdict']}" if c is not None else
                 "**Confirmation:** not run (add --confirm for a controlled grid).")
    if s.get("stability") is not None:
        lines.append(f"**Stability:** {s['stability']['text']}")
    return "  \n".join(lines)


def stability_section(st: dict[str, Any]) -> list[str]:
    """How far the best value and the verdict move over random subsamples of the trials."""
    unit = "log10" if st["log"] else "value"
    rows = []
    for r in st["sizes"]:
        verdicts = ", ".join(f"{k} x{v}" for k, v in r["verdicts"].items()) or "none usable"
        rows.append([str(r["n"]), str(r["repeats"]), fmt(r["median"]),
                     f"{fmt(r['lo'])} to {fmt(r['hi'])}", fmt(r["spread"]), verdicts,
                     "n/a" if r["agree"] is None else f"{r['agree']:.0%}"])
    return ["## Stability", "",
            f"The analysis refitted on random subsamples of the trials ({st['repeats']} per size, "
            "without replacement, cheaper forests): how far the best "
            f"`{st['param']}` and the verdict move with the number of trials. Spread = standard "
            f"deviation of the best ({unit}) across the subsamples; the last row is all trials.", "",
            _table(["trials", "subsamples", "median best", "best from/to", f"spread ({unit})",
                    "verdicts", "agree with all"], rows), "", st["text"], ""]


def confirmation_section(c: dict[str, Any], obj: str) -> list[str]:
    """The controlled grid's table: mean and standard error per (value, learning rate) cell."""
    rows = []
    for cell in c.get("cells", []):
        se = cell.get("se")
        rows.append([fmt(cell["value"]), fmt(cell["lr_max"]), str(cell["n"]),
                     f"{fmt(cell['mean'])} ± {fmt(se) if se is not None and math.isfinite(se) else 'n/a'}"])
    return [f"## Confirmation: a controlled grid of `{c['param']}`", "",
            c.get("description", ""), "",
            _table([f"`{c['param']}`", "`schedule.lr_max`", "runs", f"{obj} (mean ± s.e.)"], rows),
            "", c.get("verdict", ""), ""]
