"""MlflowLogger: a run as an MLflow run (``trainer.logger=[..., mlflow]``).

What it logs, all through ``MlflowClient`` (no global active run, so worker processes and
in-process launchers alike are safe):

- at the first fit: the run's resolved config as params (``fastlab.tracking.mlflow_store
  .flat_params``), tags naming the run dir; a sweep's trial is nested under its sweep's parent run;
- after each epoch: the Recorder's numbers (``train_loss``, ``valid_loss``, the metrics, ``lr``)
  at step = the epoch (numbered from 0 across stages, as in ``history.csv``);
- after ``metrics.json`` is written (``finish``): its ``objective``, ``final.*``, ``best.*``,
  ``epochs`` and ``seconds.*``; its status as the tag ``fastlab.status``; and as artifacts the
  run dir's files that exist (``metrics.json``, ``history.csv``, ``model.pt``, ``plots/``).
  It writes nothing of its own into the run dir.

A run dir has one MLflow run: a resumed run (``trainer.resume``) or an ``auto_bs`` retry goes on
logging into the run its dir already has.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastlab.callbacks.tracker import Tracker
from fastlab.sweepdir import sweep_dir_of
from fastlab.tracking import mlflow_store as store
from fastlab.tracking.record import ARTIFACT_DIRS, ARTIFACT_FILES, final_metrics, finite


class MlflowLogger(Tracker):
    """Logs the run to MLflow; see the module docstring. ``config`` is the run's resolved
    config (``RunConfig.to_dict()``), logged as params."""

    tracker = "mlflow"
    order = 58  # after the Recorder (50) has written the epoch's row

    def __init__(self, cfg: Any, run_dir: str | Path, config: dict | None):
        super().__init__()
        self.cfg, self.run_dir, self.config = cfg, Path(run_dir), config or {}
        self.client: Any = None
        self.run_id: str | None = None

    def before_fit(self) -> None:
        if self.run_id is None:
            self.guarded(f"starting the run at {store.tracking_uri(self.cfg.uri)[0]}", self._start)

    def _start(self) -> None:
        from mlflow.entities import RunStatus

        client, experiment = store.connect(self.cfg.uri, self.cfg.experiment)
        run_dir = self.run_dir.resolve()
        run = store.find_run(client, experiment, {store.TAG_RUN_DIR: str(run_dir)})
        if run is None:
            tags = {store.TAG_RUN_DIR: str(run_dir), store.TAG_ROLE: "run", store.TAG_STATUS: "running"}
            name = run_dir.name
            sweep_dir = sweep_dir_of(run_dir)
            if sweep_dir is not None:
                tags.update({store.TAG_ROLE: "trial", store.TAG_SWEEP_DIR: str(sweep_dir)})
                name = f"{sweep_dir.name}/{run_dir.relative_to(sweep_dir)}"
                parent = store.find_run(client, experiment, {store.TAG_SWEEP_DIR: str(sweep_dir),
                                                             store.TAG_ROLE: "sweep"})
                if parent is not None:
                    tags[store.TAG_PARENT] = parent.info.run_id
            run = client.create_run(experiment, tags=tags, run_name=name)
        else:
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            client.set_tag(run.info.run_id, store.TAG_STATUS, "running")
        self.client, self.run_id = client, run.info.run_id
        store.log_params(client, run, store.flat_params(self.config))

    def after_epoch(self) -> None:
        history = self.learn.recorder.history
        if self.run_id is None or not history:
            return
        self.guarded("logging an epoch's metrics", self._log_row, history[-1])

    def _log_row(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row.get("epoch", 0))
        metrics = [Metric(k, float(v), now, step) for k, v in row.items()
                   if k not in ("epoch", "seconds") and finite(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path) -> None:
        if self.run_id is None or self.broken:
            return
        from mlflow.entities import Metric, RunStatus, RunTag

        from fastlab.rundir.metrics_json import read_metrics

        try:
            doc = read_metrics(run_dir) or {}
        except ValueError:
            doc = {}
        now = int(time.time() * 1000)
        step = max(int(doc.get("epochs") or 0) - 1, 0)
        metrics = [Metric(k, v, now, step) for k, v in final_metrics(doc).items()]
        status = str(doc.get("status", "failed"))
        tags = {store.TAG_STATUS: status}
        for key, tag in (("objective_name", store.TAG_OBJECTIVE), ("direction", store.TAG_DIRECTION)):
            if isinstance(doc.get(key), str):
                tags[tag] = doc[key]
        if isinstance(doc.get("error"), str):
            tags["fastlab.error"] = doc["error"][:5000]
        self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        for name in ARTIFACT_FILES:  # only what the run wrote: a cheap trial writes no model.pt
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        for name in ARTIFACT_DIRS:
            if (run_dir / name).is_dir() and any((run_dir / name).iterdir()):
                self.client.log_artifacts(self.run_id, str(run_dir / name), name)
        ended = RunStatus.FAILED if status == "failed" else RunStatus.FINISHED
        self.client.set_terminated(self.run_id, RunStatus.to_string(ended))
