"""Schedules as pure functions of training progress ``pos`` in [0, 1].

Nothing here keeps a counter: the scheduler callback tells each function where training is
(timm's lesson), so the same curve can be plotted, tested and resumed without side effects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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
