"""What a finished run writes besides ``metrics.json``: ``history.csv``, ``model.pt`` (and its
zoo copy with ``save_as``) and ``plots/``."""

from __future__ import annotations

import logging
from pathlib import Path

from fastlab.config import RunConfig
from fastlab.learner import Learner
from fastlab.lr_find import LRFindResult
from fastlab.models.meta import ModelMeta
from fastlab.models.zoo import MODEL_FILE, model_checkpoint, write_model
from fastlab.rundir import HISTORY, PLOTS, write_history
from fastlab.tasks import Task

log = logging.getLogger("fastlab")


def write_outputs(run: RunConfig, task: Task, learn: Learner, meta: ModelMeta, found: LRFindResult | None,
                  run_dir: Path, decided: list[dict] = ()) -> None:
    """Write the run's outputs into ``run_dir``; ``meta`` is what ``model.pt`` records;
    ``decided``: the records of stages whose rates a later LR finder decided (``schedule=course``)."""
    write_history(run_dir / HISTORY, learn.recorder.history, list(task.metrics))
    # weights copied to the CPU only when written (a sweep's trials write none)
    checkpoint = model_checkpoint(learn.model, meta) if run.trainer.save_model or run.save_as else None
    if run.trainer.save_model:
        write_model(run_dir / MODEL_FILE, checkpoint)
    if run.save_as:
        zoo_file = Path(run.paths.models) / f"{run.save_as}.pt"
        zoo_file.parent.mkdir(parents=True, exist_ok=True)
        write_model(zoo_file, checkpoint)
        log.info("saved to the model zoo: %s (use arch.pretrained=%s)", zoo_file, run.save_as)
    if run.trainer.plots and learn.recorder.losses:
        write_plots(task, learn, found, run_dir / PLOTS, decided)


def write_plots(task: Task, learn: Learner, found: LRFindResult | None, plots: Path, decided: list[dict] = ()) -> None:
    """``losses.png`` and ``lr.png``; ``show_results.png`` unless the run diverged;
    ``lr_find.png`` when the LR finder picked the rate. With ``schedule=course`` the two
    finders' curves are ``lr_find_frozen.png`` and ``lr_find_unfrozen.png`` (one per image side
    after the first: ``lr_find_unfrozen_<side>.png``), each with the rates taken from it."""
    from fastlab.lr_find import plot_lr_find
    from fastlab.plots import plot_losses, plot_lr

    plot_losses(learn.recorder, plots / "losses.png")
    plot_lr(learn.recorder, plots / "lr.png")
    if not learn.diverged:
        task.show_results(learn, plots / "show_results.png")
    if not decided:
        if found is not None:
            plot_lr_find(found, plots / "lr_find.png")
        return
    if found is not None:
        plot_lr_find(found, plots / "lr_find_frozen.png", {"frozen stage's head": decided[0]["frozen_pick"]})
    for i, d in enumerate(x for x in decided if x["lr_find"] is not None):
        name = "lr_find_unfrozen.png" if i == 0 else f"lr_find_unfrozen_{d['size']}.png"
        curve = LRFindResult(**d["lr_find"])
        plot_lr_find(curve, plots / name, {"rises at": d["unfrozen_pick"], "lowest group (/10)": d["lrs"][0]})
