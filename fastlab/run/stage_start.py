"""What happens as each stage of a run starts: the data re-made at the stage's image side
(``schedule.sizes``, progressive resizing) and a pending stage's rates decided
(``schedule=course``). ``Learner.fit_stages`` calls it before it freezes and fits a stage."""

from __future__ import annotations

import logging

from fastlab.callbacks.augment import Augment
from fastlab.callbacks.checkpoint import Checkpointer
from fastlab.distributed import from_main
from fastlab.lr_find import LRFindResult
from fastlab.rng import restore_random_states
from fastlab.run.course import decide
from fastlab.run.plan import plan_state
from fastlab.run.prepare import Prepared
from fastlab.schedules import Stage

log = logging.getLogger("fastlab")


class StageStart:
    """Called as ``hook(k, stage)`` before stage ``k`` trains; returns the stage to train. It
    updates ``stages`` (a decided stage replaces its pending one), ``decided`` (the records of
    the decisions), the Checkpointer's plan, and ``meta`` (what ``model.pt`` records) in place."""

    def __init__(self, prep: Prepared, stages: list[Stage], found: LRFindResult | None, decided: list[dict],
                 checkpointer: Checkpointer, meta: dict):
        self.prep, self.stages, self.found, self.decided = prep, stages, found, decided
        self.checkpointer, self.meta = checkpointer, meta

    def __call__(self, k: int, stage: Stage) -> Stage:
        learn = self.prep.learn
        if stage.size is not None and stage.size != learn.data.size:
            self.resize(stage.size)
        if stage.pending:
            self.match_resume(k)
            stage, record = decide(learn, self.prep.run.schedule, stage, self.stages[k - 1].lrs[-1])
            stage, record = from_main((stage, record), self.prep.ctx)  # every rank at rank 0's rates
            self.stages[k] = stage
            self.decided.append(record)
            self.checkpointer.extra.update(plan_state(self.prep.run, self.stages, self.found, self.decided))
        return stage

    def resize(self, size: int) -> None:
        """Train on images of side ``size`` from now on, with the same weights."""
        learn = self.prep.learn
        log.info("progressive resizing: the data is re-made at %d px", size)
        learn.data = self.prep.data = self.prep.data_at(size)
        for cb in learn.cbs:
            if isinstance(cb, Augment) and cb.augment.size is not None:  # presized: out at the new side
                cb.augment.size = size
        for meta in {id(m): m for m in (self.meta, learn.meta) if m is not None}.values():
            meta.update(learn.data.meta())  # model.pt records the side the model was last trained at

    def match_resume(self, k: int) -> None:
        """A resumed run about to decide stage ``k``: the interrupted run decided it on the model
        and random state its ``last.pt`` holds, which the Checkpointer would only restore once
        the stage's fit begins; put them in place now, so the decision is the same."""
        state = self.checkpointer.resume
        if state is None or state["position"]["stage"] != k:
            return
        learn = self.prep.learn
        learn.model.load_state_dict(state["model"])
        restore_random_states(state["rng"], getattr(learn.data.train, "generator", None))
