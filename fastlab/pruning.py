"""Trial pruning, the decision only: pure functions of the values trials reported per epoch.

A pruner stops a trial of a sweep early when its objective, after some epoch, is poor next to
what the other trials had reached after the same epoch (``hydra.sweeper.pruner``):

- ``median`` (Optuna's ``MedianPruner``): from epoch ``min_epochs`` on, once ``pruner_startup``
  trials have finished, a trial whose best value so far is worse than the median of the other
  trials' values at this epoch stops.
- ``asha`` (asynchronous successive halving, Optuna's ``SuccessiveHalvingPruner``): only at the
  rungs ``min_epochs * reduction_factor**k``, a trial goes on when its value is among the top
  ``1 / reduction_factor`` of the values recorded at that rung so far, its own included.

The I/O (reporting, reading every trial's reports) is the trial link's
(``fastlab.sweep.link``); the callback that asks is ``fastlab.callbacks.prune.Prune``. Pure and
free of the sweep's machinery, this module sits at the ground floor, below both.
``tests/sweep/test_pruners.py`` checks these against Optuna's own pruners on the same sequences.

Epochs are 1-based here (the epoch after which the value was measured), as the trial store
records them. ``sign`` is +1 to maximize and -1 to minimize, as ``SweepSettings.sign``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Protocol

PRUNERS = ("none", "median", "asha")  # hydra.sweeper.pruner


class PrunerSettings(Protocol):
    """What the pruners read of ``SweepSettings`` (``hydra.sweeper.*``)."""

    pruner: str  # one of PRUNERS
    min_epochs: int  # median: no pruning before it; asha: the first rung
    reduction_factor: int  # asha: 1 / reduction_factor of a rung's trials go on
    pruner_startup: int  # median: trials finished (completed or pruned) before any pruning

    @property
    def sign(self) -> float: ...


def rungs(min_epochs: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """ASHA's rung epochs ``min_epochs * reduction_factor**k`` that are ``<= max_epochs``,
    ascending (empty when ``min_epochs > max_epochs``)."""
    check_rungs(min_epochs, reduction_factor)
    out, epoch = [], min_epochs
    while epoch <= max_epochs:
        out.append(epoch)
        epoch *= reduction_factor
    return out


def is_rung(epoch: int, min_epochs: int, reduction_factor: int) -> bool:
    """Whether ``epoch`` is one of ASHA's rungs (any of ``rungs(min_epochs, rf, epoch)``)."""
    return epoch in rungs(min_epochs, reduction_factor, epoch)


def check_rungs(min_epochs: int, reduction_factor: int) -> None:
    # reduction_factor 1 would make every rung the first one (and the loop above endless)
    if min_epochs < 1:
        raise ValueError(f"min_epochs must be at least 1, got {min_epochs}")
    if reduction_factor < 2:
        raise ValueError(f"reduction_factor must be at least 2, got {reduction_factor}")


def asha_promotes(value: float, rung_values: Sequence[float], reduction_factor: int, sign: float) -> bool:
    """Whether a trial with ``value`` at a rung goes on to the next one.

    ``rung_values`` are all the values recorded at this rung so far, this trial's included.
    The top ``len(rung_values) // reduction_factor`` of them go on; while there are fewer than
    ``reduction_factor`` values, only the best so far does (Optuna's
    ``_is_trial_promotable_to_next_rung``: trials cannot wait to be promoted later, so the
    first ones are judged on what exists). Ties go on. A NaN value never does.
    """
    if math.isnan(value):
        return False
    scores = sorted((sign * v for v in rung_values if not math.isnan(v)), reverse=True)  # best first
    if not scores:  # called without its own value: nothing to be worse than
        return True
    k = max(len(scores) // reduction_factor, 1)  # how many go on
    return sign * value >= scores[min(k, len(scores)) - 1]


def median_prunes(value: float, others_at_epoch: Sequence[float], sign: float, n_finished: int,
                  startup: int) -> bool:
    """Whether a trial whose (best so far) objective is ``value`` stops at this epoch.

    ``others_at_epoch`` are the other trials' values at the same epoch. Nothing is pruned until
    ``n_finished >= startup``, nor without another value to compare with; otherwise a value
    strictly worse than their median stops (a tie goes on). A NaN value stops; NaN others are
    left out (numpy's ``nanpercentile``, as Optuna's ``PercentilePruner``).
    """
    if n_finished < startup:
        return False
    others = [v for v in others_at_epoch if not math.isnan(v)]
    if not others:
        return False
    if math.isnan(value):
        return True
    return sign * value < sign * statistics.median(others)


def checks_at(settings: PrunerSettings, epoch: int) -> bool:
    """Whether ``settings.pruner`` judges a trial after ``epoch`` at all (asha: at its rungs;
    median: at every epoch from ``min_epochs``). The caller reads the store only when it does."""
    if settings.pruner == "asha":
        return is_rung(epoch, settings.min_epochs, settings.reduction_factor)
    if settings.pruner == "median":
        return epoch >= settings.min_epochs
    if settings.pruner == "none":
        return False
    raise ValueError(f"unknown pruner {settings.pruner!r}: use one of {', '.join(PRUNERS)}")


def should_prune(settings: PrunerSettings, number: int, epoch: int, history: Mapping[int, Mapping[int, float]],
                 n_finished: int) -> bool:
    """Whether trial ``number`` stops after ``epoch``.

    ``history`` is every trial's reports, ``{number: {epoch: value}}``, this trial's included
    (its value at ``epoch`` must be there); ``n_finished`` counts the trials completed or pruned
    so far. Median compares this trial's best value over its epochs so far (Optuna's
    ``MedianPruner`` does too) with the other trials that reported at ``epoch``, whatever their
    state; ASHA compares its value at ``epoch`` with every trial's at that rung.
    """
    if not checks_at(settings, epoch):
        return False
    own = history[number]
    value = own[epoch]
    at_epoch = [values[epoch] for n, values in history.items() if n != number and epoch in values]
    if settings.pruner == "asha":
        return not asha_promotes(value, [*at_epoch, value], settings.reduction_factor, settings.sign)
    # epochs up to this one only: a trial resumed from an earlier checkpoint may have reported later ones
    best = best_so_far({e: v for e, v in own.items() if e <= epoch}, settings.sign)
    return median_prunes(best, at_epoch, settings.sign, n_finished, settings.pruner_startup)


def best_so_far(values: Mapping[int, float], sign: float) -> float:
    """The best of a trial's reported values, by ``sign`` (NaN only when all are NaN)."""
    finite = [v for v in values.values() if not math.isnan(v)]
    if not finite:
        return math.nan
    return max(finite, key=lambda v: sign * v)
