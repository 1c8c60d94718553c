"""A run with trainer.logger=[csv,mlflow], read back from MLflow's own store."""

from __future__ import annotations

import json
import logging

import pytest

from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread, require
from tests.tracking.conftest import experiment_runs

require("mlflow")


def test_a_run_is_an_mlflow_run_with_params_metrics_by_step_and_artifacts(tmp_path, in_store_root, store_uri):
    run_dir = tmp_path / "run"
    with one_thread():
        metrics = train(compose_cfg("trainer.logger=[csv,mlflow]", "trainer.mlflow.experiment=single",
                                    "trainer.plots=true", "schedule.epochs=3"), run_dir=run_dir)
    assert metrics["status"] == "completed"
    assert (in_store_root / "outputs" / "mlruns" / "mlflow.db").is_file()  # the default store
    (run,) = experiment_runs(store_uri, "single")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["schedule.epochs"] == "3" and params["arch.channels"] == "[16, 32]"
    assert params["trainer.plots"] == "true" and params["task.name"] == "classify"
    tags = run.data.tags
    assert tags["fastlab.run_dir"] == str(run_dir.resolve()) and tags["fastlab.status"] == "completed"
    assert tags["fastlab.objective_name"] == metrics["objective_name"]
    # per-epoch metrics with their steps, and metrics.json's final values
    import mlflow

    client = mlflow.MlflowClient(store_uri)
    history = client.get_metric_history(run.info.run_id, "valid_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["objective"] == pytest.approx(doc["objective"])
    assert run.data.metrics["final.valid_loss"] == pytest.approx(doc["final"]["valid_loss"])
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "history.csv", "model.pt", "plots"} <= artifacts
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/losses.png" in plots and "plots/lr.png" in plots


def test_a_run_that_writes_no_model_or_plots_logs_none(tmp_path, store_uri, store_root):
    run_dir = tmp_path / "cheap"
    with one_thread():
        train(compose_cfg("trainer.logger=[mlflow]", f"trainer.mlflow.uri={store_uri}",
                          "trainer.mlflow.experiment=cheap", "trainer.save_model=false",
                          "schedule.epochs=1"), run_dir=run_dir)
    (run,) = experiment_runs(store_uri, "cheap")
    import mlflow

    artifacts = {f.path for f in mlflow.MlflowClient(store_uri).list_artifacts(run.info.run_id)}
    assert "model.pt" not in artifacts and "plots" not in artifacts and "metrics.json" in artifacts
    # beside the SQLite file, not in a ./mlruns of whatever directory the run started in
    assert str(store_root / "outputs" / "mlruns" / "artifacts") in run.info.artifact_uri


def test_an_unreachable_tracking_server_is_one_warning_and_a_completed_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    caplog.set_level(logging.WARNING, logger="fastlab")
    with one_thread():
        metrics = train(compose_cfg("trainer.logger=[csv,mlflow]", "trainer.mlflow.uri=http://127.0.0.1:9",
                                    "schedule.epochs=2"), run_dir=tmp_path)
    assert metrics["status"] == "completed" and (tmp_path / "history.csv").is_file()
    lines = [r.getMessage() for r in caplog.records if "trainer.logger=mlflow" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0] and "the run" in lines[0]
