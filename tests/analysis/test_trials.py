"""The trials table from both sources (a Hydra multirun dir, a fastlab trials.db), the encoding of
parameters, the policy for failed and diverged trials, and the recommendation's pure math."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from fastlab.analysis.errors import MetaError
from fastlab.analysis.forest.encode import describe_feature, encode, label, outcomes
from fastlab.analysis.forest.recommend import recommend
from fastlab.analysis.sources import read_trials


def job(root: Path, num: int, overrides: list[str], metrics: dict | None,
        config: dict | None = None) -> None:
    d = root / str(num) / ".hydra"
    d.mkdir(parents=True)
    (d / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if config is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (root / str(num) / "metrics.json").write_text(json.dumps(metrics))


def done(value: float, status: str = "completed") -> dict:
    return {"status": status, "objective": value, "objective_name": "accuracy"}


def test_multirun_dir_swept_fixed_statuses_and_types(tmp_path):
    cfg = {"task": {"name": "classify", "objective": "accuracy"}}
    job(tmp_path, 0, ["schedule.lr_ratio=1", "arch.channels=[16,32]", "seed=0", "trainer.plots=false"],
        done(0.5), cfg)
    job(tmp_path, 1, ["schedule.lr_ratio=2.6", "arch.channels=[8,16]", "seed=1", "trainer.plots=false"],
        done(0.7), cfg)
    job(tmp_path, 2, ["schedule.lr_ratio=5", "arch.channels=[8,16]", "seed=0", "trainer.plots=false"],
        done(None, "diverged"))
    job(tmp_path, 10, ["schedule.lr_ratio=7.5", "arch.channels=[16,32]", "seed=1", "trainer.plots=false"],
        {"status": "failed", "objective": None, "objective_name": "accuracy"})
    job(tmp_path, 11, ["schedule.lr_ratio=9", "arch.channels=[16,32]", "seed=1", "trainer.plots=false"],
        None)  # still running, or killed before writing metrics.json
    t = read_trials(tmp_path)
    assert t.source == "job dirs" and t.numbers == (0, 1, 2, 10, 11)  # numeric, not text, order
    assert t.names == ("schedule.lr_ratio", "arch.channels", "seed")
    assert t.fixed == {"trainer.plots": False}
    assert t.status == ("completed", "completed", "diverged", "failed", "missing")
    assert t.params[1] == {"schedule.lr_ratio": 2.6, "arch.channels": [8, 16], "seed": 1}
    assert t.params[0]["schedule.lr_ratio"] == 1 and isinstance(t.params[0]["schedule.lr_ratio"], int)
    np.testing.assert_array_equal(np.isnan(t.values), [False, False, True, True, True])
    assert t.objective == "accuracy" and t.direction == "maximize"  # from fastlab's task registry
    enc = encode(t, "maximize")
    assert enc.names == ["schedule.lr_ratio", "arch.channels"]
    assert enc.skipped == {"seed": "replicates (training randomness), not a hyperparameter"}
    channels = enc.features[1]
    assert channels.kind == "categorical" and channels.categories == ("[16, 32]", "[8, 16]")
    np.testing.assert_array_equal(enc.rows, [0, 1, 2])
    np.testing.assert_allclose(enc.y, [0.5, 0.7, 0.5])  # diverged scored as the worst completed
    assert enc.policy["dropped"] == {"failed": 1, "missing": 1}
    assert "1 diverged trial(s) scored as the worst completed value (0.5)" in enc.policy["text"]


def _trials_db(path: Path, rows: list[tuple], space: dict, direction: str | None) -> Path:
    path.mkdir(parents=True)
    con = sqlite3.connect(path / "trials.db")
    con.executescript(
        "CREATE TABLE trials (number INTEGER PRIMARY KEY, status TEXT NOT NULL, params TEXT NOT NULL,"
        " value REAL, metrics TEXT, job_dir TEXT, started_at TEXT, finished_at TEXT, error TEXT);"
        "CREATE TABLE sweep (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    for number, status, params, value in rows:
        metrics = None if status in ("failed", "running") else json.dumps(
            {"status": status, "objective": value, "objective_name": "rmse"})
        con.execute("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                    (number, status, json.dumps(params), value, metrics, str(number),
                     "ValueError: boom" if status == "failed" else None))
    con.execute("INSERT INTO sweep VALUES ('space', ?)", (json.dumps(json.dumps(space)),))
    con.commit()
    con.close()
    if direction:
        (path / "best.yaml").write_text(yaml.safe_dump({"direction": direction}))
    return path


def test_fastlab_trials_db_scales_direction_and_statuses(tmp_path):
    space = {"dims": [{"name": "schedule.lr_max", "form": "tag(log, interval(0.0001, 0.1))"},
                      {"name": "schedule.wd", "form": "interval(0.001, 0.1)"},
                      {"name": "arch", "form": "choice", "values": ["cnn", "resnet18"]}],
             "fixed": ["schedule.epochs=3", "+study=x"]}
    rows = [(i, "completed", {"schedule.lr_max": 10 ** (-4 + i / 3), "schedule.wd": 0.001 + 0.011 * i,
                              "arch": ["cnn", "resnet18"][i % 2]}, 1.0 / (i + 1))
            for i in range(8)]
    rows += [(8, "diverged", {"schedule.lr_max": 0.1, "schedule.wd": 0.05, "arch": "cnn"}, None),
             (9, "failed", {"schedule.lr_max": 0.01, "schedule.wd": 0.05, "arch": "cnn"}, None),
             (10, "running", {"schedule.lr_max": 0.02, "schedule.wd": 0.05, "arch": "cnn"}, None)]
    t = read_trials(_trials_db(tmp_path / "sweep", rows, space, "minimize"))
    assert t.source == "trials.db" and len(t) == 11
    assert t.direction == "minimize" and t.objective == "rmse"
    assert t.log_scale == {"schedule.lr_max"} and t.scales_known
    assert t.fixed == {"schedule.epochs": 3, "study": "x"}
    assert t.job_dirs[0] == tmp_path / "sweep" / "0"
    enc = encode(t, t.direction)
    kinds = {f.name: (f.kind, f.log) for f in enc.features}
    # wd spans 1.9 decades but the sweep declared it linear: it stays linear
    assert kinds == {"schedule.lr_max": ("numeric", True), "schedule.wd": ("numeric", False),
                     "arch": ("categorical", False)}
    assert enc.y[-1] == 1.0  # the diverged trial: the worst (highest) rmse
    assert enc.policy["dropped"] == {"failed": 1, "running": 1}


def test_outcome_policies():
    values = np.array([0.2, 0.9, np.nan, np.nan, 0.5])
    status = ("completed", "completed", "diverged", "failed", "completed")
    y, keep, policy = outcomes(values, status, "maximize", "worst")
    np.testing.assert_array_equal(keep, [True, True, True, False, True])
    assert y[2] == 0.2 and policy["worst"] == 0.2 and policy["dropped"] == {"failed": 1}
    y, keep, policy = outcomes(values, status, "minimize", "worst")
    assert y[2] == 0.9
    y, keep, policy = outcomes(values, status, "maximize", "drop")
    np.testing.assert_array_equal(keep, [True, True, False, False, True])
    assert policy["dropped"] == {"diverged": 1, "failed": 1} and "left out" in policy["text"]
    with pytest.raises(MetaError, match="--diverged"):
        outcomes(values, status, "maximize", "zero")


@pytest.mark.parametrize(("values", "declared", "known", "kind", "log"), [
    ([1e-4, 1e-3, 1e-1], False, False, "numeric", True),   # spans 3 decades
    ([1.0, 2.6, 5.0], False, False, "numeric", False),      # less than a decade
    ([1.0, 2.6, 5.0], True, True, "numeric", True),         # declared tag(log, ...)
    ([0.001, 0.05, 0.1], False, True, "numeric", False),    # declared linear
    ([0.0, 0.5, 1.0], False, False, "numeric", False),      # zero: no log
    ([32, 64, 128], False, False, "numeric", False),        # integers (a range)
    (["cnn", "resnet18"], False, False, "categorical", False),
    ([True, False], False, False, "categorical", False),
    ([[16, 32], [8, 16]], False, False, "categorical", False),
])
def test_feature_scales(values, declared, known, kind, log):
    f = describe_feature("p", values, declared, known)
    assert (f.kind, f.log) == (kind, log)
    x = f.to_x(values)
    assert x.shape == (len(values),)
    back = f.from_x(x)
    if f.numeric:
        np.testing.assert_allclose(back, values)
    else:
        assert list(back) == [label(v) for v in values]


def test_constant_parameter_is_not_a_feature():
    assert describe_feature("p", [3, 3, 3], False) is None


def test_recommend_peak_flat_and_gain():
    f = describe_feature("schedule.lr_ratio", [1.0, 10.0], True, True)
    grid = np.linspace(0, 1, 21)  # log10 of 1..10
    peak = -((grid - np.log10(2.6)) ** 2)  # (G,)
    rng = np.random.default_rng(0)
    boot = peak + 0.002 * rng.normal(size=(50, 21))
    r = recommend(f, grid, peak, boot, 1.0, 0.9, neutral=1.0, reference=2.6,
                  importance=(0.3, 0.05), objective="accuracy")
    # Measured (numpy default_rng(0); no torch, no threads): interval up to 2.82 (2.6 is 0.22
    # inside), gain 0.172 with interval from 0.169, over the bar 0.
    assert r["clear_optimum"] and r["interval"][0] <= 2.6 <= r["interval"][1]
    assert r["reference_inside"] and r["gain"] > 0 and r["gain_interval"][0] > 0
    assert math.isclose(r["predicted_neutral"], peak[0])
    flat = np.zeros(21)
    r = recommend(f, grid, flat, 0.01 * rng.normal(size=(50, 21)), 1.0, 0.9, neutral=1.0,
                  importance=(0.001, 0.004))
    assert not r["clear_optimum"] and r["verdict"].startswith("no clear optimum")
    # minimising: the best value is the curve's minimum
    r = recommend(f, grid, -peak, -boot, -1.0, 0.9, importance=(0.3, 0.05))
    assert r["interval"][0] <= 2.6 <= r["interval"][1]
