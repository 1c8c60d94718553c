"""Importance by a second method (fastlab/analysis/forest/anova.py): fANOVA's main and pair terms
and PED-ANOVA's top-10% importance, through Optuna's evaluators, over the trials the forest read;
on planted tables whose answer is known."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.importance import FanovaImportanceEvaluator

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.anova import MISSING, second_opinions
from fastlab.analysis.forest.encode import encode
from fastlab.analysis.sources.table import TrialsTable
from tests.analysis.test_conditional_keys import FAST, optimisers

RATIO, LR, WD, OPT = "schedule.lr_ratio", "lr_max", "wd", "opt"


def planted(effect, n: int = 160, seed: int = 0, direction: str = "maximize") -> TrialsTable:
    """Trials over the ratio (1 to 10), the head rate (1e-4 to 1e-1) and weight decay (1e-5 to
    1e-2), all sampled on a log scale, and an optimiser; ``effect(log10 ratio, log10 lr)`` is the
    objective, plus a little noise. Weight decay and the optimiser do nothing."""
    rng = np.random.default_rng(seed)
    r, lr = rng.uniform(0, 1, n), rng.uniform(-4, -1, n)
    wd, opt = rng.uniform(-5, -2, n), rng.choice(["adamw", "sgd"], n)
    params = tuple({RATIO: float(10 ** a), LR: float(10 ** b), WD: float(10 ** c), OPT: str(o)}
                   for a, b, c, o in zip(r, lr, wd, opt, strict=True))
    values = effect(r, lr) + 0.002 * rng.normal(size=n)
    return TrialsTable(names=(RATIO, LR, WD, OPT), params=params, values=values,
                       status=("completed",) * n, numbers=tuple(range(n)), objective="loss",
                       direction=direction, log_scale=frozenset({RATIO, LR, WD}), scales_known=True,
                       path=Path("planted"))


def opinions(table: TrialsTable, **kw) -> tuple[MetaAnalysis, dict]:
    m = MetaAnalysis(**FAST).fit(table)
    result, why = second_opinions(m.encoded_, m.direction_, m.importance_, seed=0, focus=m.focus_, **kw)
    assert why == "" and result is not None
    return m, result


def test_one_parameter_decides_and_every_method_says_so() -> None:
    """A loss set by the head rate alone (best at 10^-2.5; a third of the trials diverged at the
    highest rates, scored as the worst loss): permutation, fANOVA and PED-ANOVA all rank it first."""
    table = planted(lambda r, lr: 0.3 + 0.2 * (lr + 2.5) ** 2, direction="minimize")
    diverged = tuple("diverged" if p[LR] > 0.03 else s for p, s in zip(table.params, table.status, strict=True))
    table = replace(table, status=diverged)
    verbosity = optuna.logging.get_verbosity()
    m, out = opinions(table)
    assert optuna.logging.get_verbosity() == verbosity  # Optuna's logging restored
    # Measured (planted seed 0, second_opinions seed 0; no torch, seeded forests: the same on any
    # thread count): 34 trials scored worst (bar 10), fANOVA gives the head rate 0.998 (bar 0.5).
    assert m.encoded_.policy["scored_worst"] > 10
    assert max(m.importance_, key=m.importance_.get) == LR
    assert next(iter(out["fanova"])) == LR and out["fanova"][LR] > 0.5
    assert all(out["fanova"][n] < 0.1 for n in (RATIO, WD, OPT))
    assert next(iter(out["ped_anova"])) == LR
    agree = out["agreement"]
    assert agree["permutation_top"] == LR
    assert agree["fanova"]["same_top"] and agree["ped_anova"]["same_top"]
    assert out["text"].startswith(f"All three methods rank `{LR}` first")
    # the focus (the ratio) and its most important other parameter (the head rate) get a pair term
    assert f"{RATIO} x {LR}" in out["fanova_pairs"] and out["fanova_pairs_note"] == ""
    # seeded: the same result again
    again, _ = second_opinions(m.encoded_, m.direction_, m.importance_, seed=0, focus=m.focus_)
    assert again == out


def test_a_pure_interaction_is_fanovas_largest_pair_term() -> None:
    """The ratio's effect flips sign with the head rate and neither matters alone: fANOVA puts the
    variance in the ratio x head rate pair term, not in either main term."""
    _, out = opinions(planted(lambda r, lr: 0.8 + 0.1 * (r - 0.5) * (lr + 2.5)))
    pairs = out["fanova_pairs"]
    assert set(pairs) >= {f"{RATIO} x {LR}", f"{LR} x {WD}", f"{RATIO} x {WD}"}
    assert max(pairs, key=pairs.get) == f"{RATIO} x {LR}"
    # Measured (planted seed 0, second_opinions seed 0; threads do not matter): the pair term
    # 0.738 (bar 0.3), the larger main term 0.100 (bar: under half the pair term).
    assert pairs[f"{RATIO} x {LR}"] > 0.3
    assert pairs[f"{RATIO} x {LR}"] > 2 * max(out["fanova"][RATIO], out["fanova"][LR])
    assert out["pair_text"].startswith(f"fANOVA's largest pair term: `{RATIO}` x `{LR}` explains")


@pytest.mark.parametrize("change", ["trees renamed", "columns reordered"])
def test_fanovas_private_trees_changed_leave_the_main_terms(monkeypatch, change: str) -> None:
    """Pair terms read Optuna's private fANOVA trees; when those are not what fastlab relies on
    (a renamed attribute; parameters' columns in another order than their names'), the pair
    terms are None with the reason and the main terms are Optuna's public ones."""
    m = MetaAnalysis(**FAST).fit(planted(lambda r, lr: 0.5 + 0.1 * lr + 0.05 * r, n=80))
    args = (m.encoded_, m.direction_, m.importance_)
    public, _ = second_opinions(*args, focus=RATIO)
    evaluate = FanovaImportanceEvaluator.evaluate

    def changed(self, *a, **kw):  # what Optuna's public evaluator says is left as it is
        out = evaluate(self, *a, **kw)
        if change == "trees renamed":
            self._evaluator = SimpleNamespace(_forest_trees=self._evaluator._trees)
        else:
            self._evaluator._column_to_encoded_columns.reverse()
        return out

    monkeypatch.setattr(FanovaImportanceEvaluator, "evaluate", changed)
    out, _ = second_opinions(*args, focus=RATIO)
    assert out["fanova_pairs"] is None
    assert out["fanova_pairs_note"].startswith("fANOVA pair terms left out: Optuna's fANOVA internals")
    assert out["fanova"] == public["fanova"] and out["ped_anova"] == public["ped_anova"]
    assert public["fanova_pairs"] is not None


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_ped_anova_asks_what_sets_the_best_trials_apart(direction: str) -> None:
    """The best trials are set by the head rate, the worst by a weight decay above 10^-2.3: PED-ANOVA,
    which reads the top 10% by the sweep's direction, ranks the head rate first either way."""
    base = planted(lambda r, lr: 0.3 + 0.2 * (lr + 2.5) ** 2)
    loss = base.values + np.asarray([1.0 if np.log10(p[WD]) > -2.3 else 0.0 for p in base.params])
    table = replace(base, values=loss if direction == "minimize" else -loss, direction=direction)
    enc = encode(table, direction)
    out, _ = second_opinions(enc, direction, {}, seed=0)
    assert next(iter(out["ped_anova"])) == LR
    # Measured (planted seed 0, second_opinions seed 0; threads do not matter): head rate 0.0547
    # against weight decay 0.0003 in either direction (bar: 3 times; measured about 180).
    assert out["ped_anova"][LR] > 3 * out["ped_anova"][WD]


def test_a_conditional_parameter_has_a_ped_anova_term_only() -> None:
    """sgd's momentum decides sgd's trials and is absent from adamw's: PED-ANOVA rates it where it
    was swept; fANOVA, which needs a parameter in every trial, leaves it out and says so."""
    m = MetaAnalysis(focus="mom", **FAST).fit(optimisers())
    out, _ = second_opinions(m.encoded_, m.direction_, m.importance_, focus="mom")
    assert set(out["fanova"]) == {"opt", "lr"}
    assert {"mom", "wd"} <= set(out["ped_anova"])
    assert out["ped_anova"]["mom"] > out["ped_anova"]["wd"]
    assert any("no fANOVA term for the conditional `mom`, `wd`" in n for n in out["notes"])


def test_without_optuna_it_says_which_extra_to_install(monkeypatch) -> None:
    m = MetaAnalysis(**FAST).fit(planted(lambda r, lr: 0.5 + 0.1 * lr))
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    result, why = second_opinions(m.encoded_, m.direction_, m.importance_)
    assert result is None and why == MISSING
    assert "pip install 'fastlab[optuna]'" in why


def test_the_report_shows_the_second_methods_beside_permutation() -> None:
    from fastlab.analysis.forest.analysis import MetaAnalysis
    from fastlab.analysis.report.markdown import markdown
    from tests.analysis.test_conditional_keys import FAST, optimisers

    m = MetaAnalysis(focus="mom", **{**FAST, "anova": True}).fit(optimisers())
    s = m.summary()
    assert isinstance(s["importance_methods"]["fanova"], dict) and "mom" in s["importance_methods"]["ped_anova"]
    assert "### By a second method" in markdown(m, s)
    assert MetaAnalysis(**FAST).fit(optimisers()).summary()["importance_methods"] is None  # anova=False
