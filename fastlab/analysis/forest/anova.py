"""Importance by a second method: fANOVA and PED-ANOVA (Optuna's evaluators) beside the held-out
permutation importance, so the report can say whether the methods agree.

- **fANOVA** (Hutter et al. 2014) splits the variance of a forest's prediction over the swept
  space into a main term per parameter and pair terms: a pair's term is the variance of its
  2-D marginal less the two main terms, the part of the objective that only the two together
  explain (the ratio x head rate pair above all). Optuna's fANOVA integrates over a
  parameter's raw range; a rate sampled on a log scale would then put 90% of the volume in its
  top decade, so fANOVA reads the forest's own columns (log10 where the forest uses log10).
- **PED-ANOVA** (Watanabe et al. 2023) asks which parameters set the top 10% of trials apart
  from all of them (how far the top trials' density of a parameter departs from everyone's);
  it reads the parameters in their own units, log-scaled as sampled, and a conditional one where
  it was swept (Optuna's conditional PED-ANOVA).

Both read the trials the forest read (:class:`~fastlab.analysis.forest.encode.Encoded`: its
rows, the response with diverged trials scored worst, the direction), built into an in-memory
Optuna study. fANOVA, like Optuna's evaluator, needs a parameter in every trial: a conditional
one has no fANOVA term. Optuna's public fANOVA gives main terms only; the pair terms come from
its private trees, through :func:`fanova_pairs` alone, which checks what it relies on and says
why when it cannot (the main terms stand). Optuna is an extra (``fastlab[optuna]``): without
it :func:`second_opinions` returns None and the reason.
"""

from __future__ import annotations

import itertools
import math
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from fastlab.analysis.forest.encode import ABSENT_LABEL, Encoded, Feature

# fANOVA's forest: its terms settle by a few dozen trees. A pair term walks each tree once per
# pair of split cells of the two parameters, so the trees stay shallow: over 320 trials two pairs
# took 31 s at Optuna's default depth (64) and 2 s at depth 6, with main terms within 0.02.
N_TREES = 32
MAX_DEPTH = 6
# fANOVA's pair terms: every pair of this many parameters with the largest main terms, plus
# the focus and its most important other parameter.
PAIR_TOP = 3
# PED-ANOVA's top quantile: which parameters set the best 10% of trials apart.
TARGET_QUANTILE = 0.1
# Optuna's advice: PED-ANOVA is steady with at least this many trials in the top quantile.
MIN_TOP = 5
MISSING = "importance by fANOVA and PED-ANOVA needs optuna: pip install 'fastlab[optuna]'"
METHODS = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}


def second_opinions(encoded: Encoded, direction: str, importance: dict[str, float], seed: int = 0,
                    focus: str | None = None, other: str | None = None,
                    n_trees: int = N_TREES, max_depth: int = MAX_DEPTH
                    ) -> tuple[dict[str, Any] | None, str]:
    """fANOVA's main and pair terms, PED-ANOVA's top-10% importance, and how both agree with the
    permutation importance.

    Parameters
    ----------
    encoded : the forest's design matrix (:func:`~fastlab.analysis.forest.encode.encode`).
    direction : ``maximize`` or ``minimize``.
    importance : ``{name: held-out permutation importance}`` (``MetaAnalysis.importance_``).
    seed : fANOVA's forest.
    focus, other : a pair whose fANOVA pair term is computed whatever the main terms; ``other``
        None: the focus's most important other parameter (by ``importance``).
    n_trees, max_depth : of fANOVA's forest.

    Returns
    -------
    result : None when optuna is missing, else a dict (each mapping largest first):
        ``fanova`` {name: share of the variance it explains alone}; ``fanova_pairs``
        {"a x b": share of the pair beyond both main terms}, or None; ``fanova_pairs_note``: why
        None, else ""; ``ped_anova`` {name: value}, or None; ``notes`` [lines for the report];
        ``agreement`` (:func:`agreement`); ``text`` (:func:`agreement_text`) and ``pair_text``
        (:func:`pair_text`), one line each.
    why : the line naming the extra to install when optuna is missing, else "".
    """
    try:
        import optuna
    except ImportError:
        return None, MISSING
    notes: list[str] = []
    whole = [f for f in encoded.features if f.name not in encoded.active]
    if len(whole) < len(encoded.features):
        notes.append("fANOVA needs a parameter in every trial: no fANOVA term for the conditional "
                     + ", ".join(f"`{n}`" for n in encoded.active))
    with _quiet(optuna):
        fanova, pairs, pairs_note = _fanova(optuna, encoded, direction, whole, importance, focus,
                                            other, n_trees, max_depth, seed)
        ped = _ped_anova(optuna, encoded, direction, notes)
    out = {"fanova": _ordered(fanova), "fanova_pairs": None if pairs is None else _ordered(pairs),
           "fanova_pairs_note": pairs_note, "ped_anova": None if ped is None else _ordered(ped),
           "notes": notes}
    out["agreement"] = agreement(importance, {"fanova": fanova, "ped_anova": ped})
    out["text"] = agreement_text(out["agreement"])
    out["pair_text"] = pair_text(out)
    return out, ""


def fanova_pairs(evaluator: Any, main: dict[str, float],
                 wanted: list[tuple[str, str]]) -> tuple[dict[str, float] | None, str]:
    """fANOVA's pair terms from an evaluator that has evaluated ``main`` (its public terms):
    ``({"a x b": share}, "")``, or ``(None, why)`` when Optuna's private trees are not what this
    relies on.

    The one use of Optuna's private fANOVA API (``FanovaImportanceEvaluator._evaluator``, a
    ``_Fanova`` whose ``_trees`` each have ``variance`` and ``get_marginal_variance(columns)``,
    and ``_column_to_encoded_columns``). The check: every piece exists, there is a column group
    per parameter, and the main terms rebuilt from those trees, with the parameters in name order
    (the order Optuna's evaluator gives them), equal the public ones. A pair's term is, per tree,
    the variance of the pair's 2-D marginal less both main variances, over the tree's variance,
    averaged over trees as Optuna averages the main terms.
    """
    names = sorted(main)
    try:
        fanova = evaluator._evaluator
        trees, groups = list(fanova._trees), list(fanova._column_to_encoded_columns)
        if len(groups) != len(names):
            raise ValueError(f"{len(groups)} column groups for {len(names)} parameters")
        total = np.asarray([t.variance for t in trees], dtype=float)
        used = total > 0
        trees, total = [t for t, u in zip(trees, used, strict=True) if u], total[used]
        if not trees:
            raise ValueError("no tree has variance")
        cols = dict(zip(names, (np.asarray(g) for g in groups), strict=True))
        marginal = {n: np.asarray([max(t.get_marginal_variance(cols[n]), 0.0) for t in trees])
                    for n in names}
        for n in names:
            if not math.isclose(float(np.mean(marginal[n] / total)), main[n], rel_tol=1e-6, abs_tol=1e-9):
                raise ValueError(f"the main term of {n} rebuilt from the trees is not Optuna's")
        out = {}
        for a, b in wanted:
            both = np.asarray([max(t.get_marginal_variance(np.concatenate([cols[a], cols[b]])), 0.0)
                               for t in trees])
            out[f"{a} x {b}"] = float(np.mean(np.clip(both - marginal[a] - marginal[b], 0.0, None) / total))
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as e:
        return None, (f"fANOVA pair terms left out: Optuna's fANOVA internals are not what fastlab "
                      f"reads ({type(e).__name__}: {e}); the main terms are Optuna's public ones")
    return out, ""


def agreement(importance: dict[str, float], methods: dict[str, dict[str, float] | None]) -> dict[str, Any]:
    """How each second method agrees with the permutation importance: ``{method: {"top",
    "same_top", "kendall_tau"}}`` (tau over the parameters both rate; None with fewer than two,
    or when a method rates them all alike), and ``"permutation_top"``."""
    top = max(importance, key=importance.get) if importance else None
    out: dict[str, Any] = {"permutation_top": top}
    for method, scores in methods.items():
        if not scores:
            out[method] = None
            continue
        common = [n for n in importance if n in scores]
        tau = None
        if len(common) >= 2:
            t = kendalltau([importance[n] for n in common], [scores[n] for n in common]).statistic
            tau = None if not np.isfinite(t) else float(t)
        best = max(scores, key=scores.get)
        out[method] = {"top": best, "same_top": best == top, "kendall_tau": tau}
    return out


def agreement_text(agree: dict[str, Any]) -> str:
    """One line: whether the methods name the same parameter first, and their rank agreement."""
    top = agree["permutation_top"]
    rated = {m: a for m, a in agree.items() if m in METHODS and a}
    if top is None or not rated:
        return "no second method could rate the parameters"
    taus = "; ".join(f"{METHODS[m]} {a['kendall_tau']:.2f}" for m, a in rated.items()
                     if a["kendall_tau"] is not None)
    ranks = f" (rank agreement with permutation, Kendall's tau: {taus})" if taus else ""
    if all(a["same_top"] for a in rated.values()):
        who = "all three methods" if len(rated) == 2 else f"permutation and {METHODS[next(iter(rated))]}"
        return f"{who.capitalize()} rank `{top}` first{ranks}"
    others = ", ".join(f"{METHODS[m]} `{a['top']}`" for m, a in rated.items())
    return f"The methods disagree on what matters most: permutation `{top}`, {others}{ranks}"


def pair_text(out: dict[str, Any]) -> str:
    """One line on fANOVA's largest pair term beside its two main terms, or why there is none."""
    pairs = out["fanova_pairs"]
    if not pairs:
        return out["fanova_pairs_note"]
    key = next(iter(pairs))
    a, b = key.split(" x ")
    main = out["fanova"]
    return (f"fANOVA's largest pair term: `{a}` x `{b}` explains {pairs[key]:.0%} of the variance "
            f"beyond their main terms ({main[a]:.0%} and {main[b]:.0%})")


# ------------------------------------------------------------------------------------ helpers

def _fanova(optuna, encoded: Encoded, direction: str, whole: list[Feature],
            importance: dict[str, float], focus: str | None, other: str | None, n_trees: int,
            max_depth: int, seed: int) -> tuple[dict[str, float], dict[str, float] | None, str]:
    """fANOVA's main terms over the parameters every trial has (``whole``), its pair terms (or
    None) and why there are none."""
    if not whole:
        return {}, None, "fANOVA pair terms left out: no parameter is in every trial"
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=n_trees, max_depth=max_depth,
                                                            seed=seed)
    try:
        main = evaluator.evaluate(_study(optuna, encoded, direction, whole, columns=True),
                                  params=[f.name for f in whole])
    except RuntimeError as e:  # every tree of its forest is flat: the trials all scored alike
        return {}, None, f"fANOVA left out: {e}"
    wanted = _pairs(sorted(main, key=main.get, reverse=True)[:PAIR_TOP],
                    _focus_pair(encoded, importance, focus, other), encoded.names)
    if not wanted:
        return main, None, "fANOVA pair terms left out: only one parameter is in every trial"
    pairs, why = fanova_pairs(evaluator, main, wanted)
    return main, pairs, why


@contextmanager
def _quiet(optuna):
    """Optuna's logging and warnings silenced (its verbosity restored after): the report says
    what matters of them (a thin top quantile, a left-out parameter)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _ped_anova(optuna, encoded: Encoded, direction: str, notes: list[str]) -> dict[str, float] | None:
    """PED-ANOVA's importance of reaching the top ``TARGET_QUANTILE`` of trials (None, with a
    note, where this Optuna has no PED-ANOVA)."""
    evaluator_class = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    if evaluator_class is None:
        notes.append(f"PED-ANOVA needs optuna 3.6 or newer (this is {optuna.__version__}): "
                     "pip install -U 'fastlab[optuna]'")
        return None
    n_top = math.ceil(TARGET_QUANTILE * len(encoded.y))
    if n_top < MIN_TOP:
        notes.append(f"PED-ANOVA's top {TARGET_QUANTILE:.0%} holds only {n_top} trial(s): read it "
                     f"loosely ({MIN_TOP} or more make it steady)")
    study = _study(optuna, encoded, direction, encoded.features, columns=False)
    return evaluator_class(target_quantile=TARGET_QUANTILE).evaluate(study)


def _study(optuna, encoded: Encoded, direction: str, features, columns: bool):
    """An in-memory Optuna study of the encoded trials over ``features``: in the forest's columns
    (``columns=True``), else in the parameters' own units; a conditional parameter is set only on
    the trials that swept it."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction=direction,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    idx = [encoded.index(f.name) for f in features]
    dists, values = {}, {}
    for f, j in zip(features, idx, strict=True):
        has = encoded.active_rows(f.name)
        dists[f.name], values[f.name] = _distribution(optuna.distributions, f, encoded.X[has, j], columns)
        values[f.name] = iter(values[f.name])
    trials = []
    for i, y in enumerate(encoded.y):
        params = {f.name: next(values[f.name]) for f in features if encoded.active_rows(f.name)[i]}
        trials.append(optuna.trial.create_trial(params=params, value=float(y),
                                                distributions={n: dists[n] for n in params}))
    study.add_trials(trials)
    return study


def _distribution(d, f: Feature, x: np.ndarray, columns: bool):
    """One parameter's Optuna distribution and its values (as plain Python) from its column ``x``
    over the trials that have it."""
    if not f.numeric:
        labels = [c for c in f.categories if c != ABSENT_LABEL]
        return d.CategoricalDistribution(labels), [str(v) for v in f.from_x(x)]
    if columns:
        return d.FloatDistribution(float(x.min()), float(x.max())), [float(v) for v in x]
    if f.integer:
        lo, hi = int(round(f.low)), int(round(f.high))
        return (d.IntDistribution(lo, hi, log=f.log),
                [min(max(int(v), lo), hi) for v in f.from_x(x)])
    # 10**log10(v) can land an ulp outside the range the sweep sampled
    return d.FloatDistribution(f.low, f.high, log=f.log), [float(np.clip(v, f.low, f.high)) for v in f.from_x(x)]


def _focus_pair(encoded: Encoded, importance: dict[str, float], focus: str | None,
                other: str | None) -> tuple[str, str] | None:
    if focus is None or focus in encoded.active or focus not in encoded.names:
        return None
    if other is None:
        others = [n for n in encoded.names if n != focus and n not in encoded.active]
        other = max(others, key=lambda n: importance.get(n, -math.inf)) if others else None
    if other is None or other in encoded.active or other not in encoded.names:
        return None
    return focus, other


def _pairs(top: list[str], focus_pair: tuple[str, str] | None, order: list[str]) -> list[tuple[str, str]]:
    """Every pair of ``top`` and the focus pair, each in the design matrix's column order."""
    pairs = list(itertools.combinations(top, 2)) + ([focus_pair] if focus_pair else [])
    out = []
    for a, b in pairs:
        pair = (a, b) if order.index(a) < order.index(b) else (b, a)
        if pair not in out:
            out.append(pair)
    return out


def _ordered(scores: dict[str, float]) -> dict[str, float]:
    return {k: float(scores[k]) for k in sorted(scores, key=scores.get, reverse=True)}
