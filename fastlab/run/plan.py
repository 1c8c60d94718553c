"""What a run will train: its stages (with the LR finder's pick for ``lr_max=find``), and the
config and plan of an interrupted run that is resumed."""

from __future__ import annotations

import dataclasses
import logging

from fastlab.config import BaseSchedule, RunConfig, TrainerConfig, to_run_config
from fastlab.learner import Learner
from fastlab.lr_find import LRFindResult
from fastlab.schedules import Stage, discriminative_lrs, plan_stages

log = logging.getLogger("fastlab")

# Trainer keys a resumed run takes from the command that resumes it: they do not change results.
RESUME_OVERRIDES = ("resume", "timeout", "progress", "threads")


def plan(learn: Learner, s: BaseSchedule) -> tuple[list[Stage], LRFindResult | None]:
    """The schedule's stages, from its head rate ``s.head_lr`` spread over the layer groups by
    ``s.lr_ratio`` (``lr_max`` and ``lr_ratio``; ``lr_frozen`` and no ratio for
    ``schedule=course``). A head rate of ``find`` runs the LR finder first, in the freezing of the
    first stage, and its ``schedule.suggestion`` becomes the head's rate. With ``schedule.sizes``
    the stages repeat once per image side."""
    n = len(learn.layer_groups)

    def stages(lr_max) -> list[Stage]:
        base = plan_stages(s.name, s.epochs, discriminative_lrs(lr_max, n, s.lr_ratio), s.freeze_epochs,
                           s.pct_start, s.div, s.div_final, s.moms)
        return [dataclasses.replace(st, size=size) for size in s.sizes for st in base] if s.sizes else base

    if s.head_lr != "find":
        return stages(s.head_lr), None
    found = find_lr(learn, s)
    lr = found.suggestions[s.suggestion]
    log.info("lr_find: %s suggests a head rate of %.3g", s.suggestion, lr)
    return stages(lr), found


def find_lr(learn: Learner, s: BaseSchedule) -> LRFindResult:
    """The LR finder in the freezing the schedule starts with (the head alone for fine_tune and
    gradual), since that is the training whose rate it picks."""
    first = plan_stages(s.name, s.epochs, [1.0] * len(learn.layer_groups), s.freeze_epochs)[0]
    learn.freeze_to(first.frozen)
    return learn.lr_find()


def resumed_config(saved: dict, trainer: TrainerConfig) -> RunConfig:
    """The interrupted run's own config; from the one composed now only the trainer keys that
    do not change results (:data:`RESUME_OVERRIDES`) are taken."""
    run = to_run_config(saved)
    for key in RESUME_OVERRIDES:
        setattr(run.trainer, key, getattr(trainer, key))
    return run


def saved_plan(state: dict) -> tuple[list[Stage], LRFindResult | None, list[dict]]:
    """The plan an interrupted run started with (``last.pt``): its stages (with the rates of
    pending stages decided so far), the LR finder's result, and what later finders decided."""
    stages = [Stage(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}) for d in state["stages"]]
    found = LRFindResult(**state["lr_find"]) if state["lr_find"] else None
    return stages, found, list(state.get("decided", []))


def plan_state(run: RunConfig, stages: list[Stage], found: LRFindResult | None,
               decided: list[dict] | None = None) -> dict:
    """What ``last.pt`` records of the run besides the training state: its config and plan,
    and the records of pending stages' decisions (``fastlab.run.course``)."""
    return {"config": run.to_dict(), "stages": [dataclasses.asdict(st) for st in stages],
            "lr_find": found.to_json() if found is not None else None, "decided": list(decided or [])}
