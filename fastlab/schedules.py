"""Schedules as pure functions of training progress ``pos`` in [0, 1].

Nothing here keeps a counter: the scheduler callback tells each function where training is
(timm's lesson), so the same curve can be plotted, tested and resumed without side effects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fastlab import registry
from fastlab.config import BaseSchedule, ScheduleConfig, check, is_pos
from fastlab.errors import ConfigError

Sched = Callable[[float], float]


def sched_cos(start: float, end: float, pos: float) -> float:
    """Cosine from ``start`` (pos=0) to ``end`` (pos=1), flat at both ends."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def sched_lin(start: float, end: float, pos: float) -> float:
    return start + pos * (end - start)


def sched_const(value: float) -> Sched:
    return lambda pos: value


def combine(pcts: Sequence[float], scheds: Sequence[Callable[[float, float, float], float]],
            points: Sequence[tuple[float, float]]) -> Sched:
    """Join phases: phase i spans fraction ``pcts[i]`` of training and runs ``scheds[i]`` between
    ``points[i] = (start, end)``. Phases of zero length are skipped."""
    if abs(sum(pcts) - 1.0) > 1e-9:
        raise ValueError(f"phase fractions must sum to 1, got {list(pcts)}")
    bounds = [0.0]
    for p in pcts:
        bounds.append(bounds[-1] + p)

    def f(pos: float) -> float:
        pos = min(max(pos, 0.0), 1.0)
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            if hi <= lo:
                continue
            if pos < hi or i == len(pcts) - 1:
                return scheds[i](*points[i], (pos - lo) / (hi - lo))
        return scheds[-1](*points[-1], 1.0)

    return f


def one_cycle_lr(lr_max: float, div: float = 25.0, div_final: float = 1e5,
                 pct_start: float = 0.25) -> Sched:
    """fast.ai's one-cycle learning rate: cosine warm-up from ``lr_max/div`` to ``lr_max`` over
    ``pct_start`` of training, then cosine annealing to ``lr_max/div_final``."""
    return combine([pct_start, 1 - pct_start], [sched_cos, sched_cos],
                   [(lr_max / div, lr_max), (lr_max, lr_max / div_final)])


def one_cycle_mom(moms: Sequence[float] = (0.95, 0.85, 0.95), pct_start: float = 0.25) -> Sched:
    """Momentum moves against the learning rate: ``moms[0] -> moms[1] -> moms[2]``."""
    return combine([pct_start, 1 - pct_start], [sched_cos, sched_cos],
                   [(moms[0], moms[1]), (moms[1], moms[2])])


def group_lrs(lr_max: float, n_groups: int, ratio: float = 1.0) -> list[float]:
    """Discriminative rates: group ``g`` of ``n`` (the head is last) trains at
    ``lr_max / ratio**(n-1-g)``; the ULMFiT factor is ``ratio=2.6``."""
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    return [lr_max / ratio ** (n_groups - 1 - g) for g in range(n_groups)]


def discriminative_lrs(lr_max: float | Sequence[float | None], n_groups: int, ratio: float = 1.0) -> list[float]:
    """Peak rate per layer group (head last) from a float or a slice ``[lo, hi]``.

    A float uses ``ratio`` (see :func:`group_lrs`). A slice follows fast.ai: rates spaced
    geometrically from ``lo`` (first group) to ``hi`` (head); ``[None, hi]`` gives ``hi/10`` to
    every group but the head.
    """
    if not isinstance(lr_max, Sequence):
        return group_lrs(float(lr_max), n_groups, ratio)
    lo, hi = lr_max
    if n_groups == 1:
        return [float(hi)]
    if lo is None:
        return [hi / 10] * (n_groups - 1) + [float(hi)]
    return [lo * (hi / lo) ** (g / (n_groups - 1)) for g in range(n_groups)]


@dataclass(frozen=True)
class Stage:
    """One fit of a schedule: ``frozen`` leading layer groups, peak rates ``lrs`` per group."""

    epochs: int
    lrs: tuple[float, ...]
    frozen: int = 0
    policy: str = "one_cycle"  # one_cycle | constant
    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)
    size: int | None = None  # the image side it trains at (schedule.sizes); None: data.size
    # The rates are set when the stage starts (schedule=course: from a second LR finder on the
    # model the stages before it trained); ``lrs`` is empty until then.
    pending: bool = False


def plan_stages(name: str, epochs: int, lrs: Sequence[float], freeze_epochs: int = 1,
                pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5,
                moms: Sequence[float] = (0.95, 0.85, 0.95)) -> list[Stage]:
    """A schedule as data: the stages that the registered schedule ``name`` trains, given the
    peak rates ``lrs`` of its fully unfrozen stage (one per layer group, head last)."""
    plan = registry.get("schedule", name).builder
    return plan(epochs, tuple(float(x) for x in lrs), freeze_epochs, pct_start, div,
                {"div_final": div_final, "moms": tuple(moms)})


@registry.register("schedule", "one_cycle", ScheduleConfig)
def one_cycle(epochs: int, lrs: tuple[float, ...], freeze_epochs: int, pct_start: float, div: float,
              common: dict) -> list[Stage]:
    """fast.ai's ``fit_one_cycle``: one stage, nothing frozen."""
    return [Stage(epochs, lrs, 0, "one_cycle", pct_start, div, **common)]


@registry.register("schedule", "constant", ScheduleConfig)
def constant(epochs: int, lrs: tuple[float, ...], freeze_epochs: int, pct_start: float, div: float,
             common: dict) -> list[Stage]:
    """One stage at constant rates and momentum ``moms[0]``."""
    return [Stage(epochs, lrs, 0, "constant", pct_start, div, **common)]


@registry.register("schedule", "fine_tune", ScheduleConfig)
def fine_tune(epochs: int, lrs: tuple[float, ...], freeze_epochs: int, pct_start: float, div: float,
              common: dict) -> list[Stage]:
    """fast.ai v2's ``fine_tune``: ``freeze_epochs`` with all but the head frozen (one-cycle at
    the head rate, ``[head/10, ..., head]`` for the frozen groups' norm layers, pct_start 0.99,
    div 25), then every group at ``lrs / 2`` with ``pct_start`` and ``div`` (fast.ai: 0.3, 5)."""
    n, head = len(lrs), lrs[-1]
    frozen = [Stage(freeze_epochs, tuple(discriminative_lrs([None, head], n)), n - 1, "one_cycle", 0.99, 25.0, **common)]
    last = Stage(epochs, tuple(x / 2 for x in lrs), 0, "one_cycle", pct_start, div, **common)
    return (frozen if freeze_epochs > 0 and n > 1 else []) + [last]


@registry.register("schedule", "gradual", ScheduleConfig)
def gradual(epochs: int, lrs: tuple[float, ...], freeze_epochs: int, pct_start: float, div: float,
            common: dict) -> list[Stage]:
    """ULMFiT's gradual unfreezing: one more group per stage of ``freeze_epochs`` epochs,
    halving the rates at each stage; the last, fully unfrozen stage runs ``epochs``."""
    n = len(lrs)
    stages = [Stage(freeze_epochs, tuple(x / 2**k for x in lrs), n - 1 - k, "one_cycle", pct_start, div, **common)
              for k in range(n - 1)] if freeze_epochs > 0 else []
    return stages + [Stage(epochs, tuple(x / 2 ** (n - 1) for x in lrs), 0, "one_cycle", pct_start, div, **common)]


FROZEN_RATE = re.compile(r"^frozen/([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")


@dataclass
class CourseSchedule(BaseSchedule):
    """``schedule=course``: stage 1 with the body frozen at ``lr_frozen`` (``find``: the first LR
    finder's ``suggestion``, ``steep`` as the course teaches); stage 2 unfrozen at
    ``slice(lr_low, lr_high)``. ``lr_low=find`` runs a second finder on the unfrozen model and
    takes a tenth of the rate where its curve starts to rise (its lowest smoothed loss);
    ``lr_high=frozen/5`` is the first stage's head rate over 5. Numbers fix either end.

    The rates come from these keys alone: the schema has no ``lr_max`` nor ``lr_ratio``, so
    ``schedule=course schedule.lr_max=...`` is refused while composing instead of ignored."""

    # What configs saved before this schema had its own keys hold (model.pt, last.pt): read back
    # without them (fastlab.config.build), as they never changed a course run.
    retired: ClassVar[frozenset[str]] = frozenset({"lr_max", "lr_ratio"})

    name: str = "course"
    lr_frozen: Any = "find"
    lr_low: Any = "find"
    lr_high: Any = "frozen/5"
    suggestion: str = "steep"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.lr_frozen == "find" or is_pos(self.lr_frozen),
              f"schedule.lr_frozen must be find or a positive number, got {self.lr_frozen!r}: e.g. schedule.lr_frozen=find")
        check(self.lr_low == "find" or is_pos(self.lr_low),
              f"schedule.lr_low must be find or a positive number, got {self.lr_low!r}: e.g. schedule.lr_low=find")
        check(is_pos(self.lr_high) or (isinstance(self.lr_high, str) and FROZEN_RATE.match(self.lr_high) is not None
                                       and float(FROZEN_RATE.match(self.lr_high).group(1)) > 0),
              f"schedule.lr_high must be frozen/<k> or a positive number, got {self.lr_high!r}: e.g. schedule.lr_high=frozen/5")
        check(self.freeze_epochs >= 1, f"schedule=course trains a frozen stage first: schedule.freeze_epochs must be "
                                       f">= 1, got {self.freeze_epochs}")

    @property
    def head_lr(self) -> Any:
        return self.lr_frozen

    @property
    def lr_ratio(self) -> float:
        """1: no ratio. The course spreads its rates itself (the frozen stage's ``[hi/10, hi]``, the
        unfrozen stage's ``slice(lo, hi)``); the planner and the Learner read this of any schedule."""
        return 1.0

    def high(self, frozen_head: float) -> float:
        """The head's rate in the unfrozen stage, given the frozen stage's."""
        if is_pos(self.lr_high):
            return float(self.lr_high)
        return frozen_head / float(FROZEN_RATE.match(self.lr_high).group(1))


@registry.register("schedule", "course", CourseSchedule)
def course(epochs: int, lrs: tuple[float, ...], freeze_epochs: int, pct_start: float, div: float,
           common: dict) -> list[Stage]:
    """The course's two-finder fine-tune: ``freeze_epochs`` with the body frozen at the first LR
    finder's pick (``lrs[-1]``; the frozen groups' norm layers at a tenth of it), then ``epochs``
    unfrozen at ``slice(lo, hi)``, decided when that stage starts (``pending``; see
    :mod:`fastlab.run.course`)."""
    n, head = len(lrs), lrs[-1]
    if n < 2:
        raise ConfigError("schedule=course trains a frozen body, then unfreezes it, but the model has one layer "
                          "group: use an arch with layer groups (e.g. arch=cnn or arch=resnet18)")
    return [Stage(freeze_epochs, tuple(discriminative_lrs([None, head], n)), n - 1, "one_cycle", pct_start, div, **common),
            Stage(epochs, (), 0, "one_cycle", pct_start, div, pending=True, **common)]
