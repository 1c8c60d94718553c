"""trainer.logger=[..., wandb]: a run and a sweep as W&B runs, in W&B's offline mode, read back
from the offline runs' own record logs (``tests.tracking.conftest.wandb_offline_runs``)."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastlab.callbacks.factory import build_callbacks
from fastlab.config import TrainerConfig, to_run_config
from fastlab.context import RunContext, Trial
from fastlab.errors import ConfigError
from fastlab.run.train import train
from fastlab.run.trial import trial_profile
from fastlab.tasks import get_task
from fastlab.tracking.wandb_run import sweep_group
from tests.conftest import compose_cfg, one_thread, require
from tests.tracking.conftest import wandb_offline_runs

wandb = require("wandb")

TRAIN = Path(sys.executable).with_name("fastlab-train")
TINY = ["data.size=16", "arch.channels=[8,16]", "arch.head_hidden=16", "schedule.epochs=1",
        "trainer.progress=none", "trainer.plots=false", "trainer.save_model=false"]


@pytest.fixture(autouse=True)
def fresh_wandb():
    """W&B reads its environment once per process (its setup singleton): each test starts a new
    one, so the environment the test sets is the one W&B sees."""
    wandb.teardown()
    yield
    wandb.teardown()


def test_a_run_is_a_wandb_run_with_its_config_epochs_by_step_final_metrics_and_files(tmp_path, wandb_offline):
    run_dir = tmp_path / "run"
    cfg = compose_cfg("trainer.logger=[csv,wandb]", "trainer.wandb.project=single", "trainer.plots=true",
                      "schedule.epochs=3")
    with one_thread():
        metrics = train(cfg, run_dir=run_dir)
    assert metrics["status"] == "completed"
    (run,) = wandb_offline_runs(wandb_offline)
    assert run["name"] == "run" and run["group"] == "" and run["job_type"] == "" and run["exit_code"] == 0
    # the resolved run config, as the run trained with it
    resolved = json.loads(json.dumps(trial_profile(to_run_config(cfg), RunContext()).to_dict()))
    assert {k: v for k, v in run["config"].items() if k != "_wandb"} == resolved
    # one history row per epoch, at step = epoch, with history.csv's values
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [h["_step"] for h in run["history"]] == [0, 1, 2] == [int(r["epoch"]) for r in rows]
    for logged, row in zip(run["history"], rows, strict=True):
        for key in ("train_loss", "valid_loss", "accuracy", "lr"):
            assert logged[key] == pytest.approx(float(row[key]), rel=1e-12)
    # metrics.json's final numbers in the summary
    doc = json.loads((run_dir / "metrics.json").read_text())
    summary = run["summary"]
    assert summary["objective"] == pytest.approx(doc["objective"])
    assert summary["final.valid_loss"] == pytest.approx(doc["final"]["valid_loss"])
    assert summary["epochs"] == 3 and summary["status"] == "completed"
    assert summary["objective_name"] == doc["objective_name"] and summary["direction"] == doc["direction"]
    # the run dir's files, as one artifact
    ((kind, paths),) = run["artifacts"].values()
    assert kind == "run-dir"
    assert {"metrics.json", "history.csv", "model.pt", "plots/losses.png", "plots/lr.png"} <= set(paths)
    assert not any(p.name.startswith("wandb") for p in run_dir.iterdir())  # nothing of W&B's in the run dir


def test_an_online_wandb_without_a_login_is_one_warning_and_a_completed_run(tmp_path, monkeypatch, caplog):
    """No API key, no ~/.netrc: W&B would ask on a terminal; fastlab warns once and trains on."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for key in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_CONFIG_DIR", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    caplog.set_level(logging.WARNING, logger="fastlab")
    run_dir = tmp_path / "run"
    with one_thread():
        metrics = train(compose_cfg("trainer.logger=[csv,wandb]", "trainer.wandb.mode=online", "schedule.epochs=2"),
                        run_dir=run_dir)
    assert metrics["status"] == "completed" and (run_dir / "metrics.json").is_file()
    assert len(list(csv.DictReader((run_dir / "history.csv").open()))) == 2
    lines = [r.getMessage() for r in caplog.records if "trainer.logger=wandb" in r.getMessage()]
    assert len(lines) == 1 and "wandb login" in lines[0] and "which goes on" in lines[0]
    assert not (tmp_path / "wandb").exists() or not list((tmp_path / "wandb").glob("run-*"))  # no run started


def test_the_factory_builds_a_wandb_logger_on_rank_0_with_its_trial_and_names_the_extra(tmp_path, monkeypatch):
    from fastlab.callbacks.wandb import WandbLogger

    trial = Trial(3, tmp_path / "sweep")
    (cb,) = build_callbacks(TrainerConfig(logger=["wandb"]), tmp_path, get_task("classify"), {"config": {"a": 1}},
                            context=RunContext(trial=trial))
    assert isinstance(cb, WandbLogger) and cb.trial == trial and cb.config == {"a": 1}
    assert cb.cfg.project == "fastlab"
    assert build_callbacks(TrainerConfig(logger=["wandb"]), tmp_path, get_task("classify"), {},
                           writes=False) == []  # the other ranks of a data-parallel run log nothing
    monkeypatch.setitem(sys.modules, "wandb", None)  # as for a package that is not installed
    with pytest.raises(ConfigError, match=r"trainer.logger=wandb needs the wandb package.*'fastlab\[wandb\]'"):
        build_callbacks(TrainerConfig(logger=["csv", "wandb"]), tmp_path, get_task("classify"), {})


def sweep(sweep_dir: Path) -> None:
    cmd = [str(TRAIN), "-m", "hydra/sweeper=fastlab", f"hydra.sweep.dir={sweep_dir}",
           "hydra.sweeper.strategy=random", "hydra.sweeper.n_trials=3", "hydra.sweeper.seed=0",
           "schedule.lr_max=tag(log, interval(1e-3, 1e-1))", "data.classes=[0,1]", "data.train_per_class=10",
           "trainer.logger=[csv,wandb]", "trainer.wandb.project=sweep3", *TINY]
    proc = subprocess.run(cmd, cwd=sweep_dir.parent, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trainer.logger=wandb" not in proc.stdout + proc.stderr  # no tracker warning


def test_a_sweep_is_a_wandb_group_of_trials_and_a_summary_run_and_a_resume_adds_no_run(tmp_path, wandb_offline):
    sweep_dir = tmp_path / "sweep"
    sweep(sweep_dir)
    runs = wandb_offline_runs(wandb_offline)
    trials = sorted((r for r in runs if r["job_type"] == "trial"), key=lambda r: r["tags"])
    (summary,) = [r for r in runs if r["job_type"] == "summary"]
    assert len(trials) == 3 and len(runs) == 4
    assert {r["group"] for r in runs} == {sweep_group(sweep_dir)} and sweep_group(sweep_dir).startswith("sweep-")
    assert [r["tags"] for r in trials] == [["trial-0"], ["trial-1"], ["trial-2"]]
    assert all(r["exit_code"] == 0 and r["summary"]["status"] == "completed" for r in trials)
    lrs = [r["config"]["schedule"]["lr_max"] for r in trials]  # each trial's own resolved config
    assert len(set(lrs)) == 3
    # the summary run: the space, and the best trial as best.yaml has it
    config = summary["config"]
    assert config["space"] == {"schedule.lr_max": "tag(log, interval(0.001, 0.1))"}
    assert config["direction"] == "maximize" and config["strategy"] == "random" and config["n_trials"] == 3
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    s = summary["summary"]
    assert s["best_value"] == pytest.approx(best["value"]) and s["best_trial"] == best["number"]
    assert s["best_params"] == best["params"] and s["trials.completed"] == 3 and s["status"] == "completed"
    assert s["best.objective"] == pytest.approx(best["value"])
    assert best["params"]["schedule.lr_max"] == pytest.approx(lrs[best["number"]])
    ((kind, paths),) = summary["artifacts"].values()
    assert kind == "sweep" and {"best.yaml", "trials.csv"} <= set(paths)

    sweep(sweep_dir)  # the same command again: a resume with nothing to run
    again = wandb_offline_runs(wandb_offline)
    assert len(again) == 5 and [r["job_type"] for r in again].count("trial") == 3
    assert {r["id"] for r in again} == {r["id"] for r in runs}  # the summary logged into its own run again
