"""The sweeper with fastlab-train: every study preset composes, and real multiruns of short
trainings with the basic, joblib and submitit_local launchers."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space
from fastlab.sweep.strategies import grid_size

ROOT = Path(__file__).resolve().parents[2]
TRAIN = Path(sys.executable).with_name("fastlab-train")
STUDIES = sorted(p.stem for p in (ROOT / "conf" / "study").glob("*.yaml"))
# A training of well under a second: 16 px digits, a two-stage CNN, one epoch.
TINY = [
    "data.size=16",
    "arch.channels=[8,16]",
    "arch.head_hidden=16",
    "schedule.epochs=1",
    "trainer.progress=none",
]


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_preset_composes_with_a_valid_sweep(study: str) -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"+study={study}"], return_hydra_config=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper)
    assert sweeper.pop("_target_") == "hydra_plugins.fastlab_sweeper.fastlab_sweeper.FastlabSweeper"
    space = parse_space(sweeper.pop("params"), [])
    settings = SweepSettings.from_config(sweeper).validate()
    assert space.dims, "a study searches something"
    if settings.strategy == "grid":
        assert grid_size(space) >= 2
    # resumable: a fixed sweep dir, not the timestamped default
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{study}"


@pytest.mark.parametrize(
    "launcher",
    [
        [],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local", "hydra.sweeper.batch_size=2"],
    ],
    ids=["basic", "joblib", "submitit_local"],
)
def test_fastlab_train_sweeps_with_each_launcher(tmp_path: Path, launcher: list[str]) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = [
        str(TRAIN),
        "-m",
        "+study=quick",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=2",
        *TINY,
        *launcher,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = sqlite3.connect(sweep_dir / "trials.db")
    trials = db.execute(
        "SELECT status, params, value, metrics, job_dir FROM trials ORDER BY number"
    ).fetchall()
    assert [t[0] for t in trials] == ["completed", "completed"]
    for _status, params, value, metrics, job_dir in trials:
        metrics = json.loads(metrics)  # the job's metrics.json, copied into the store
        assert metrics["status"] == "completed" and metrics["objective"] == pytest.approx(value)
        assert set(json.loads(params)) == {"schedule.lr_max"}
        assert (sweep_dir / job_dir / "metrics.json").exists()
    assert "best 2 of 2 trials" in proc.stdout


def test_a_regression_sweep_minimizes_rmse_without_being_told(tmp_path: Path) -> None:
    """task=regress's objective is rmse: the sweeper takes minimize from the task."""
    sweep_dir = tmp_path / "sweep"
    cmd = [
        str(TRAIN),
        "-m",
        "hydra/sweeper=fastlab",
        "task=regress",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.strategy=random",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.seed=0",
        "schedule.lr_max=tag(log, interval(1e-4, 1e-1))",
        "data.classes=[0,1,2]",
        "data.train_per_class=10",
        "trainer.plots=false",
        "trainer.save_model=false",
        *TINY,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = sqlite3.connect(sweep_dir / "trials.db")
    trials = db.execute("SELECT number, status, value FROM trials ORDER BY number").fetchall()
    recorded = db.execute("SELECT value FROM sweep WHERE key = 'direction'").fetchone()
    assert [t[1] for t in trials] == ["completed"] * 4
    assert len({t[2] for t in trials}) == 4  # four different rmses: the ranking means something
    lowest = min(trials, key=lambda t: t[2])
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["direction"] == "minimize" and json.loads(recorded[0]) == "minimize"
    assert best["number"] == lowest[0] and best["value"] == pytest.approx(lowest[2])
    assert "best 4 of 4 trials (minimize; 4 completed" in proc.stdout
    assert "direction: minimize (from task.objective=rmse of task regress)" in proc.stderr + proc.stdout
