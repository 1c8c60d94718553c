"""One rule words every verdict: an optimum is clear when its gain interval lies above 0 and the
interval of its best value leaves the baseline out. The three cases measured on the lr-ratio study
that the old wording contradicted, the rule's invariants over a grid of cases, and the graded
trust scale of the forest's OOB R^2."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.encode import describe_feature
from fastlab.analysis.forest.recommend import recommend
from fastlab.analysis.forest.verdict import (
    SCALE_TEXT,
    Baseline,
    is_clear,
    judge,
    trust,
    trust_warning,
)
from fastlab.analysis.sources.synthetic import planted_trials

RATIO = "schedule.lr_ratio"


def neutral(gain: float, lo: float, hi: float) -> list[Baseline]:
    return [Baseline("the neutral", 1.0, gain, (lo, hi))]


def study(interval, gain_interval, gain=None):
    """A verdict as the study's report gives it: ratio, reference 2.6, accuracy, 90%."""
    g = gain if gain is not None else sum(gain_interval) / 2
    return judge(RATIO, 1.93, interval, 0.9, neutral(g, *gain_interval), reference=2.6,
                 objective="accuracy")


def test_sweep_seeds_0_and_1_say_the_same_thing():
    """Seeds 0 and 1: best ratio 1.93 both times, intervals [1, 2.82] and [1.05, 2.33], both gain
    intervals include 0. The old report said "clear optimum: yes" twice and 2.6 was inside, then
    outside. Now both say no clear optimum, and neither places 2.6."""
    a = study((1.0, 2.82), (-0.006, 0.021))
    b = study((1.05, 2.33), (-0.003, 0.016))
    for v in (a, b):
        assert v["clear_optimum"] is False
        assert v["clear_text"] == "no (the gain interval over the neutral includes 0)"
        assert v["verdict"].startswith("no clear optimum for schedule.lr_ratio: the gain over the "
                                       "neutral 1 could be 0")
        assert v["reference_inside"] is None
        assert v["reference_text"] == "neither confirmed nor ruled out (no clear optimum)"
        assert "neither confirmed nor ruled out" in v["verdict"]
        assert "lies inside" not in v["verdict"] and "lies outside" not in v["verdict"]
    # the bare geometry still flips, and the verdict no longer follows it
    assert a["reference_in_interval"] is True and b["reference_in_interval"] is False
    assert a["reference_text"] == b["reference_text"]
    # seed 0's interval reaches the neutral ratio; seed 1's does not; neither gains surely
    assert "includes it" in a["verdict"] and "includes it" not in b["verdict"]
    assert not a["gain_excludes_zero"] and not b["gain_excludes_zero"]


def test_a_gain_that_excludes_0_is_never_called_flat():
    """The high-lr-range sweep: gain +1.7 to +9.1 points over ratio 1. Clear when the best
    value's interval leaves 1 out; otherwise it still says that the ratio beats 1."""
    clear = study((1.16, 4.5), (0.017, 0.091), gain=0.05)
    assert clear["clear_optimum"] and clear["clear_text"] == "yes"
    assert clear["verdict"].startswith("clear optimum: best schedule.lr_ratio = 1.93 (90% "
                                       "interval 1.16 to 4.5, which leaves out the neutral 1)")
    assert "+0.05 accuracy over the neutral 1 (90% interval +0.017 to +0.091)" in clear["verdict"]
    assert clear["reference_inside"] is True and clear["reference_text"] == "inside the interval"
    assert clear["verdict"].endswith("; the reference 2.6 lies inside the interval.")

    reaches = study((1.0, 4.5), (0.017, 0.091), gain=0.05)
    assert not reaches["clear_optimum"]
    assert "it beats the neutral 1 (+0.05 accuracy over the neutral 1" in reaches["verdict"]
    assert "reaches the neutral" in reaches["verdict"] and "could be 0" not in reaches["verdict"]
    assert reaches["gain_excludes_zero"] and not reaches["interval_excludes_baseline"]
    assert reaches["clear_text"] == "no (the interval of the best reaches the neutral)"


def test_the_best_at_the_neutral_value_and_a_neutral_that_does_better():
    itself = judge(RATIO, 1.0, (1.0, 1.4), 0.9, neutral(0.0, 0.0, 0.0))
    assert not itself["clear_optimum"] and "the best value is the neutral 1 itself" in itself["verdict"]
    worse = judge(RATIO, 3.0, (2.0, 4.0), 0.9, neutral(-0.01, -0.02, -0.001))
    assert not worse["clear_optimum"] and "the neutral 1 does better" in worse["verdict"]


@pytest.mark.parametrize("gain_iv", [(-0.02, -0.01), (-0.01, 0.0), (-0.01, 0.02), (0.0, 0.02),
                                     (0.001, 0.02)])
@pytest.mark.parametrize("interval", [(0.8, 1.2), (1.0, 3.0), (1.0000001, 3.0), (1.2, 3.0)])
@pytest.mark.parametrize("reference", [None, 2.6, 5.0])
def test_every_word_follows_the_rule(gain_iv, interval, reference):
    v = study(interval, gain_iv)
    lo, hi = interval
    clear = gain_iv[0] > 0 and not (lo <= 1.0 <= hi)
    assert v["clear_optimum"] is clear is is_clear(interval, neutral(0.01, *gain_iv))
    assert v["verdict"].startswith("clear optimum:" if clear else "no clear optimum for")
    assert (v["clear_text"] == "yes") is clear
    if reference is None:
        v = judge(RATIO, 1.93, interval, 0.9, neutral(0.01, *gain_iv))
        assert v["reference_text"] is None and v["reference_inside"] is None
        return
    v = judge(RATIO, 1.93, interval, 0.9, neutral(0.01, *gain_iv), reference=reference)
    inside = lo <= reference <= hi
    assert v["reference_in_interval"] is inside
    if clear:
        assert v["reference_inside"] is inside
        assert v["reference_text"] == ("inside the interval" if inside else "outside the interval")
    else:
        assert v["reference_inside"] is None and "neither confirmed" in v["reference_text"]
        assert "lies inside" not in v["verdict"] and "lies outside" not in v["verdict"]


def test_without_a_neutral_value_a_clear_optimum_beats_both_ends():
    f = describe_feature("schedule.lr_max", [1e-4, 1e-1], True, True)
    grid = np.linspace(-4, -1, 31)
    rng = np.random.default_rng(0)
    peak = -((grid + 2.5) ** 2)  # (G,) best at 10**-2.5
    r = recommend(f, grid, peak, peak + 0.01 * rng.normal(size=(40, 31)), 1.0)
    assert r["clear_optimum"] and [b["what"] for b in r["baselines"]] == ["the low end", "the high end"]
    assert "inside the sampled range, clear of both ends" in r["verdict"] and r["gain"] is None
    rising = grid.copy()  # best at the high end: nothing located
    r = recommend(f, grid, rising, rising + 0.01 * rng.normal(size=(40, 31)), 1.0)
    assert not r["clear_optimum"] and "the best value is the high end" in r["verdict"]


@pytest.mark.parametrize(("r2", "grade"), [
    (math.nan, "do not trust"), (None, "do not trust"), (-0.4, "do not trust"),
    (0.0, "do not trust"), (0.2499, "do not trust"), (0.25, "weak"), (0.48, "weak"),
    (0.4999, "weak"), (0.5, "moderate"), (0.74, "moderate"), (0.75, "good"), (0.97, "good"),
])
def test_trust_scale(r2, grade):
    t = trust(r2)
    assert t["grade"] == grade and t["scale"] == SCALE_TEXT
    w = trust_warning(r2)
    if grade == "good":
        assert w is None and t["advice"] == ""
    else:  # 0.48 got no warning before: every grade below good warns, naming grade and scale
        assert w.startswith(f"trust in this fit: {grade} (OOB R^2 = ") and SCALE_TEXT in w


@pytest.mark.parametrize("noise", [0.05, 0.08])  # OOB R^2 about 0.63 and 0.44 at this seed
def test_the_analysis_and_report_warn_by_the_scale(noise, tmp_path):
    from fastlab.analysis.report.markdown import write_report

    fast = {"n_estimators": 60, "n_boot_estimators": 20, "n_boot": 4, "grid_size": 20,
            "n_splits": 3, "n_repeats": 2}
    m = MetaAnalysis(**fast).fit(planted_trials(60, seed=3, noise=noise))
    grade = trust(m.oob_r2_)["grade"]
    assert grade in ("moderate", "weak")
    assert m.warnings_[0] == trust_warning(m.oob_r2_)
    s = write_report(m, tmp_path)
    assert s["trust"]["grade"] == grade
    md = (tmp_path / "report.md").read_text()
    assert f"Trust in this fit: **{grade}**, on the scale {SCALE_TEXT}." in md
    assert f"trust: {grade})" in md  # the conclusion's fit line
    rec = s["recommendation"]
    assert f"| clear optimum | {rec['clear_text']} |" in md and rec["verdict"] in md


def test_only_both_conditions_together_make_a_clear_optimum():
    seen = set()
    for g, iv in itertools.product([(-0.01, 0.02), (0.001, 0.02)], [(1.0, 3.0), (1.2, 3.0)]):
        v = study(iv, g)
        seen.add((v["gain_excludes_zero"], v["interval_excludes_baseline"], v["clear_optimum"]))
    assert seen == {(False, False, False), (False, True, False), (True, False, False),
                    (True, True, True)}
