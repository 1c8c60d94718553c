"""A fastlab sweep in MLflow (one parent, a child per trial; a resume adds none) and in
TensorBoard's HParams tab (one session per trial, read back with tensorboard's event reader)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.tracking.conftest import experiment_runs

require("mlflow")

TRAIN = Path(sys.executable).with_name("fastlab-train")
TINY = ["data.size=16", "arch.channels=[8,16]", "arch.head_hidden=16", "schedule.epochs=1",
        "trainer.progress=none", "trainer.plots=false", "trainer.save_model=false"]


def sweep(sweep_dir: Path, uri: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(TRAIN), "-m", "hydra/sweeper=fastlab", f"hydra.sweep.dir={sweep_dir}",
           "hydra.sweeper.strategy=random", "hydra.sweeper.n_trials=4", "hydra.sweeper.seed=0",
           "schedule.lr_max=tag(log, interval(1e-3, 1e-1))", "data.classes=[0,1]",
           "data.train_per_class=10", *TINY, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=uri)
    proc = subprocess.run(cmd, cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_a_sweep_is_a_parent_run_with_a_child_per_trial_and_a_resume_adds_none(tmp_path, store_uri):
    import mlflow
    import yaml

    sweep_dir = tmp_path / "sweep"
    args = ["trainer.logger=[csv,tensorboard,mlflow]", "trainer.mlflow.experiment=sweep4"]
    sweep(sweep_dir, store_uri, *args)
    runs = experiment_runs(store_uri, "sweep4")
    parents = [r for r in runs if r.data.tags.get("fastlab.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("fastlab.role") == "trial"]
    assert len(parents) == 1 and len(children) == 4 and len(runs) == 5
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space.schedule.lr_max"] == "tag(log, interval(0.001, 0.1))"
    assert parent.data.tags["fastlab.strategy"] == "random" and parent.data.params["direction"] == "maximize"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["fastlab.trial"] for c in children) == ["0", "1", "2", "3"]
    assert {c.data.tags["fastlab.status"] for c in children} == {"completed"}
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert parent.data.metrics["best_value"] == pytest.approx(best["value"])
    artifacts = {f.path for f in mlflow.MlflowClient(store_uri).list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "trials.csv"} <= artifacts
    lrs = {float(c.data.params["schedule.lr_max"]) for c in children}
    assert len(lrs) == 4  # the trial's own config, as params

    sweep(sweep_dir, store_uri, *args)  # the same command again: a resume with nothing to run
    again = experiment_runs(store_uri, "sweep4")
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in runs)

    # TensorBoard's HParams: one session per trial, with the searched key and the objective
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    root = EventAccumulator(str(sweep_dir / "hparams"))
    root.Reload()
    experiment = metadata.parse_experiment_plugin_data(
        root.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == ["schedule.lr_max"]
    assert [m.name.tag for m in experiment.metric_infos] == ["hparams/accuracy"]
    sessions = sorted(p for p in (sweep_dir / "hparams").iterdir() if p.is_dir())
    assert [p.name for p in sessions] == ["0", "1", "2", "3"]  # a resume rewrote them, once each
    seen = {}
    for path in sessions:
        events = EventAccumulator(str(path))
        events.Reload()
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        (value,) = events.Scalars("hparams/accuracy")
        seen[start.hparams["schedule.lr_max"].number_value] = value.value
    assert sorted(seen) == pytest.approx(sorted(lrs))
    trials = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert max(seen.values()) == pytest.approx(trials["value"])



def test_trials_in_joblib_worker_processes_find_their_parent_run(tmp_path, store_uri):
    """Each worker process finds the sweep's parent by its tag: no state passed from the driver."""
    sweep_dir = tmp_path / "joblib"
    cmd = [sys.executable, str(Path(__file__).with_name("planted_app.py")), "-m", f"hydra.sweep.dir={sweep_dir}",
           "trainer.mlflow.experiment=joblib", "hydra.sweeper.n_trials=4", "schedule.lr_ratio=tag(log, interval(1, 10))",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=store_uri)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trainer.logger=mlflow" not in proc.stdout + proc.stderr  # no tracker warning
    runs = experiment_runs(store_uri, "joblib")
    (parent,) = [r for r in runs if r.data.tags.get("fastlab.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("fastlab.role") == "trial"]
    assert len(children) == 4 and {c.data.tags.get("mlflow.parentRunId") for c in children} == {parent.info.run_id}


def test_a_sweep_whose_study_lives_in_postgresql_is_tracked_like_one_in_sqlite(tmp_path, store_uri, postgres_url):
    """No trials.db in the sweep dir (its storage.json names the study): the parent run still
    ends with the sweep's results, the trials nest under it, and the HParams summary is written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    sweep_dir = tmp_path / "pg"
    sweep(sweep_dir, store_uri, "trainer.logger=[csv,tensorboard,mlflow]", "trainer.mlflow.experiment=pg4",
          f"hydra.sweeper.storage='{postgres_url}'")  # quoted: = and ? in it
    assert not (sweep_dir / "trials.db").exists() and (sweep_dir / "storage.json").is_file()
    runs = experiment_runs(store_uri, "pg4")
    (parent,) = [r for r in runs if r.data.tags.get("fastlab.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("fastlab.role") == "trial"]
    assert parent.info.status == "FINISHED" and parent.data.tags["fastlab.status"] == "completed"
    assert parent.data.metrics["trials.completed"] == 4 and "best_value" in parent.data.metrics
    assert len(children) == 4 and {c.data.tags.get("mlflow.parentRunId") for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["fastlab.trial"] for c in children) == ["0", "1", "2", "3"]
    root = EventAccumulator(str(sweep_dir / "hparams"))
    root.Reload()
    experiment = metadata.parse_experiment_plugin_data(
        root.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == ["schedule.lr_max"]
    assert sorted(p.name for p in (sweep_dir / "hparams").iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
