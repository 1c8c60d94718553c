"""The study matrix's cross-study report: built from the cells' meta outputs (summary.json with
its confirmation and stability), with a conclusion that follows their numbers, and that rests
on the confirmation grid where the forest and the grid disagree."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.report.markdown import write_report
from fastlab.analysis.sources.synthetic import planted_trials
from fastlab.analysis.study.matrix import (
    ELSEWHERE,
    HOLDS,
    NO_GAIN,
    UNPINNED,
    build_matrix,
    cell_answer,
)
from fastlab.analysis.study.stability import stability
from fastlab.cli.meta import main

FAST = {"n_estimators": 60, "n_boot_estimators": 20, "n_boot": 16, "grid_size": 30,
        "n_splits": 2, "n_repeats": 1, "anova": False}
CHEAP = {"n_estimators": 30, "n_boot_estimators": 15, "n_boot": 12, "n_splits": 2,
         "n_repeats": 1, "progress": None, "anova": False}


def grid(best: float, beats: bool | None, diff: float) -> dict:
    """A confirmation result as analysis/study/confirm.summarize_grid words it (ratio 1 vs ``best``)."""
    return {"param": "schedule.lr_ratio", "values": [1.0, best], "cells": [], "tuned": [],
            "difference": diff, "difference_se": 0.01, "beats": beats, "tested": "recommended",
            "description": "test grid", "verdict": f"grid: beats={beats}"}


def write_cell(root: Path, name: str, optimum: float | None, beats: bool | None, diff: float,
               order: int, **facts) -> dict:
    """One cell: a real meta report of a planted sweep, plus its cell.json."""
    table = planted_trials(120, seed=order, optimum=optimum)
    m = MetaAnalysis(reference=2.6, random_state=0, **FAST).fit(table)
    rec = m.recommendation_
    summary = write_report(m, root / name / "meta", confirmation=grid(round(rec["best"], 2),
                                                                      beats, diff),
                           stability=stability(m, table, sizes=(60,), repeats=2, cheap=CHEAP))
    (root / name / "cell.json").write_text(json.dumps({"name": name, "label": name,
                                                       "order": order, **facts}))
    return summary


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    # g3: planted at 2.6 and confirmed; g5: planted at 6 (2.6 left out) and confirmed;
    # l30: flat in the ratio, the grid cannot tell; text: planted at 2.6 (the forest finds it)
    # but the grid cannot tell it from 1: a disagreement, decided by the grid; l30g: flat in the
    # ratio (no clear optimum, a wide interval that holds 2.6) yet the grid beats 1: helps, but
    # the ratio is not pinned down, so 2.6 does not "hold" by the interval alone.
    cells = {"g3": write_cell(root, "g3", 2.6, True, 0.05, 1, task="vision", groups=3, labels=10),
             "g5": write_cell(root, "g5", 6.0, True, 0.04, 2, task="vision", groups=5, labels=10),
             "l30": write_cell(root, "l30", None, None, 0.0, 3, task="vision", groups=3,
                               labels=30),
             "l30g": write_cell(root, "l30g", None, True, 0.03, 5, task="vision", groups=3,
                                labels=30),
             "text": write_cell(root, "text", 2.6, None, 0.003, 4, task="text", groups=5)}
    return root, cells, build_matrix(root)


def test_cells_answer_from_their_numbers(matrix):
    _, cells, summary = matrix
    assert cells["g3"]["recommendation"]["clear_optimum"]
    assert cells["text"]["recommendation"]["clear_optimum"]  # the forest says it helps...
    ans = summary["answers"]
    assert ans["g3"] == HOLDS
    assert ans["g5"] == ELSEWHERE
    assert ans["l30"] == NO_GAIN
    assert not cells["l30g"]["recommendation"]["clear_optimum"]
    assert ans["l30g"] == UNPINNED
    assert ans["text"] == NO_GAIN  # ...but the grid decides
    rows = {r["name"]: r for r in summary["cells"]}
    assert rows["text"]["disagree"] and rows["text"]["forest"] == "helps"
    assert rows["text"]["grid"] == "cannot tell"
    assert not rows["g3"]["disagree"] and rows["g3"]["reference_in_interval"]
    # Measured (g5: planted_trials seed 2, optimum 6, random_state 0; no torch, threads do not
    # matter): best 7.60 (bar 4).
    assert not rows["g5"]["reference_in_interval"] and rows["g5"]["best"] > 4
    assert rows["g3"]["importance_rank"] is not None and rows["g3"]["stability_n"] == 60


def test_conclusion_follows_the_numbers(matrix):
    _, _, summary = matrix
    text = summary["conclusion"]
    assert text.startswith("2.6 holds in 1 of 5 cells: g3.")
    assert "leaves 2.6 out, in: g5" in text
    assert "No measurable gain over ratio 1" in text and "l30" in text
    assert "the forest found no clear optimum, so the best ratio is not pinned down" in text
    assert "not pinned down (2.6 neither confirmed nor ruled out), in: l30g" in text
    disagree = text[text.index("disagree in"):]
    assert "text (forest: helps, grid: cannot tell" in disagree and "rest on the grid" in disagree
    assert "g3 (" not in disagree  # forest and grid agree there
    assert "it holds in g3, not in g5; l30; text; l30g." in text
    assert "With more layer groups: the best ratio rises" in text  # 2.6-ish at 3, 6-ish at 5


def test_report_files(matrix):
    root, _, summary = matrix
    assert json.loads((root / "summary.json").read_text()) == summary
    md = (root / "report.md").read_text()
    assert summary["conclusion"] in md and "| g5 |" in md and "pd_overlay.png" in md
    assert (root / "pd_overlay.png").stat().st_size > 0


def test_missing_cell_is_named_and_cli_prints_conclusion(matrix, tmp_path, capsys):
    root, _, _ = matrix
    (root / "g4").mkdir(exist_ok=True)
    (root / "g4" / "cell.json").write_text(json.dumps({"name": "g4", "order": 6}))
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as info:
        main(["--matrix", str(root), "--out", str(out)])
    assert info.value.code == 0
    assert "Not yet run: g4" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["missing"] == ["g4"]


def test_empty_matrix_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--matrix", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.sh matrix" in err[0]


def test_cell_without_recommendation_is_refused():
    from fastlab.analysis.errors import MetaError

    with pytest.raises(MetaError, match="--focus schedule.lr_ratio"):
        cell_answer({"recommendation": None, "source": {"path": "x"}})


# The matrix's axes (scripts/study.sh matrix): labels 5 -> 10 -> 30 -> 100, depth 3 -> 4 -> 5,
# shift far -> near, and the text cell. Each planted cell is a real cell summary (the module's
# g3) with the numbers the matrix reads set by hand, so the conclusion can be made to move.
AXIS_CELLS = {  # name: (axis, groups, labels, shift, order)
    "g3_l5": (["labels"], 3, 5, "far", 1),
    "g3_l10": (["labels", "depth", "shift"], 3, 10, "far", 2),
    "g3_l30": (["labels"], 3, 30, "far", 3),
    "g3_l100": (["labels"], 3, 100, "far", 4),
    "g4_l10": (["depth"], 4, 10, "far", 5),
    "g5_l10": (["depth"], 5, 10, "far", 6),
    "near_g3_l10": (["shift"], 3, 10, "near", 7),
    "text": ([], 5, None, None, 8),
}


def planted_cell(root: Path, base: dict, name: str, best: float, gain: float,
                 basis: str | None, order: int | None = None) -> None:
    """Cell ``name`` of ``AXIS_CELLS`` with best ratio ``best`` (interval best/1.3 to best*1.3),
    gain over 1 ``gain`` (interval +-0.004) and mechanism basis ``basis``; ratio 1 within the
    margin, 2.6 not; the spread and the lowest rate for 3 and 5 groups."""
    axis, groups, labels, shift, own = AXIS_CELLS[name]
    s = json.loads(json.dumps(base))
    rec = s["recommendation"]
    rec.update(best=best, interval=[best / 1.3, best * 1.3], clear_optimum=False)
    for b in rec["baselines"]:
        b.update(gain=gain, gain_interval=[gain - 0.004, gain + 0.004])
    s["confirmation"] = None
    s["mechanism"] = None if basis is None else {
        "basis": basis, "r2": {"ratio": 0.5, "lowest_rate": 0.6}, "difference": 0.1,
        "interval": [0.02, 0.18], "level": 0.9, "text": f"planted: {basis}"}
    s["noninferior"] = {"tuned": "schedule.lr_max", "at": 0.01, "best": best, "margin": 0.0045,
                        "level": 0.9, "arms": [
                            {"value": 1.0, "loss": 0.001, "interval": [-0.002, 0.003],
                             "within": True, "text": "within the margin"},
                            {"value": 2.6000000000000005, "loss": 0.02, "interval": [0.01, 0.03],
                             "within": False, "text": "not within the margin"}]}
    s["spread"] = {"ratio": best, "values": {"3": best ** 2, "5": best ** 4}}
    s["lowest_rate"] = {"ratio": best, "head_rate": 0.01, "head_rate_from": "planted",
                        "values": {"3": 0.01 / best ** 2, "5": 0.01 / best ** 4}}
    (root / name / "meta").mkdir(parents=True, exist_ok=True)
    (root / name / "meta" / "summary.json").write_text(json.dumps(s))
    (root / name / "cell.json").write_text(json.dumps({
        "name": name, "label": name, "task": "text" if name == "text" else "vision",
        "groups": groups, "labels": labels, "axis": axis,
        "source": {"far": "glyphs", "near": "digits 0-4", None: "pydocs"}[shift], "shift": shift,
        "order": own if order is None else order}))


# best ratio, gain over 1, mechanism basis per cell: the ratio rises with labels, falls with
# depth, rises from far to near; the gain grows with labels; the mechanism moves with labels
RISING = {"g3_l5": (1.2, 0.001, "cannot tell"), "g3_l10": (1.5, 0.002, "ratio"),
          "g3_l30": (2.0, 0.003, "lowest_rate"), "g3_l100": (3.0, 0.02, "lowest_rate"),
          "g4_l10": (1.3, 0.001, "ratio"), "g5_l10": (1.1, 0.0, "ratio"),
          "near_g3_l10": (4.0, 0.01, None), "text": (1.05, 0.0, "ratio")}


@pytest.fixture(scope="module")
def axes(matrix, tmp_path_factory):
    """Two matrices of planted axis cells: ``RISING``, and the same with every trend turned round
    (cell.json's order scrambled, so the report must order cells by axis itself)."""
    _, cells, _ = matrix
    out = {}
    for way, numbers in (("rising", RISING), ("falling", {
            "g3_l5": (3.0, 0.02, "lowest_rate"), "g3_l10": (2.0, 0.003, "lowest_rate"),
            "g3_l30": (1.5, 0.002, "lowest_rate"), "g3_l100": (1.2, 0.001, "lowest_rate"),
            "g4_l10": (2.5, 0.004, "ratio"), "g5_l10": (3.5, 0.005, "ratio"),
            "near_g3_l10": (1.0, -0.01, "ratio"), "text": (1.05, 0.0, None)})):
        root = tmp_path_factory.mktemp(way)
        for i, (name, (best, gain, basis)) in enumerate(numbers.items()):
            planted_cell(root, cells["g3"], name, best, gain, basis,
                         order=None if way == "rising" else 20 - i)
        out[way] = build_matrix(root)
    return out


def test_cells_are_ordered_by_axis(axes):
    for summary in axes.values():
        assert [r["name"] for r in summary["cells"]] == list(AXIS_CELLS)


def test_axis_sentences_follow_the_numbers(axes):
    up, down = axes["rising"]["conclusion"], axes["falling"]["conclusion"]
    labels = "Along labels per class (3 groups): the best ratio "
    assert labels + "rises (1.2 [0.923, 1.56] at 5 -> 1.5" in up
    assert "at 100); the gain over ratio 1 grows (+0.001 -> +0.002 -> +0.003 -> +0.02), " \
           "its interval lies above 0 at 100, elsewhere it includes 0; the mechanism's basis moves: " \
           "undecided " \
           "at 5 -> a ratio at 10 -> a band of the lowest group's rate at 30 -> a band of the " \
           "lowest group's rate at 100." in up
    assert labels + "falls (3 [" in down and "the gain over ratio 1 shrinks" in down
    assert "the mechanism's basis stays a band of the lowest group's rate throughout." in down
    depth = "Along layer groups (10 labels per class): the best ratio "
    assert depth + "falls (1.5 [1.15, 1.95] at 3 -> 1.3 [1, 1.69] at 4 -> 1.1" in up
    assert "every interval includes 0; the mechanism's basis stays a ratio throughout." in up
    assert depth + "rises (2 [" in down
    shift = "Along the source (3 groups, 10 labels per class): the best ratio "
    assert shift + "rises (1.5 [1.15, 1.95] at far (glyphs) -> 4 [3.08, 5.2] at near " \
                   "(digits 0-4))" in up
    assert "its interval lies above 0 at near (digits 0-4), elsewhere it includes 0; the " \
           "mechanism's basis moves: " \
           "a ratio at far (glyphs) -> - at near (digits 0-4)." in up
    assert shift + "falls" in down and "the gain over ratio 1 shrinks (+0.003 -> -0.01), its " \
                                      "interval lies below 0 at near (digits 0-4), elsewhere" in down
    assert "With more layer groups" not in up  # the axes replace the older trends
    assert "The text classifier (text): no measurable gain over ratio 1" in up


def test_rows_carry_mechanism_noninferiority_and_spread(axes, matrix):
    rows = {r["name"]: r for r in axes["rising"]["cells"]}
    r = rows["g3_l30"]
    assert r["mechanism"] == "lowest_rate" and r["mechanism_interval"] == [0.02, 0.18]
    assert r["noninferior_1"]["within"] is True and r["noninferior_ref"]["within"] is False
    assert r["noninferior_at"] == 0.01
    assert r["spread_groups"] == 3 and r["spread"] == pytest.approx(4.0)  # 2^(3-1)
    assert r["lowest_rate"] == pytest.approx(0.0025) and r["head_rate"] == 0.01
    assert rows["g5_l10"]["spread_groups"] == 5  # picked by the cell's own groups
    assert rows["near_g3_l10"]["mechanism"] is None and rows["g3_l10"]["axis"] == [
        "labels", "depth", "shift"]
    assert rows["near_g3_l10"]["source"] == "digits 0-4"
    md = (Path(rows["g3_l30"]["dir"]).parent / "report.md").read_text()
    assert "| g3_l30 | labels | glyphs | lowest_rate (+0.1; +0.02 to +0.18) | within (+0.001; " \
           "-0.002 to +0.003) | not within (+0.02; +0.01 to +0.03) | 4 (3) | 0.0025 (0.01) |" in md
    assert "| near_g3_l10 | shift | digits 0-4 | - |" in md
    # cells written before the new fields: "-" in the new table, no mechanism in the rows
    root, _, old = matrix
    assert all(r["mechanism"] is None and r["axis"] is None for r in old["cells"])
    assert "| g5 | - | - | - |" in (root / "report.md").read_text()


REPO = Path(__file__).resolve().parents[2]


def study(cells: str, out: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``bash scripts/study.sh matrix-smoke ARGS`` on ``cells`` (STUDY_CELLS), everything it
    writes under ``out`` (STUDY_OUTPUTS), one torch thread per process."""
    env = {**os.environ, "STUDY_CELLS": cells, "STUDY_OUTPUTS": str(out),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(REPO / "scripts" / "study.sh"), "matrix-smoke", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_matrix_smoke_runs_the_shift_axis_end_to_end(tmp_path):
    """``study.sh matrix-smoke`` on the shift axis's two cells (far: glyphs16, near: digits04_16
    pretrained on digits 0-4), each epoch-short: the source models, the sweeps, the meta reports
    with grid and stability, and the cross-study report with its shift sentence."""
    r = study("g3_l10,near_g3_l10", tmp_path, "schedule.epochs=1", "schedule.freeze_epochs=0")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert sorted(p.name for p in (tmp_path / "models").glob("*.pt")) == [
        "digits04_16.pt", "glyphs16.pt"]  # only the chosen cells' source models
    root = tmp_path / "studies" / "matrix_smoke"
    cell = json.loads((root / "near_g3_l10" / "cell.json").read_text())
    assert cell["axis"] == ["shift"] and cell["source"] == "digits 0-4" and cell["shift"] == "near"
    assert json.loads((root / "g3_l10" / "cell.json").read_text())["axis"] == [
        "labels", "depth", "shift"]
    s = json.loads((root / "summary.json").read_text())
    assert [c["name"] for c in s["cells"]] == ["g3_l10", "near_g3_l10"]
    assert all(c["n_trials"] == 8 and c["spread_groups"] == 3 for c in s["cells"])
    assert "Along the source (3 groups, 10 labels per class): the best ratio" in s["conclusion"]
    assert "at far (glyphs) -> " in s["conclusion"] and "at near (digits 0-4))" in s["conclusion"]
    assert (root / "near_g3_l10" / "meta" / ".done").exists()
    assert "## Mechanism, non-inferiority and the spread" in (root / "report.md").read_text()
    assert "study: the matrix in" in r.stdout


def test_unknown_cell_is_one_line(tmp_path):
    r = study("g3_l10,g9_l10", tmp_path, timeout=120)
    assert r.returncode == 2 and not (tmp_path / "studies").exists()
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "'g9_l10'" in err[0] and "near_g3_l10" in err[0]
