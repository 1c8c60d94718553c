"""One attempt at a run, from its prepared Learner to its written outputs, and the retries
``trainer.auto_bs`` makes with half the batch after running out of memory."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch

from fastlab.callbacks.checkpoint import LAST_CHECKPOINT, Checkpointer, epoch_start_state
from fastlab.callbacks.core import Callback
from fastlab.callbacks.factory import build_callbacks
from fastlab.callbacks.prune import Prune
from fastlab.callbacks.tracker import finish_tracking
from fastlab.callbacks.validate import ValidateFinal
from fastlab.config import RunConfig
from fastlab.context import RunContext
from fastlab.diagnostics import dead_filter_fraction, diagnose
from fastlab.distributed import Context, from_main
from fastlab.errors import FastlabError, OutputError
from fastlab.guards import OutOfMemory, free_device_memory, out_of_memory
from fastlab.run.batch_plot import write_batch_plot
from fastlab.run.outputs import write_outputs
from fastlab.run.plan import plan, plan_state, saved_plan
from fastlab.run.prepare import prepare
from fastlab.run.resources import set_threads
from fastlab.run.stage_start import StageStart
from fastlab.rundir import PLOTS
from fastlab.rundir.metrics_json import RunMetrics, finite_or_none, summarize, write_metrics
from fastlab.tasks import get_task
from fastlab.tta import tta_metrics

log = logging.getLogger("fastlab")


def fit_retrying(run: RunConfig, run_dir: Path, state: dict | None, ctx: Context, cbs: Sequence[Callback],
                 start: float, context: RunContext) -> RunMetrics:
    """:func:`fit`, again with half the batch after each out-of-memory when ``trainer.auto_bs``
    (from the last finished epoch's ``last.pt``; the schedule continues at the same point)."""
    tried: list[int] = []  # batch sizes that ran out of memory
    while True:
        try:
            return fit(run, run_dir, state, ctx, cbs, start, tried, context)
        except OutOfMemory:
            if not run.trainer.auto_bs or run.data.bs < 2 * ctx.world:
                raise
            tried.append(run.data.bs)
            run.data.bs //= 2
            state = epoch_start_state(run_dir / LAST_CHECKPOINT)
            log.warning("out of memory with data.bs=%d: trainer.auto_bs retries with data.bs=%d from %s", tried[-1],
                        run.data.bs, "the last finished epoch" if state is not None else "the start")
            free_device_memory()


def fit(run: RunConfig, run_dir: Path, state: dict | None, ctx: Context, cbs: Sequence[Callback], start: float,
        tried: list[int], context: RunContext) -> RunMetrics:
    """One attempt at the run: prepare, plan (or restore the plan of ``state``, a ``last.pt``),
    fit, write the outputs, ``metrics.json`` and, for a run that keeps ``last.pt``, the record of
    its processes, ``processes.json`` (both also when it fails). ``context`` says where the
    run runs (threads, GPU, what the process keeps, the sweep trial it is)."""
    objective = run.task.objective
    metrics = RunMetrics(objective_name=objective, direction=get_task(run.task).direction(objective))
    if tried:
        metrics.auto_bs = {"out_of_memory": list(tried), "bs": run.data.bs}
    built: list[Callback] = []  # the config's callbacks; its trackers are finished below
    checkpointer: Checkpointer | None = None  # with the Learner: what processes.json records
    try:
        metrics.threads = set_threads(run.trainer.threads, context.parallel_jobs)
        prep = prepare(run, ctx=ctx, context=context)
        learn, task = prep.learn, prep.task
        meta = prep.meta  # the run's ModelMeta, its config included
        built = build_callbacks(run.trainer, run_dir, task, meta, writes=ctx.main, seed=run.seed, objective=objective,
                                ctx=ctx, context=context)
        learn.add_cbs([*built, *cbs])
        if run.trainer.validate == "final":  # settled by fastlab.run.trial: a sweep's objective needs no more
            learn.add_cbs([ValidateFinal()])
        if run.trainer.plots and ctx.main:
            write_batch_plot(learn, run, run_dir / PLOTS / "batch.png")
        if state is None:
            (stages, found), decided = plan(learn, run.schedule), []
        else:
            stages, found, decided = saved_plan(state)
        # Each rank found a rate on its own shard: all train at rank 0's, or their models part.
        stages, found = from_main((stages, found), ctx)
        checkpointer = Checkpointer(run_dir / LAST_CHECKPOINT, run.trainer.checkpoint_every_n_steps, resume=state,
                                    extra=plan_state(run, stages, found, decided))
        if run.trainer.save_last and ctx.main:
            learn.add_cbs([checkpointer])
        start_stage = state["position"]["stage"] if state is not None else 0
        if start_stage >= len(stages):  # killed after the last epoch, before the outputs
            checkpointer.learn = learn
            checkpointer.restore()
        before_stage = StageStart(prep, stages, found, decided, checkpointer, meta)
        if start_stage >= len(stages) and stages[-1].size is not None:
            before_stage.resize(stages[-1].size)  # the outputs describe the last side trained
        with out_of_memory(run.data.bs, learn.device):
            learn.fit_stages(stages, start_stage=start_stage, before_stage=before_stage)
        report(metrics, prep, stages, found, learn, start)
        metrics.course = [{k: v for k, v in d.items() if k != "lr_find"} for d in decided] or None
        if not ctx.main:
            return metrics  # the other ranks of a data-parallel run write nothing
        if run.trainer.tta and not learn.diverged:  # test-time augmentation of the validation set
            metrics.tta = tta_metrics(learn, run)
        write_outputs(run, task, learn, meta, found, run_dir, decided)
        for line in metrics.diagnostics:
            log.warning(line)
    except Exception as e:
        metrics.error = f"{type(e).__name__}: {e}"
        if not isinstance(e, FastlabError):
            metrics.traceback = traceback.format_exc()
        raise
    finally:
        if ctx.main:
            write_metrics(metrics, run_dir, start, context.keep)
            if checkpointer is not None and run.trainer.save_last:  # a run that can be resumed
                write_processes(checkpointer, learn)
            finish_tracking(built, run_dir)  # MLflow's final values and artifacts, from the run dir
    if ctx.main:
        # Finished, and metrics.json says so: a leftover last.pt would only invite resuming a run
        # that is over. (Removed last, so a kill at any moment leaves a run that resumes or is done.)
        (run_dir / LAST_CHECKPOINT).unlink(missing_ok=True)
    log.info("%s: %s = %s; run dir: %s", metrics.status, objective, metrics.objective, run_dir)
    return metrics


def write_processes(checkpointer: Checkpointer, learn) -> None:
    """``processes.json``, as ``metrics.json`` is written: no room for it is one logged line, not
    an error that would hide the one in flight."""
    try:
        checkpointer.write_processes(learn)
    except OutputError as e:
        log.error(str(e))


def report(metrics: RunMetrics, prep, stages, found, learn, start: float) -> None:
    """Fill ``metrics`` from a fitted Learner: outcome, final and best epochs, the plan's rates,
    timings and diagnostics."""
    history = learn.recorder.history
    final, best = summarize(history, metrics.objective_name, metrics.direction)
    if learn.diverged:
        metrics.diagnostics.append(f"loss became non-finite in epoch {history[-1]['epoch'] + 1 if history else 0}: "
                                   f"lower schedule.lr_max (the head's peak rate was {stages[-1].lrs[-1]:g})")
    else:
        xb, _ = next(iter(prep.data.valid))
        # Dead filters are a convnet's symptom: measured on image batches only, of fastai's
        # validation batch size (2 x bs), however large data.valid_bs makes the first batch.
        dead = (dead_filter_fraction(prep.model, xb[: 2 * prep.run.data.bs]) if isinstance(xb, torch.Tensor)
                and xb.ndim == 4 else None)
        metrics.diagnostics += diagnose(history, metrics.objective_name, metrics.direction, dead)
    pruned = pruned_by(learn)
    metrics.status = "diverged" if learn.diverged else "pruned" if pruned is not None else "completed"
    # a pruned run's last epoch is the one it was pruned after: its objective is the one reported
    metrics.objective = None if learn.diverged else finite_or_none(final.get(metrics.objective_name))
    if pruned is not None and not learn.diverged:
        metrics.pruned = {"epoch": pruned.pruned_epoch, "value": pruned.pruned_value}
    metrics.final, metrics.best, metrics.epochs = final, best, len(history)
    metrics.layer_groups = len(learn.layer_groups)
    metrics.n_params = sum(p.numel() for p in learn.model.parameters())
    metrics.group_lrs = list(stages[-1].lrs)  # the last stage's: the one in which every group trains
    metrics.stages = [{"epochs": st.epochs, "frozen": st.frozen, "lrs": list(st.lrs), "size": st.size} for st in stages]
    sizes = [st.size for st in stages if st.size is not None]
    metrics.sizes = list(dict.fromkeys(sizes)) or None
    metrics.seconds = {"total": time.perf_counter() - start, "train": learn.recorder.train_seconds}
    if learn.stop_requested:
        metrics.stopped_early = True
    if found is not None:
        metrics.lr_find = found.suggestions
    if prep.pretrained is not None:
        metrics.pretrained = {"path": str(prep.pretrained.path), "loaded": len(prep.pretrained.loaded),
                              "new": len(prep.pretrained.new)}


def pruned_by(learn) -> Prune | None:
    """The sweep's pruning callback, when it stopped this run (a trial of a pruned sweep)."""
    return next((cb for cb in learn.cbs if isinstance(cb, Prune) and cb.pruned_epoch is not None), None)
