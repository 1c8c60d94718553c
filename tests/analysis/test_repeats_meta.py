"""fastlab-meta on a sweep with ``hydra.sweeper.repeats``: a row per configuration whose value
is the mean of its runs (as the sweep's own trials.csv), and the runs' pooled sd as the noise a
single run carries, in summary.json and the report."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.report.markdown import markdown
from fastlab.analysis.sources import read_trials
from tests.analysis.test_conditional_keys import FAST
from tests.sweep.test_hydra import run_app


def test_a_sweep_with_repeats_is_analysed_by_its_configurations(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_app(sweep_dir, "x=interval(0,1)", "c=a,b,c", "noise=0.05", "hydra.sweeper.repeats=3",
            "hydra.sweeper.strategy=random", "hydra.sweeper.n_trials=16", "hydra.sweeper.seed=2")
    table = read_trials(sweep_dir)
    assert len(table) == 16 and table.numbers == tuple(range(16))
    rows = {int(r["number"]): r for r in csv.DictReader(open(sweep_dir / "trials.csv"))}
    assert [float(rows[n]["value"]) for n in table.numbers] == pytest.approx(list(table.values))
    assert "seed" not in table.names  # the seeds are the runs of a row, not a parameter
    r = table.replicates
    assert r["repeats"] == 3 and r["configurations"] == 16
    # Measured (hydra.sweeper.seed=2; no torch, threads do not matter): sd 0.0426 of the planted
    # 0.05 from 16 x 3 runs (bars 0.03 to 0.07).
    assert 0.03 < r["sd"] < 0.07  # the planted noise is 0.05
    m = MetaAnalysis(focus="x", **FAST).fit(table)
    s = m.summary()
    assert s["n_trials"] == 16 and s["replicates"] == r
    assert "Each of the 16 configurations ran 3 seeds" in markdown(m, s)
