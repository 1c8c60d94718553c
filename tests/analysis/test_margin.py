"""A clear optimum needs a gain that matters: the margin (``--margin``, else the seed noise, else
a stated default) decides it, non-inferiority says whether a ratio of 1 or 2.6 is within the margin
of the best at the tuned head rate, tunability what tuning the ratio buys, and the spread and the
lowest group's rate show the ratio as users meet it. On planted sweeps: the ratio matters,
nothing matters, and a tiny real gain with narrow intervals."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastlab.analysis.errors import MetaError
from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.verdict import (
    DEFAULT_MARGIN_SHARE,
    Baseline,
    is_clear,
    judge,
    within_margin,
)
from fastlab.analysis.report.markdown import write_report
from fastlab.analysis.sources.synthetic import LR, RATIO, planted_trials, write_multirun
from fastlab.analysis.sources.table import TrialsTable
from fastlab.analysis.study.confirm import grid_margin, seed_sd, summarize_grid
from fastlab.cli.meta import main
from tests.analysis.test_cli import QUICK, fail
from tests.analysis.test_confirm import grid

FAST = {"n_estimators": 80, "n_boot_estimators": 30, "n_boot": 20, "grid_size": 30, "n_splits": 3,
        "n_repeats": 2, "anova": False}
GROUPS = 5  # layer groups the planted trials' metrics.json record (ULMFiT's count)


def with_groups(t: TrialsTable, sd: float | None = None) -> TrialsTable:
    """``t`` with every trial's ``layer_groups`` and, given ``sd``, the seed noise a sweep with
    ``hydra.sweeper.repeats=3`` would have measured."""
    reps = None if sd is None else {"repeats": 3, "configurations": len(t), "sd": sd}
    return replace(t, metrics=({"layer_groups": float(GROUPS)},) * len(t), replicates=reps)


def tiny_gain(n: int = 300, seed: int = 0, gain: float = 0.002, noise: float = 0.0003) -> TrialsTable:
    """A real but tiny ratio effect: accuracy peaks at a ratio of 2.6, ``gain`` above a ratio of
    1 (and the head rate matters a little), measured with little noise by many trials."""
    rng = np.random.default_rng(seed)
    ratio, lr = 10 ** rng.uniform(0, 1, n), 10 ** rng.uniform(-4, -2, n)
    y = (0.9 - 0.005 * (np.log10(lr) + 3) ** 2
         - gain * ((np.log10(ratio) - np.log10(2.6)) / np.log10(2.6)) ** 2
         + noise * rng.normal(size=n))
    params = tuple({RATIO: float(f"{r:.6g}"), LR: float(f"{v:.6g}")} for r, v in zip(ratio, lr))
    return TrialsTable(names=(RATIO, LR), params=params, values=y, status=("completed",) * n,
                       numbers=tuple(range(n)), objective="accuracy", direction="maximize",
                       log_scale=frozenset({RATIO, LR}), scales_known=True,
                       path=Path(f"tiny-gain(seed={seed})"), source="synthetic",
                       metrics=({"layer_groups": float(GROUPS)},) * n)


def flat(n: int = 400, seed: int = 5, noise: float = 0.02) -> TrialsTable:
    """Nothing matters: the accuracy is 0.9 plus seed noise, whatever the ratio and the rate."""
    t = planted_trials(n, seed=seed)
    rng = np.random.default_rng(seed)
    return replace(t, values=0.9 + noise * rng.normal(size=n), path=Path("flat"))


def arms(d: dict) -> dict[float, dict]:
    return {a["value"]: a for a in d["arms"]}


@pytest.fixture(scope="module")
def matters() -> MetaAnalysis:
    return MetaAnalysis(reference=2.6, **FAST).fit(with_groups(planted_trials(200, seed=0), 0.02))


def test_when_the_ratio_matters_the_optimum_is_clear_and_1_is_not_within_the_margin(matters):
    rec = matters.recommendation_
    # Measured (planted_trials seed 0, random_state 0; no torch, seeded forests: the same on any
    # thread count): gain 0.049 over the margin 0.02; 1's loss interval from 0.071 (bar 0.02);
    # 2.6's up to 0.0182 (bar 0.02: the tightest here, 0.0018 of room); tuning over 1 gains
    # 0.0998 (bar 0.05), over 2.6 0.0041 (bar 0.02).
    assert rec["margin"] == 0.02 and "seed noise of the sweep's repeats" in rec["margin_source"]
    assert rec["clear_optimum"] and rec["gain"] > rec["margin"] and rec["gain_exceeds_margin"]
    assert "above the margin 0.02" in rec["verdict"]
    ni, tu = matters.noninferior_, matters.tunability_
    assert ni["tuned"] == tu["tuned"] == LR and ni["margin"] == 0.02
    at = matters.conditional_at_best()  # "at the tuned head rate": where the 2-D surface is best
    assert ni["at"] == pytest.approx(at["b"]) and ni["best"] == pytest.approx(at["best_a"])
    one, ref = arms(ni)[1.0], arms(ni)[2.6]
    assert one["within"] is False and one["interval"][0] > 0.02 and one["text"] == "not within the margin"
    assert ref["within"] is True and ref["interval"][1] <= 0.02  # the planted optimum is 2.6
    # tunability: tuning the ratio buys much over 1, next to nothing over 2.6
    t1, t26 = arms(tu)[1.0], arms(tu)[2.6]
    assert t1["gain"] > 0.05 and t1["interval"][0] > 0.02
    assert abs(t26["gain"]) < 0.02 and t1["gain"] >= one["loss"] - 1e-12  # 1 may take its own rate


def test_spread_and_lowest_rate(matters, tmp_path):
    s = write_report(matters, tmp_path)
    ratio, head = s["recommendation"]["best"], matters.conditional_at_best()["b"]
    assert s["spread"] == {"ratio": ratio, "values": {"5": pytest.approx(ratio ** 4)}}
    low = s["lowest_rate"]
    assert low["head_rate"] == pytest.approx(head) and low["ratio"] == ratio
    assert low["values"]["5"] == pytest.approx(head / ratio ** 4)
    # the recommended ratio near 2.6 spreads five groups' rates by about 2.6^4 = 45.7; measured
    # (the fixture's seeds, as above) 24.1, from the best ratio 2.22
    assert 15 < s["spread"]["values"]["5"] < 110
    md = (tmp_path / "report.md").read_text()
    assert f"{ratio:.3g} over 5 layer groups: a spread (head rate / lowest rate) of" in md
    assert "### Non-inferiority and tunability of `schedule.lr_ratio`" in md
    assert "| 1 | " in md and "not within the margin" in md
    assert "Margin = 0.02 accuracy (the seed noise of the sweep's repeats" in md
    assert "is above the margin" in md
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["noninferior"]["arms"][0]["within"] is False
    assert on_disk["recommendation"]["margin_source"] == s["recommendation"]["margin_source"]


def test_when_nothing_matters_there_is_no_optimum_and_1_and_2_6_are_within_the_margin():
    m = MetaAnalysis(reference=2.6, **FAST).fit(with_groups(flat(), 0.02))
    rec = m.recommendation_
    # Measured (flat seed 5, random_state 0; threads do not matter; /tmp/bars/scratch/
    # margin_flat.py): gain 0.0045 with interval -0.0058 to 0.0093 (margin 0.02); loss intervals
    # of 1 and 2.6 up to 0.0089 and 0.0084, tuning gains 0.0050 and 0.0031 (bars 0.02).
    assert not rec["clear_optimum"] and rec["verdict"].startswith("no clear optimum")
    assert rec["gain_interval"][0] <= 0 or rec["gain"] <= rec["margin"]
    ni = m.noninferior_
    assert arms(ni)[1.0]["within"] is True and arms(ni)[2.6]["within"] is True
    assert all(a["interval"][1] <= 0.02 for a in ni["arms"])
    assert all(abs(a["gain"]) < 0.02 for a in m.tunability_["arms"])


def test_a_tiny_real_gain_is_not_clear_with_the_default_margin_and_clear_with_a_tiny_one():
    t = tiny_gain()
    m = MetaAnalysis(reference=2.6, **FAST).fit(t)
    rec = m.recommendation_
    # the default margin: 0.5% of the median accuracy (about 0.0045), stated as such
    assert rec["margin"] == pytest.approx(DEFAULT_MARGIN_SHARE * np.median(np.abs(t.values)))
    assert rec["margin_source"].startswith("default: 0.5% of the trials' median absolute accuracy")
    lo, hi = rec["gain_interval"]
    # Measured (tiny_gain seed 0, random_state 0; threads do not matter): gain interval 0.00098
    # to 0.00147 under the margin 0.00449 (a third of it).
    assert 0 < lo and rec["gain"] < hi < rec["margin"]  # real (excludes 0), too small to matter
    assert rec["gain_excludes_zero"] and not rec["gain_exceeds_margin"]
    assert not rec["clear_optimum"] and rec["reference_inside"] is None
    assert rec["clear_text"] == "no (the gain over the neutral is below the margin)"
    assert "is below the margin 0.00" in rec["verdict"] and "real, too small to matter" in rec["verdict"]
    assert arms(m.noninferior_)[1.0]["within"] is True  # 1 loses less than the margin
    # the margin is what decides: the same fit, judged with 0.0001, is clear
    m.set_margin(0.0001, "set by --margin")
    again = m.recommendation_
    assert again["clear_optimum"] and again["gain_interval"] == rec["gain_interval"]
    assert "above the margin 0.0001" in again["verdict"] and again["reference_inside"] is True
    assert arms(m.noninferior_)[1.0]["within"] is False
    fitted = MetaAnalysis(reference=2.6, margin=0.0001, **FAST).fit(t).recommendation_
    assert fitted == again  # set_margin judges exactly as a fit with that margin


def test_fastlab_meta_margin_flag(tmp_path, capsys):
    sweep = write_multirun(tiny_gain(), tmp_path / "tiny")
    with pytest.raises(SystemExit) as done:
        main([str(sweep), "--reference", "2.6", "--margin", "0.0001", *QUICK])
    assert done.value.code == 0
    s = json.loads((sweep / "meta" / "summary.json").read_text())
    assert s["recommendation"]["clear_optimum"] and s["recommendation"]["margin"] == 0.0001
    assert s["recommendation"]["margin_source"] == "set by --margin"
    assert s["settings"]["margin"] == 0.0001
    assert s["spread"]["values"]["5"] == pytest.approx(s["recommendation"]["best"] ** 4)
    md = (sweep / "meta" / "report.md").read_text()
    assert "--margin 0.0001" in md  # the reproduce line
    line = fail(capsys, str(sweep), "--margin", "-1")
    assert "--margin -1" in line and ">= 0" in line


def test_the_confirmation_grid_measures_the_seed_noise():
    t = grid({(1.0, 1e-3): [0.80, 0.81, 0.79], (1.0, 1e-2): [0.85, 0.86, 0.84],
              (2.6, 1e-3): [0.88, 0.89, 0.87], (2.6, 1e-2): [0.90, 0.92, 0.94]})
    r = summarize_grid(t, RATIO, LR, 1.0, [1.0, 2.6])
    # pooled sd of the runs around their cell's mean: three cells of sd 0.01, one of 0.02
    assert r["seed_sd"] == pytest.approx(math.sqrt((3 * 0.01 ** 2 + 0.02 ** 2) / 4))
    r["seeds"] = 3
    margin, source = grid_margin(r)
    assert margin == r["seed_sd"] and "confirmation grid's seed noise" in source and "3 seeds" in source
    assert seed_sd([{"n": 1, "se": None}]) is None and grid_margin({"seed_sd": None}) is None


@pytest.mark.parametrize(("gain_iv", "margin", "clear"), [
    ((0.001, 0.003), 0.0, True), ((0.001, 0.003), 0.005, False), ((0.006, 0.02), 0.005, True),
    ((-0.001, 0.003), 0.0, False), ((-0.001, 0.03), 0.005, False), ((0.004, 0.005), 0.005, False),
    ((0.001, 0.02), 0.005, True),  # real, and its estimate (0.0105) exceeds the margin
])
def test_the_rule_with_a_margin(gain_iv, margin, clear):
    b = [Baseline("the neutral", 1.0, sum(gain_iv) / 2, gain_iv)]
    v = judge(RATIO, 2.0, (1.5, 3.0), 0.9, b, reference=2.6, objective="accuracy", margin=margin)
    assert v["clear_optimum"] is clear is is_clear((1.5, 3.0), b, margin)
    assert v["verdict"].startswith("clear optimum:" if clear else "no clear optimum for")
    assert v["gain_excludes_zero"] is (gain_iv[0] > 0)
    assert v["gain_exceeds_margin"] is (margin == 0 or sum(gain_iv) / 2 > margin)
    if clear and margin > 0:
        assert f"above the margin {margin:g}" in v["verdict"]
    if not clear and gain_iv[0] > 0:
        assert "is below the margin" in v["verdict"] and "too small to matter" in v["verdict"]


@pytest.mark.parametrize(("loss_iv", "within"), [
    ((-0.01, 0.004), True), ((0.0, 0.005), True), ((0.006, 0.02), False), ((0.001, 0.02), None),
])
def test_non_inferiority_is_the_margin_read_the_other_way(loss_iv, within):
    assert within_margin(loss_iv, 0.005) is within


def test_a_bad_margin_is_one_line():
    with pytest.raises(MetaError, match=r"--margin nan must be a finite number >= 0"):
        MetaAnalysis(margin=float("nan"), **FAST).fit(planted_trials(20))
