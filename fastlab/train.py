"""``fastlab-train``: compose a run from ``conf/``, train it, write its run dir.

``train(cfg)`` is importable and does the work; ``main`` is the ``@hydra.main`` wrapper, which
returns one float (the objective) so that any Hydra sweeper can optimise it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fastlab.callbacks.checkpoint import (
    LAST_CHECKPOINT,
    Checkpointer,
    epoch_start_state,
    find_resume,
)
from fastlab.callbacks.core import Callback
from fastlab.callbacks.factory import build_callbacks
from fastlab.config import RunConfig, ScheduleConfig, TrainerConfig, register_configs, to_run_config
from fastlab.diagnostics import dead_filter_fraction, diagnose
from fastlab.distributed import (
    Context,
    setup,
    teardown,
)
from fastlab.errors import FastlabError, OutputError
from fastlab.guards import OutOfMemory, deadline, free_device_memory, out_of_memory
from fastlab.learner import Learner
from fastlab.lr_find import LRFindResult
from fastlab.prepare import prepare
from fastlab.rundir import (
    clean_stale_temps,
    git_info,
    model_checkpoint,
    save_checkpoint,
    versions,
    write_history,
    write_json,
)
from fastlab.schedules import Stage, discriminative_lrs, plan_stages
from fastlab.tasks import Task

log = logging.getLogger("fastlab")


def config_dir() -> Path:
    """``fastlab/conf``: in a source checkout a link to the top-level ``conf/``, in a wheel the
    configs themselves."""
    return Path(__file__).resolve().parent / "conf"


def threads_per_job(cores: int, parallel_jobs: int) -> int:
    """Cores shared out among jobs running side by side (at least one thread each)."""
    return max(1, cores // max(1, parallel_jobs))


def parallel_jobs() -> int:
    """How many jobs of this multirun run at once on this machine: joblib's ``n_jobs`` (-1 = one
    per core); 1 for a single run or another launcher."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs", -1) or 1)
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def set_threads(threads: int | None) -> int:
    """Apply ``trainer.threads`` (or the automatic share) to torch; returns the count in use."""
    if threads is None and parallel_jobs() > 1:
        threads = threads_per_job(os.cpu_count() or 1, parallel_jobs())
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def summarize(history: list[dict], task: Task, objective: str) -> tuple[dict, dict | None]:
    """``final`` (the last epoch's values) and ``best`` (the epoch best by ``objective``)."""
    if not history:
        return {}, None
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "seconds")}
    scored = [row for row in history if _finite_or_none(row.get(objective)) is not None]
    if not scored:
        return final, None
    pick = max if task.direction(objective) == "maximize" else min
    row = pick(scored, key=lambda r: r[objective])
    best = {"epoch": row["epoch"], **{k: v for k, v in row.items() if k not in ("epoch", "lr", "seconds")}}
    return final, best


def _json_safe(obj):
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def default_run_dir() -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs/runs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def plan(learn: Learner, s: ScheduleConfig) -> tuple[list[Stage], LRFindResult | None]:
    """The schedule's stages; with ``lr_max=find`` the LR finder runs first, in the freezing of
    the first stage, and its ``schedule.suggestion`` becomes the head's rate."""
    n = len(learn.layer_groups)

    def stages(lr_max) -> list[Stage]:
        return plan_stages(s.name, s.epochs, discriminative_lrs(lr_max, n, s.lr_ratio), s.freeze_epochs,
                           s.pct_start, s.div, s.div_final, s.moms)

    if s.lr_max != "find":
        return stages(s.lr_max), None
    found = find_lr(learn, s)
    lr = found.suggestions[s.suggestion]
    log.info("lr_find: %s suggests lr_max=%.3g", s.suggestion, lr)
    return stages(lr), found


def find_lr(learn: Learner, s: ScheduleConfig) -> LRFindResult:
    """The LR finder in the freezing the schedule starts with (the head alone for fine_tune and
    gradual), since that is the training whose rate it picks."""
    first = plan_stages(s.name, s.epochs, [1.0] * len(learn.layer_groups), s.freeze_epochs)[0]
    learn.freeze_to(first.frozen)
    return learn.lr_find()


def resumed_config(saved: dict, trainer: TrainerConfig) -> RunConfig:
    """The interrupted run's own config; from the one composed now only the trainer keys that
    do not change results (resume, timeout, progress, threads) are taken."""
    run = to_run_config(saved)
    for key in ("resume", "timeout", "progress", "threads"):
        setattr(run.trainer, key, getattr(trainer, key))
    return run


def train(cfg: DictConfig | RunConfig, run_dir: str | Path | None = None, cbs: Sequence[Callback] = ()) -> dict:
    """Train one run and write its run dir; returns the contents of ``metrics.json``.

    ``cfg`` is a composed config (as Hydra gives it) or a ``RunConfig``. ``run_dir`` defaults to
    Hydra's output dir, or ``outputs/runs/<date>/<time>`` outside Hydra; with ``trainer.resume``
    the interrupted run's dir, continued from its ``last.pt``. ``cbs`` are extra callbacks for
    the Learner. Errors in the user's
    input raise ``FastlabError`` before any training; a loss that turns non-finite ends the run
    with ``status: diverged`` and a null objective.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else None
    run = cfg if isinstance(cfg, RunConfig) else to_run_config(cfg)
    ctx = setup(run.trainer.strategy, run.trainer.device)
    state, run_dir = find_resume(run.trainer.resume, run_dir)
    if state is not None:
        run, resolved = resumed_config(state["config"], run.trainer), state["config"]
        log.info("resuming the run in %s with its own config", run_dir)
    if ctx.main:  # in a data-parallel run only rank 0 writes
        run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in clean_stale_temps(run_dir):
            log.info("removed %s, left by a writer that was killed", tmp.name)
    try:
        # trainer.timeout counts from here: data, model, training and outputs, the whole job
        with deadline(run.trainer.timeout, run_dir):
            return _retrying(run, resolved, run_dir, state, ctx, cbs, start)
    except BaseException:
        teardown(ctx, barrier=False)  # a failed rank must not wait for the others
        raise
    finally:
        teardown(ctx)


def _retrying(run: RunConfig, resolved: dict | None, run_dir: Path, state: dict | None, ctx: Context,
              cbs: Sequence[Callback], start: float) -> dict:
    """``_train``, again with half the batch after each out-of-memory when ``trainer.auto_bs``."""
    tried: list[int] = []  # batch sizes that ran out of memory
    while True:
        try:
            return _train(run, resolved, run_dir, state, ctx, cbs, start, tried)
        except OutOfMemory:
            if not run.trainer.auto_bs or run.data.bs < 2 * ctx.world:
                raise
            tried.append(run.data.bs)
            run.data.bs //= 2
            if resolved is not None:
                resolved["data"]["bs"] = run.data.bs
            state = epoch_start_state(run_dir / LAST_CHECKPOINT)
            log.warning("out of memory with data.bs=%d: trainer.auto_bs retries with data.bs=%d from %s", tried[-1],
                        run.data.bs, "the last finished epoch" if state is not None else "the start")
            free_device_memory()


def _train(run: RunConfig, resolved: dict | None, run_dir: Path, state: dict | None, ctx: Context,
           cbs: Sequence[Callback], start: float, tried: list[int]) -> dict:
    """One attempt at the run (``train`` retries with a smaller batch under ``auto_bs``)."""
    objective = run.task.objective
    metrics: dict = {"status": "failed", "objective": None, "objective_name": objective}
    if tried:
        metrics["auto_bs"] = {"out_of_memory": list(tried), "bs": run.data.bs}
    try:
        metrics["threads"] = set_threads(run.trainer.threads)
        prep = prepare(run, ctx=ctx)
        learn, task, s = prep.learn, prep.task, run.schedule
        learn.add_cbs([*build_callbacks(run.trainer, run_dir, task, {**prep.meta, "config": resolved}, writes=ctx.main),
                       *cbs])
        if state is None:
            stages, found = plan(learn, s)
        else:  # the plan the run started with, LR finder's pick included
            stages = [Stage(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}) for d in state["stages"]]
            found = LRFindResult(**state["lr_find"]) if state["lr_find"] else None
        checkpointer = Checkpointer(run_dir / LAST_CHECKPOINT, run.trainer.checkpoint_every_n_steps, resume=state, extra={
            "config": resolved if resolved is not None else dataclasses.asdict(run),
            "stages": [dataclasses.asdict(st) for st in stages],
            "lr_find": found.to_json() if found is not None else None})
        if run.trainer.save_last and ctx.main:
            learn.add_cbs([checkpointer])
        start_stage = state["position"]["stage"] if state is not None else 0
        if start_stage >= len(stages):  # killed after the last epoch, before the outputs
            checkpointer.learn = learn
            checkpointer.restore()
        with out_of_memory(run.data.bs, learn.device):
            learn.fit_stages(stages, start_stage=start_stage)
        history = learn.recorder.history
        final, best = summarize(history, task, objective)
        diagnostics = []
        if learn.diverged:
            diagnostics.append(f"loss became non-finite in epoch {history[-1]['epoch'] + 1 if history else 0}: "
                               f"lower schedule.lr_max (the head's peak rate was {stages[-1].lrs[-1]:g})")
        else:
            xb, _ = next(iter(prep.data.valid))
            # Dead filters are a convnet's symptom: measured on image batches only.
            dead = dead_filter_fraction(prep.model, xb) if isinstance(xb, torch.Tensor) and xb.ndim == 4 else None
            diagnostics += diagnose(history, objective, task.direction(objective), dead)
        value = final.get(objective) if not learn.diverged else None
        metrics.update({
            "status": "diverged" if learn.diverged else "completed",
            "objective": _finite_or_none(value),
            "final": final,
            "best": best,
            "epochs": len(history),
            "layer_groups": len(learn.layer_groups),
            # the peak rates of the last stage, the one in which every layer group trains
            "group_lrs": list(stages[-1].lrs),
            "stages": [{"epochs": st.epochs, "frozen": st.frozen, "lrs": list(st.lrs)} for st in stages],
            "seconds": {"total": time.perf_counter() - start, "train": learn.recorder.train_seconds},
            "diagnostics": diagnostics,
        })
        if learn.stop_requested:
            metrics["stopped_early"] = True
        if found is not None:
            metrics["lr_find"] = found.suggestions
        if prep.pretrained is not None:
            metrics["pretrained"] = {"path": str(prep.pretrained.path), "loaded": len(prep.pretrained.loaded),
                                     "new": len(prep.pretrained.new)}
        if not ctx.main:
            return metrics  # the other ranks of a data-parallel run write nothing
        write_history(run_dir / "history.csv", history, list(task.metrics))
        checkpoint = model_checkpoint(prep.model, {**prep.meta, "config": resolved})
        if run.trainer.save_model:
            save_checkpoint(run_dir / "model.pt", checkpoint)
        if run.save_as:
            zoo_file = Path(run.paths.models) / f"{run.save_as}.pt"
            zoo_file.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(zoo_file, checkpoint)
            log.info("saved to the model zoo: %s (use arch.pretrained=%s)", zoo_file, run.save_as)
        if run.trainer.plots and learn.recorder.losses:
            from fastlab.plots import plot_losses, plot_lr

            plot_losses(learn.recorder, run_dir / "plots" / "losses.png")
            plot_lr(learn.recorder, run_dir / "plots" / "lr.png")
            if task.show_results is not None and not learn.diverged:
                task.show_results(learn, run_dir / "plots" / "show_results.png")
            if found is not None:
                from fastlab.lr_find import plot_lr_find

                plot_lr_find(found, run_dir / "plots" / "lr_find.png")
        for line in diagnostics:
            log.warning(line)
    except Exception as e:
        metrics["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, FastlabError):
            metrics["traceback"] = traceback.format_exc()
        raise
    finally:
        if ctx.main:
            write_metrics(metrics, run_dir, start)
    if ctx.main:
        # Finished, and metrics.json says so: a leftover last.pt would only invite resuming a run
        # that is over. (Removed last, so a kill at any moment leaves a run that resumes or is done.)
        (run_dir / LAST_CHECKPOINT).unlink(missing_ok=True)
    log.info("%s: %s = %s; run dir: %s", metrics["status"], objective, metrics["objective"], run_dir)
    return metrics


def write_metrics(metrics: dict, run_dir: Path, start: float) -> None:
    """``metrics.json``, for a failed run too (with its error)."""
    metrics["seconds"] = metrics.get("seconds") or {"total": time.perf_counter() - start, "train": 0.0}
    metrics.setdefault("diagnostics", [])
    metrics["versions"], metrics["git"] = versions(), git_info()
    try:
        write_json(run_dir / "metrics.json", _json_safe(metrics))
    except OutputError as e:  # no room even for metrics.json: the error in flight says more
        log.error(str(e))


register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    try:
        metrics = train(cfg)
    except FastlabError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records a failed trial and goes on
        print(f"fastlab-train: error: {e}", file=sys.stderr)
        sys.exit(2)
    value = metrics["objective"]
    return float("nan") if value is None else float(value)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
