"""The study matrix's cross-study report: built from the cells' meta outputs (summary.json with
its confirmation and stability), with a conclusion that follows their numbers, and that rests
on the confirmation grid where the forest and the grid disagree."""

from __future__ import annotations

import json
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
