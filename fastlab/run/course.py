"""``schedule=course``'s unfrozen stage: its rates, decided when it starts.

The course notes' recipe (fast.ai lessons 1-3): after training the head, unfreeze, run the LR
finder again, take the point where its curve starts to rise, and train at ``slice(lo, hi)`` with
``lo`` a tenth of that point and ``hi`` the frozen stage's rate over 5.
"""

from __future__ import annotations

import dataclasses
import logging

from fastlab.learner import Learner
from fastlab.lr_find import rise
from fastlab.schedules import CourseSchedule, Stage, discriminative_lrs

log = logging.getLogger("fastlab")

NUM_IT = 100  # the second finder's iterations (the first finder's default too)


def course_rates(lo: float, hi: float, n_groups: int) -> list[float]:
    """The unfrozen stage's peak rate per layer group (head last): ``slice(lo, hi)``, spaced
    geometrically from ``lo`` (the lowest group) to ``hi`` (the head)."""
    return discriminative_lrs([lo, hi], n_groups)


def decide(learn: Learner, s: CourseSchedule, stage: Stage, frozen_head: float) -> tuple[Stage, dict]:
    """``stage`` (pending) with its rates: ``lo`` from ``s.lr_low`` (``find``: a second LR finder
    on the model unfrozen as the stage trains it, which leaves weights and random state as they
    were), ``hi`` from ``s.lr_high`` and ``frozen_head``, the frozen stage's head rate. Returns
    the stage and the record ``metrics.json`` and ``last.pt`` keep of the decision."""
    n = len(learn.layer_groups)
    hi = s.high(frozen_head)
    found = pick = None
    if s.lr_low == "find":
        learn.freeze_to(stage.frozen)
        found = learn.lr_find(num_it=NUM_IT)
        pick = rise(found.lrs, found.losses, NUM_IT)
        lo = pick / 10
        log.info("lr_find (unfrozen): the curve rises at %.3g; the lowest group trains at %.3g", pick, lo)
    else:
        lo = float(s.lr_low)
    if lo > hi:
        log.warning("schedule=course: the lowest group's rate %.3g is above the head's %.3g, so the body trains "
                    "faster than the head: set schedule.lr_low or schedule.lr_high", lo, hi)
    lrs = tuple(course_rates(lo, hi, n))
    record = {"size": stage.size, "frozen_pick": frozen_head, "unfrozen_pick": pick, "lrs": list(lrs),
              "lr_find": found.to_json() if found is not None else None}
    return dataclasses.replace(stage, lrs=lrs, pending=False), record
