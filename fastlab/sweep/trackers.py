"""A fastlab sweep in the trackers its trials log to: MLflow's parent run, TensorBoard's HParams,
W&B's group and summary run.

``fastlab.sweep.hydra_glue`` calls :func:`open_sweep` before the driver runs and
:func:`close_sweep` after it (in ``finally``); nothing here is needed for a sweep to run, and a
tracker that fails is one warning.

- **MLflow** (``mlflow`` in the composed ``trainer.logger``): one parent run per sweep dir,
  tagged with the absolute sweep dir and the role ``sweep``, found again by that tag when the
  sweep resumes (so a resume adds no parent). Its params are the search space (``space.<key>``:
  the override's form) and the direction; tags the strategy and ``n_trials``. Each trial's
  ``MlflowLogger`` nests itself under it (``fastlab.sweepdir.sweep_dir_of``). At
  the end the parent gets ``best.yaml``, ``trials.csv`` and fastlab-meta's report
  (``analysis/report/markdown.md``, ``summary.json``, its PNGs) when present, the metrics ``best_value`` and
  ``trials.<status>``, and each child run the tags ``fastlab.trial`` and ``fastlab.status``
  as ``trials.db`` has them (a trial the job never finished shows its real status).
- **TensorBoard** (``tensorboard`` in it): ``fastlab.tracking.hparams.write_hparams``.
- **W&B** (``wandb`` in it): each trial's ``WandbLogger`` joins the sweep's group
  (``fastlab.tracking.wandb_run.sweep_group``: from the sweep dir, which its ``RunContext.trial``
  names) with ``job_type`` ``trial``. At the end one summary run of that group (``job_type``
  ``summary``, named after the sweep dir; the same W&B run again when the sweep resumes): the
  search space, direction, strategy and ``n_trials`` as its config; ``best_value``,
  ``best_trial``, ``best_params``, the best trial's ``metrics.json`` numbers (``best.final.*``,
  ...) and ``trials.<status>`` in its summary; ``best.yaml``, ``trials.csv`` and fastlab-meta's
  report as an artifact of type ``sweep``. Nothing of W&B runs during the sweep in the driver
  (an in-process launcher's trials start their own W&B runs there).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fastlab.errors import ConfigError
from fastlab.sweep.errors import SweepError
from fastlab.sweepdir import is_sweep_dir, trials_db
from fastlab.tracking import mlflow_store as store
from fastlab.tracking import wandb_run
from fastlab.tracking.names import parse_loggers, require_packages
from fastlab.tracking.record import final_metrics

log = logging.getLogger(__name__)

META_FILES = ("report.md", "summary.json")


@dataclass
class SweepTracking:
    """What :func:`open_sweep` started, for :func:`close_sweep`."""

    sweep_dir: Path
    loggers: tuple[str, ...] = ()
    objective: str = "objective"
    client: Any = None
    experiment: str | None = None
    run_id: str | None = None
    wandb: dict[str, Any] | None = None  # trainer.wandb's project, entity, mode; the summary run's config
    failed: set[str] = field(default_factory=set)  # trackers that failed: no more calls to them

    def guarded(self, tracker: str, what: str, f, *args) -> Any:
        if tracker in self.failed:
            return None
        try:
            return f(*args)
        except Exception as e:  # the sweep goes on: trials.db and the job dirs have it all
            from fastlab.callbacks.tracker import first_line  # (the callbacks package loads torch)

            self.failed.add(tracker)
            log.warning(f"trainer.logger={tracker}: {what} failed ({first_line(e)}); the sweep goes on "
                        f"without {tracker} (trials.db and the job dirs have everything)")
            return None


def _select(config: Any, key: str, default: Any = None) -> Any:
    try:
        value = OmegaConf.select(config, key, default=default, throw_on_missing=False)
    except Exception:  # an interpolation only a job can resolve
        return default
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def open_sweep(config: Any, sweep_dir: str | Path, space: Any, settings: Any) -> SweepTracking:
    """Start (or, resuming, find) the sweep's MLflow parent run when the trials log to MLflow.
    A logger whose package is missing is a ``SweepError`` line, before any trial runs."""
    tracking = SweepTracking(Path(sweep_dir).resolve())
    try:
        tracking.loggers = parse_loggers(_select(config, "trainer.logger", ["csv"]),
                                         bool(_select(config, "trainer.callbacks.csv_logger", True)))
    except ConfigError:  # not fastlab's trainer.logger (another app's), or a typo each job reports
        return tracking
    try:
        require_packages(tracking.loggers)
    except ConfigError as e:
        raise SweepError(str(e)) from None
    tracking.objective = str(_select(config, "task.objective", "objective") or "objective")
    if "mlflow" in tracking.loggers:
        uri = _select(config, "trainer.mlflow.uri")
        experiment = str(_select(config, "trainer.mlflow.experiment", "fastlab") or "fastlab")
        tracking.guarded("mlflow", f"starting the sweep's run at {store.tracking_uri(uri)[0]}",
                         _start_parent, tracking, uri, experiment, space, settings)
    if "wandb" in tracking.loggers:  # the summary run starts at the end: the trials may run in this process
        summary_config = {"space": {d["name"]: d["form"] for d in (d.describe() for d in space.dims)},
                          "fixed": list(space.fixed), "direction": str(settings.direction),
                          "strategy": str(settings.strategy), "n_trials": settings.n_trials,
                          "sweep_dir": str(tracking.sweep_dir)}
        tracking.wandb = {"project": str(_select(config, "trainer.wandb.project", "fastlab") or "fastlab"),
                          "entity": _select(config, "trainer.wandb.entity"),
                          "mode": _select(config, "trainer.wandb.mode"), "config": summary_config}
    return tracking


def _start_parent(tracking: SweepTracking, uri: str | None, experiment: str, space: Any, settings: Any) -> None:
    from mlflow.entities import RunStatus, RunTag

    client, exp = store.connect(uri, experiment)
    key = {store.TAG_SWEEP_DIR: str(tracking.sweep_dir), store.TAG_ROLE: "sweep"}
    run = store.find_run(client, exp, key)
    if run is None:
        run = client.create_run(exp, tags=key, run_name=tracking.sweep_dir.name)
    else:
        client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    tracking.client, tracking.experiment, tracking.run_id = client, exp, run.info.run_id
    params = {f"space.{d['name']}": d["form"] for d in (d.describe() for d in space.dims)}
    params["direction"] = str(settings.direction)
    if space.fixed:
        params["fixed"] = " ".join(space.fixed)[: store.MAX_PARAM_CHARS]
    store.log_params(client, run, params)
    tags = {"fastlab.strategy": str(settings.strategy), "fastlab.n_trials": str(settings.n_trials),
            store.TAG_DIRECTION: str(settings.direction), store.TAG_STATUS: "running"}
    client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def close_sweep(tracking: SweepTracking, ok: bool) -> None:
    """After the driver (``ok``: it returned): the HParams summary, the parent run's end, the
    W&B summary run."""
    readers = [name for name, on in (("tensorboard", "tensorboard" in tracking.loggers),
                                      ("mlflow", tracking.run_id is not None),
                                      ("wandb", tracking.wandb is not None)) if on]
    if not is_sweep_dir(tracking.sweep_dir) or not readers:
        return  # nothing to write: no trial was recorded, or the sweep's trials log to none of them
    from fastlab.sweep.store import read_sweep

    db = trials_db(tracking.sweep_dir)  # or the PostgreSQL study its storage.json names

    record = tracking.guarded(readers[0], "reading trials.db", read_sweep, db)
    if record is None:
        return
    objective = next((t.metrics["objective_name"] for t in record.trials
                      if t.metrics and isinstance(t.metrics.get("objective_name"), str)), tracking.objective)
    if "tensorboard" in tracking.loggers:
        from fastlab.tracking.hparams import write_hparams

        names = [d["name"] for d in (record.space or {}).get("dims", [])] or sorted(
            {k for t in record.trials for k in t.params})
        tracking.guarded("tensorboard", "writing the HParams summary", write_hparams, tracking.sweep_dir,
                         names, record.trials, objective)
    if tracking.run_id is not None:
        tracking.guarded("mlflow", "ending the sweep's run", _end_parent, tracking, record, ok)
    if tracking.wandb is not None:
        tracking.guarded("wandb", "writing the sweep's summary run", _wandb_summary, tracking, record, ok)


def _sweep_files(sweep_dir: Path) -> list[Path]:
    """What a sweep's tracker keeps of its dir: ``best.yaml``, ``trials.csv`` and fastlab-meta's
    report (``meta/``: ``report.md``, ``summary.json``, PNGs), those that exist."""
    files = [sweep_dir / name for name in ("best.yaml", "trials.csv") if (sweep_dir / name).is_file()]
    meta = sweep_dir / "meta"
    return files + [path for path in (sorted(meta.glob("*")) if meta.is_dir() else [])
                    if path.is_file() and (path.name in META_FILES or path.suffix == ".png")]


def _end_parent(tracking: SweepTracking, record: Any, ok: bool) -> None:
    from mlflow.entities import Metric, RunStatus, RunTag

    from fastlab.sweep.results import best_trials, counts

    client, run_id, sweep_dir = tracking.client, tracking.run_id, tracking.sweep_dir
    by_dir = {str((sweep_dir / t.job_dir).resolve()): t for t in record.trials if t.job_dir}
    children = client.search_runs([tracking.experiment], f"tags.`{store.TAG_PARENT}` = '{run_id}'",
                                  max_results=50000)
    for child in children:
        trial = by_dir.get(child.data.tags.get(store.TAG_RUN_DIR, ""))
        if trial is not None:
            client.log_batch(child.info.run_id, tags=[RunTag(store.TAG_TRIAL, str(trial.number)),
                                                      RunTag(store.TAG_STATUS, trial.status)])
    sign = 1.0 if record.direction != "minimize" else -1.0
    best = best_trials(record.trials, sign, 1)
    metrics = {f"trials.{k}": float(v) for k, v in counts(record.trials).items()}
    if best:
        metrics["best_value"] = float(best[0].value)
    client.log_batch(run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()],
                     tags=[RunTag(store.TAG_STATUS, "completed" if ok else "failed")])
    for path in _sweep_files(sweep_dir):
        client.log_artifact(run_id, str(path), "meta" if path.parent != sweep_dir else None)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))


def _wandb_summary(tracking: SweepTracking, record: Any, ok: bool) -> None:
    from fastlab.sweep.results import best_trials, counts

    target, sweep_dir = tracking.wandb, tracking.sweep_dir
    run = wandb_run.start_run(target["project"], target["entity"], target["mode"], path=sweep_dir,
                              name=sweep_dir.name, config=target["config"], group=wandb_run.sweep_group(sweep_dir),
                              job_type=wandb_run.JOB_SUMMARY)
    summary: dict[str, Any] = {f"trials.{k}": v for k, v in counts(record.trials).items()}
    summary["status"] = "completed" if ok else "failed"
    best = best_trials(record.trials, 1.0 if record.direction != "minimize" else -1.0, 1)
    if best:
        summary.update({"best_value": float(best[0].value), "best_trial": best[0].number,
                        "best_params": dict(best[0].params)})
        summary.update({f"best.{k}": v for k, v in final_metrics(best[0].metrics or {}).items()})
    run.summary.update(summary)
    wandb_run.log_files(run, f"sweep-{run.id}", "sweep",
                        [(str(p.relative_to(sweep_dir)), p) for p in _sweep_files(sweep_dir)])
    run.finish(exit_code=0 if ok else 1)
