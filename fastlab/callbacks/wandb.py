"""WandbLogger: a run as a Weights & Biases run (``trainer.logger=[..., wandb]``).

What it logs (``trainer.wandb``: ``project``, ``entity``, ``mode``; see
``fastlab.tracking.wandb_run`` for the run's id, its group and how it starts):

- at the first fit: the run's resolved config (``RunConfig.to_dict()``) as the W&B config; a
  sweep's trial (``RunContext.trial``) joins its sweep's group with ``job_type`` ``trial``;
- after each epoch: the Recorder's numbers (``train_loss``, ``valid_loss``, the metrics, ``lr``)
  at step = the epoch (numbered from 0 across stages, as in ``history.csv``);
- after ``metrics.json`` is written (``finish``): its final numbers into the run's summary
  (``objective``, ``final.*``, ``best.*``, ``epochs``, ``seconds.*``, as MLflow gets them) with
  ``status``, ``objective_name`` and ``direction``; the run dir's files that exist
  (``metrics.json``, ``history.csv``, ``model.pt``, ``plots/``) as one artifact of type
  ``run-dir``; then the W&B run ends (exit code 1 for a failed run).

W&B keeps its own files where it always does (``$WANDB_DIR``, else ``./wandb``); nothing goes
into the run dir. A failing W&B (no login, no network) is one warning and the run goes on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from fastlab.callbacks.tracker import Tracker
from fastlab.context import Trial
from fastlab.tracking import wandb_run
from fastlab.tracking.record import ARTIFACT_DIRS, ARTIFACT_FILES, final_metrics, finite


class WandbLogger(Tracker):
    """Logs the run to W&B; see the module docstring. ``cfg`` is ``trainer.wandb``, ``config``
    the run's resolved config, ``trial`` the sweep trial the run is (None for a run alone)."""

    tracker = "wandb"
    order = 58  # after the Recorder (50) has written the epoch's row

    def __init__(self, cfg: Any, run_dir: str | Path, config: dict | None, trial: Trial | None = None):
        super().__init__()
        self.cfg, self.run_dir, self.config, self.trial = cfg, Path(run_dir), config or {}, trial
        self.run: Any = None

    def before_fit(self) -> None:
        if self.run is None:
            self.guarded(f"starting the run in project {self.cfg.project}", self._start)

    def _start(self) -> None:
        run_dir = self.run_dir.resolve()
        group = job_type = None
        name, tags = run_dir.name, []
        if self.trial is not None:
            sweep_dir = self.trial.sweep_dir.resolve()
            group, job_type = wandb_run.sweep_group(sweep_dir), wandb_run.JOB_TRIAL
            where = str(run_dir.relative_to(sweep_dir)) if run_dir.is_relative_to(sweep_dir) else run_dir.name
            name = f"{sweep_dir.name}/{where}"
            if self.trial.number is not None:
                tags.append(f"trial-{self.trial.number}")
        self.run = wandb_run.start_run(self.cfg.project, self.cfg.entity, self.cfg.mode, path=run_dir, name=name,
                                       config=self.config, group=group, job_type=job_type, tags=tags)

    def after_epoch(self) -> None:
        if self.run is not None and self.learn.recorder.history:  # the Recorder's row of this epoch
            self.guarded("logging an epoch's metrics", self._log_row, self.learn.recorder.history[-1])

    def _log_row(self, row: dict[str, Any]) -> None:
        values = {k: float(v) for k, v in row.items() if k not in ("epoch", "seconds") and finite(v)}
        if values:
            self.run.log(values, step=int(row.get("epoch", 0)))

    def finish(self, run_dir: Path) -> None:
        if self.run is None or self.broken:
            return
        from fastlab.rundir.metrics_json import read_metrics

        doc: dict[str, Any] = {}
        with contextlib.suppress(ValueError):  # an unreadable metrics.json: recorded as a failed run
            doc = read_metrics(run_dir) or {}
        summary: dict[str, Any] = dict(final_metrics(doc))
        summary["status"] = str(doc.get("status", "failed"))
        for key in ("objective_name", "direction", "error"):
            if isinstance(doc.get(key), str):
                summary[key] = doc[key][:5000]
        self.run.summary.update(summary)
        # only what the run wrote: a cheap trial writes no model.pt
        wandb_run.log_files(self.run, f"rundir-{self.run.id}", "run-dir",
                            [(name, run_dir / name) for name in (*ARTIFACT_FILES, *ARTIFACT_DIRS)])
        self.run.finish(exit_code=1 if summary["status"] == "failed" else 0)
