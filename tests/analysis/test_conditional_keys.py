"""Conditional keys (``hydra.sweeper.conditions``) in fastlab-meta: a key absent from the trials
where its condition did not hold is analysed where it was swept; no trial is dropped for lacking
it, its importance shuffles it among the trials that have it, its partial dependence averages over
them, and the report says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.report.markdown import markdown
from fastlab.analysis.sources import read_trials
from fastlab.analysis.sources.table import TrialsTable
from tests.sweep.test_hydra import run_app

FAST = {"n_estimators": 80, "n_boot_estimators": 30, "n_boot": 12, "grid_size": 25, "n_splits": 3,
        "n_repeats": 3, "anova": False}


def optimisers(n: int = 160, seed: int = 0) -> TrialsTable:
    """sgd's momentum decides its trials (best at 0.95); adamw's weight decay barely matters, and
    momentum is absent from adamw's trials, weight decay from sgd's."""
    rng = np.random.default_rng(seed)
    params, values = [], []
    for _ in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        if rng.random() < 0.5:
            mom = float(rng.uniform(0.8, 0.99))
            params.append({"opt": "sgd", "lr": lr, "mom": mom})
            values.append(0.9 - 40 * (mom - 0.95) ** 2)
        else:
            wd = float(10 ** rng.uniform(-4, -1))
            params.append({"opt": "adamw", "lr": lr, "wd": wd})
            values.append(0.8 + 0.001 * np.log10(wd))
    values = np.asarray(values) + 0.003 * rng.normal(size=n)
    return TrialsTable(names=("opt", "lr", "mom", "wd"), params=tuple(params), values=values,
                       status=("completed",) * n, numbers=tuple(range(n)), objective="accuracy",
                       direction="maximize", log_scale=frozenset({"lr", "wd"}), scales_known=True,
                       path=Path("optimisers"),
                       conditions={"mom": "opt == 'sgd'", "wd": "opt == 'adamw'"})


def test_a_conditional_key_is_analysed_where_it_was_swept() -> None:
    table = optimisers()
    m = MetaAnalysis(focus="mom", **FAST).fit(table)
    assert m.n_trials_ == len(table)  # no trial dropped for lacking mom or wd
    has = m.encoded_.active["mom"]
    assert has.sum() == sum("mom" in p for p in table.params) and 0 < has.sum() < len(table)
    assert m.matters("mom") and not m.matters("lr")
    assert m.importance_["mom"] > m.importance_["wd"]
    # the curve is over sgd's trials: its best is near 0.95, inside the momenta swept. Measured
    # (optimisers seed 0, random_state 0; no torch, threads do not matter): importance of
    # mom 3.77 against wd 1.7e-6; curve from 0.80006, best at 0.95001 (bar 0.03 away).
    p = m.pd_["mom"]
    assert p["values"].min() >= 0.8 and abs(p["values"][int(np.argmax(p["mean"]))] - 0.95) < 0.03
    assert m.recommendation_["param"] == "mom"
    s = m.summary()
    assert s["features"]["mom"]["condition"] == "opt == 'sgd'" and s["features"]["mom"]["active"] == has.sum()
    assert "condition" not in s["features"]["lr"]
    text = markdown(m, s)
    assert "`mom` (conditional)" in text and f"swept where `opt == 'sgd'`, in {has.sum()} of the" in text


def test_without_its_condition_a_key_some_trials_lack_drops_them() -> None:
    """The difference conditions make: read as ordinary keys, momentum and weight decay each lack
    from half the trials, so every trial lacks one and none is left to analyse."""
    from dataclasses import replace

    from fastlab.analysis.errors import MetaError

    with pytest.raises(MetaError, match="has only 0 usable trial"):
        MetaAnalysis(focus="mom", **FAST).fit(replace(optimisers(), conditions={}))


def test_fastlab_meta_reads_a_conditional_sweep(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_app(sweep_dir, "x=interval(0,1)", "c=a,b,c", "y=range(1,6)", "+hydra.sweeper.conditions.y=\"c == 'b'\"",
            "hydra.sweeper.n_trials=24")
    table = read_trials(sweep_dir)
    assert table.conditions == {"y": "c == 'b'"}
    m = MetaAnalysis(focus="x", **FAST).fit(table)
    assert m.n_trials_ == 24
    assert m.summary()["features"]["y"]["active"] == sum(p["c"] == "b" for p in table.params)
    best_x = m.pd_["x"]["values"][int(np.argmax(m.pd_["x"]["mean"]))]
    assert best_x == pytest.approx(0.3, abs=0.15)  # the app's optimum in x
