"""The sweeper with fastlab-train: every study preset composes, and real multiruns of short
trainings with the basic, joblib and submitit_local launchers."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space
from fastlab.sweep.strategies import grid_size

ROOT = Path(__file__).resolve().parents[1]
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
    settings = SweepSettings(**sweeper).validate()
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
