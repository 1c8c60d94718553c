"""fastlab-meta takes the objective's direction from what the sweep recorded (trials.db, the
jobs' metrics.json, an older best.yaml), never from the metric's name; without a record, one line
saying to pass --direction."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from fastlab.analysis.sources import read_trials
from fastlab.analysis.sources.synthetic import planted_trials, write_multirun
from fastlab.cli.meta import main
from fastlab.sweep.store import TrialStore

QUICK = ["--n-boot", "4", "--trees", "30", "--quiet"]


def store_sweep(path, direction: str | None, metrics_direction: str | None = None):
    """A trials.db written by the trial store itself, as the sweeper writes it."""
    t = planted_trials(12, seed=0)
    with TrialStore(path / "trials.db") as store:
        if direction is not None:
            store.set("direction", direction)
        for i, (p, v) in enumerate(zip(t.params, t.values)):
            store.start([(i, p, str(i))], next_job=i + 1)
            metrics = {"objective_name": "accuracy", "status": "completed", "objective": v}
            if metrics_direction is not None:
                metrics["direction"] = metrics_direction
            store.finish(i, "completed", float(v), metrics, str(i), None)
    return path


def test_trials_db_direction_wins_over_the_metric_name_and_works_while_locked(tmp_path):
    # "accuracy" would read as maximize; the sweep recorded minimize, and that is what counts
    store_sweep(tmp_path, "minimize")
    with TrialStore(tmp_path / "trials.db"):  # a driver still holds the sweep
        t = read_trials(tmp_path)
    assert t.source == "trials.db" and len(t) == 12
    assert t.direction == "minimize" and t.objective == "accuracy"


def test_metrics_json_then_best_yaml_then_nothing(tmp_path):
    assert read_trials(store_sweep(tmp_path / "a", None, "minimize")).direction == "minimize"
    old = store_sweep(tmp_path / "b", None)  # an older sweep: best.yaml alone says it
    (old / "best.yaml").write_text(yaml.safe_dump({"direction": "maximize"}))
    assert read_trials(old).direction == "maximize"
    assert read_trials(store_sweep(tmp_path / "c", None)).direction is None


def test_a_multirun_reads_each_jobs_metrics_json(tmp_path):
    t = planted_trials(12, seed=0)
    write_multirun(replace(t, direction="minimize"), tmp_path / "min")
    assert read_trials(tmp_path / "min").direction == "minimize"  # though named "accuracy"
    mixed = write_multirun(t, tmp_path / "mixed")
    first = mixed / "0" / "metrics.json"
    first.write_text(json.dumps({**json.loads(first.read_text()), "direction": "minimize"}))
    m = read_trials(mixed)
    assert m.direction is None and "disagree" in m.direction_note


def _fail(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, *QUICK])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_no_direction_anywhere_is_one_line_and_direction_fixes_it(tmp_path, capsys):
    plain = write_multirun(replace(planted_trials(12, seed=0), direction=None), tmp_path / "plain")
    line = _fail(capsys, str(plain))
    assert line == (
        f"fastlab-meta: error: cannot tell whether the objective accuracy of {plain} is better "
        "high or low: it records no direction (no trials.db, no \"direction\" in metrics.json, "
        "no fastlab task in its config); pass --direction maximize or --direction minimize")
    with pytest.raises(SystemExit) as e:
        main([str(plain), "--direction", "maximize", "--out", str(tmp_path / "r"), *QUICK])
    assert e.value.code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["direction"] == "maximize"
    capsys.readouterr()  # that run's output
    # a sweep whose trials disagree says so, in one line
    mixed = write_multirun(planted_trials(12, seed=0), tmp_path / "mixed")
    (mixed / "3" / "metrics.json").write_text(json.dumps(
        {"status": "completed", "objective": 0.5, "direction": "minimize"}))
    assert "metrics.json disagree on the direction; pass --direction" in _fail(capsys, str(mixed))


def test_the_store_sweeps_direction_reaches_the_report(tmp_path, capsys):
    store_sweep(tmp_path, "minimize")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), *QUICK])
    assert e.value.code == 0
    summary = json.loads((tmp_path / "meta" / "summary.json").read_text())
    assert summary["direction"] == "minimize" and summary["n_trials"] == 12
    assert np.isfinite(summary["oob_r2"]) or summary["oob_r2"] is None
