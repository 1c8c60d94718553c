"""The meta-analysis finds planted answers: an optimum of the lr ratio at 2.6, an irrelevant
parameter, a flat response; and it follows scikit-learn's estimator conventions."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.base import clone

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.report.markdown import write_report
from fastlab.analysis.sources.synthetic import JUNK, LR, RATIO, planted_trials

# Small forests and few refits: the planted signal is strong, and the suite stays quick.
FAST = {"n_estimators": 120, "n_boot_estimators": 40, "n_boot": 30, "grid_size": 40,
        "n_splits": 4, "n_repeats": 3, "anova": False}


@pytest.fixture(scope="module")
def planted() -> MetaAnalysis:
    return MetaAnalysis(reference=2.6, random_state=0, **FAST).fit(planted_trials(200, seed=0))


def test_planted_optimum_interval_holds_2_6_excludes_1_and_irrelevant_ranks_last(planted):
    rec = planted.recommendation_
    lo, hi = rec["interval"]
    # Measured (planted_trials seed 0, random_state 0; no torch, and the seeded forest gives the
    # same on any thread count): interval 2.16 to 2.73 (2.6 is 0.13 inside, 1 is 1.16 outside),
    # best 2.29, gain 0.049 with interval from 0.031, OOB R^2 0.907 (bar 0.8), conditional
    # optimum 2.29 in both mid-rate rows (bars 1.8 to 3.6).
    assert rec["param"] == RATIO and rec["clear_optimum"]
    assert lo <= 2.6 <= hi and rec["reference_inside"]
    assert lo > 1.0, "the neutral ratio must lie outside the interval"
    assert lo <= rec["best"] <= hi
    assert rec["gain"] > 0 and rec["gain_interval"][0] > 0  # discrimination helps
    assert list(planted.importance_)[-1] == JUNK or min(planted.importance_, key=planted.importance_.get) == JUNK
    assert planted.importance_[LR] > planted.importance_[RATIO] > planted.importance_[JUNK]
    assert planted.oob_r2_ > 0.8 and planted.warnings_ == []
    # the conditional optimum stays near the planted ratio where training works at all
    rows = planted.conditional_rows()
    mid = [r for r in rows if 1e-3 <= r["b"] <= 1e-2]
    assert mid and all(1.8 <= r["best_a"] <= 3.6 for r in mid)


def test_report_files_and_summary_contract(planted, tmp_path):
    summary = write_report(planted, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"summary.json", "report.md", "importance.png", "observed_vs_oob.png",
            f"pd_{RATIO}.png", f"pd_{LR}.png", f"pd_{JUNK}.png",
            f"pd2d_{RATIO}__{LR}.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["n_trials"] == 200 and 0.8 < on_disk["oob_r2"] <= 1
    assert set(on_disk["importance"]) == {RATIO, LR, JUNK}
    rec = on_disk["recommendation"]
    assert {"param", "best", "interval", "level"} <= set(rec) and rec["level"] == 0.9
    md = (tmp_path / "report.md").read_text()
    for figure in ("importance.png", f"pd_{RATIO}.png", f"pd2d_{RATIO}__{LR}.png",
                   "observed_vs_oob.png"):
        assert f"]({figure})" in md
    assert "OOB R^2" in md and "lies inside" in md and "conditional optimum" in md


def test_flat_response_says_no_clear_optimum(tmp_path):
    m = MetaAnalysis(reference=2.6, **FAST).fit(planted_trials(200, seed=1, optimum=None))
    rec = m.recommendation_
    assert not rec["clear_optimum"]
    assert rec["verdict"].startswith("no clear optimum for schedule.lr_ratio")
    write_report(m, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "no clear optimum" in md
    # every word of the report follows the one rule: nothing says yes, nothing places 2.6
    assert "| clear optimum | no (the gain interval over the neutral includes 0" in md
    assert "| reference 2.6 | neither confirmed nor ruled out (no clear optimum) |" in md
    assert "lies inside" not in md and "lies outside" not in md and "clear optimum:" not in md
    rec = json.loads((tmp_path / "summary.json").read_text())["recommendation"]
    assert rec["clear_optimum"] is False and rec["reference_inside"] is None
    # Measured (planted_trials seed 1, random_state 0; threads do not matter): gain interval
    # up to 0.0053, over 0 as the flat response should give.
    assert rec["gain_interval"][0] <= 0 <= rec["gain_interval"][1]


def test_minimized_objective_and_diverged_trials():
    """A loss (minimize) with the same planted optimum, where the highest rates diverge."""
    t = planted_trials(200, seed=2, diverge_above=0.05)
    t = replace(t, values=1 - t.values, objective="valid_loss", direction="minimize")
    m = MetaAnalysis(**FAST).fit(t)
    assert m.direction_ == "minimize"  # as the sweep recorded it (never guessed from the name)
    lo, hi = m.recommendation_["interval"]
    # Measured (planted_trials seed 2, random_state 0; threads do not matter): interval 2.14 to
    # 2.69 (2.6 is 0.09 inside), 19 diverged trials.
    assert lo <= 2.6 <= hi and lo > 1
    n_div = t.status.count("diverged")
    assert n_div > 0 and m.encoded_.policy["scored_worst"] == n_div and m.n_trials_ == 200
    dropped = MetaAnalysis(diverged="drop", **{**FAST, "n_boot": 2}).fit(t)
    assert dropped.n_trials_ == 200 - n_div


def test_estimator_conventions():
    m = MetaAnalysis(focus=RATIO, level=0.8, random_state=3, **{**FAST, "n_boot": 5})
    assert m.get_params()["level"] == 0.8 and clone(m).get_params() == m.get_params()
    assert not [k for k in vars(m) if k.endswith("_")]  # nothing learned before fit
    t = planted_trials(25, seed=4)
    assert m.fit(t) is m
    assert m.level == 0.8 and m.focus == RATIO  # constructor arguments unchanged
    learned = {k for k in vars(m) if k.endswith("_")}
    assert {"forest_", "oob_r2_", "importance_", "pd_", "recommendation_"} <= learned
    again = clone(m).fit(t)
    assert again.recommendation_ == m.recommendation_  # random_state makes it repeatable
    np.testing.assert_array_equal(again.oob_prediction_, m.oob_prediction_)
    assert m.warnings_ and "sketch" in m.warnings_[-1]  # 25 trials are few
