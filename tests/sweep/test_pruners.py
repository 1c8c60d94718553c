"""The pruners' decisions (``fastlab.pruning``): hand-worked cases, then the same random
sequences of reports fed to Optuna's own ``MedianPruner`` and ``SuccessiveHalvingPruner``,
decision by decision."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import optuna
import pytest

from fastlab.pruning import asha_promotes, checks_at, median_prunes, rungs, should_prune

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Settings:
    """The fields of ``SweepSettings`` the pruners read, with its ``sign``."""

    pruner: str = "asha"
    min_epochs: int = 1
    reduction_factor: int = 3
    pruner_startup: int = 4
    direction: str = "maximize"

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "maximize" else -1.0


# ---------------------------------------------------------------------------------- hand-worked


@pytest.mark.parametrize("min_epochs, rf, max_epochs, expected", [
    (1, 3, 30, [1, 3, 9, 27]),
    (1, 2, 8, [1, 2, 4, 8]),
    (2, 3, 18, [2, 6, 18]),
    (2, 3, 17, [2, 6]),
    (5, 2, 4, []),
])
def test_rungs(min_epochs, rf, max_epochs, expected):
    assert rungs(min_epochs, rf, max_epochs) == expected


@pytest.mark.parametrize("min_epochs, rf", [(0, 3), (1, 1)])
def test_rungs_refuse_what_never_grows(min_epochs, rf):
    with pytest.raises(ValueError):
        rungs(min_epochs, rf, 10)


@pytest.mark.parametrize("value, rung_values, rf, sign, goes_on", [
    # fewer than rf values: only the best so far goes on
    (0.5, [0.5], 3, 1, True),
    (0.4, [0.5, 0.4], 3, 1, False),
    (0.6, [0.5, 0.6], 3, 1, True),
    # 3 values, rf 3: the top 1; 6 values: the top 2
    (0.7, [0.9, 0.7, 0.8], 3, 1, False),
    (0.9, [0.9, 0.7, 0.8], 3, 1, True),
    (0.8, [0.9, 0.8, 0.1, 0.2, 0.3, 0.4], 3, 1, True),
    (0.4, [0.9, 0.8, 0.1, 0.2, 0.3, 0.4], 3, 1, False),
    # minimize: the lowest are the best
    (0.1, [0.9, 0.7, 0.1], 3, -1, True),
    (0.7, [0.9, 0.7, 0.1], 3, -1, False),
    (0.2, [0.2, 0.5], 2, -1, True),
    # ties go on
    (0.5, [0.5, 0.5, 0.5], 3, 1, True),
    (math.nan, [math.nan], 3, 1, False),
])
def test_asha_promotes(value, rung_values, rf, sign, goes_on):
    assert asha_promotes(value, rung_values, rf, sign) is goes_on


@pytest.mark.parametrize("value, others, sign, n_finished, startup, prunes", [
    (0.4, [0.5, 0.6, 0.7], 1, 4, 4, True),  # below the median 0.6
    (0.6, [0.5, 0.6, 0.7], 1, 4, 4, False),  # a tie goes on
    (0.55, [0.5, 0.6], 1, 4, 4, False),  # even count: the median is 0.55
    (0.54, [0.5, 0.6], 1, 4, 4, True),
    (0.4, [0.5, 0.6, 0.7], 1, 3, 4, False),  # startup: 3 finished of 4
    (0.4, [], 1, 9, 0, False),  # no others
    (0.7, [0.5, 0.6, 0.65], -1, 4, 4, True),  # minimize: above the median
    (0.5, [0.5, 0.6, 0.65], -1, 4, 4, False),
    (math.nan, [0.5], 1, 4, 4, True),
    (0.4, [math.nan, 0.5], 1, 4, 0, True),  # NaN others are left out
])
def test_median_prunes(value, others, sign, n_finished, startup, prunes):
    assert median_prunes(value, others, sign, n_finished, startup) is prunes


def test_checks_at():
    asha, median = Settings("asha", 2, 3), Settings("median", 2)
    assert [e for e in range(1, 20) if checks_at(asha, e)] == [2, 6, 18]
    assert [e for e in range(1, 6) if checks_at(median, e)] == [2, 3, 4, 5]
    assert not any(checks_at(Settings("none"), e) for e in range(1, 10))
    with pytest.raises(ValueError, match="unknown pruner"):
        checks_at(Settings("hyperband"), 1)


def test_should_prune_asha_judges_at_rungs_only():
    s = Settings("asha", min_epochs=1, reduction_factor=2)
    history = {0: {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.9}, 1: {1: 0.1, 2: 0.2, 3: 0.3}}
    assert should_prune(s, 1, 1, history, 1)  # rung 1: 2 values, top 1 goes on
    assert not should_prune(s, 1, 3, history, 1)  # not a rung
    history[1][2] = 0.95
    assert not should_prune(s, 1, 2, history, 1)


def test_should_prune_median_uses_the_best_so_far_and_running_trials():
    s = Settings("median", min_epochs=2, pruner_startup=1)
    history = {0: {1: 0.5, 2: 0.6}, 1: {1: 0.5, 2: 0.7}, 2: {1: 0.8, 2: 0.4}}
    assert not should_prune(s, 2, 1, history, 1)  # before min_epochs
    # trial 2 fell to 0.4 at epoch 2, but its best so far (0.8) beats the median 0.65
    assert not should_prune(s, 2, 2, history, 1)
    history[2] = {1: 0.3, 2: 0.4}
    assert should_prune(s, 2, 2, history, 1)
    # trial 1 (say still running) counts among the others: alone, trial 0's 0.6 would be no worse
    assert should_prune(s, 0, 2, {0: history[0], 1: history[1]}, 1)
    assert not should_prune(Settings("median", 2, pruner_startup=2), 0, 2, {0: history[0], 1: history[1]}, 1)


# ----------------------------------------------------------------------------- against Optuna


def random_curves(rng: random.Random, n_trials: int, n_epochs: int, ties: bool) -> list[list[float]]:
    """Per trial, a noisy curve of ``n_epochs`` values, rising on the whole but not every epoch (so
    a trial's best so far is not always its last), rounded coarsely for ``ties``."""
    curves = []
    for _ in range(n_trials):
        level, v, curve = rng.uniform(0, 1), 0.0, []
        for _ in range(n_epochs):
            v += level * rng.uniform(-0.2, 0.3)
            curve.append(round(v, 1) if ties else v)
        curves.append(curve)
    return curves


def optuna_pruner(s: Settings) -> optuna.pruners.BasePruner:
    if s.pruner == "median":
        # step = epoch (1-based): Optuna's warmup disables pruning while step < n_warmup_steps
        return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup, n_warmup_steps=s.min_epochs)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=s.min_epochs, reduction_factor=s.reduction_factor,
                                                  min_early_stopping_rate=0, bootstrap_count=0)


def run_both(s: Settings, curves: list[list[float]], in_flight: int, rng: random.Random) -> list[tuple]:
    """Trials in ``curves`` run ``in_flight`` at a time, a random running one advancing one epoch
    at a time; after each report both Optuna and ``should_prune`` decide. Returns every decision
    as ``(trial, epoch, optuna's, ours)``; a trial stops when Optuna prunes it.

    Optuna's median compares with completed trials only and counts only those as finished;
    fastlab's with every trial that reported (the store's trial link gives them all), so for
    the median the history and count given to ours are the completed trials' (plus this one).
    """
    study = optuna.create_study(direction=s.direction, pruner=optuna_pruner(s))
    waiting = list(range(len(curves)))
    running: dict[int, tuple[optuna.trial.Trial, int]] = {}  # number -> (trial, epochs done)
    history: dict[int, dict[int, float]] = {}
    completed: set[int] = set()
    finished = 0
    decisions = []
    while waiting or running:
        while waiting and len(running) < in_flight:
            n = waiting.pop(0)
            running[n] = (study.ask(), 0)
            history[n] = {}
        n = rng.choice(sorted(running))
        trial, done = running[n]
        epoch, value = done + 1, curves[n][done]
        trial.report(value, epoch)
        history[n][epoch] = value
        theirs = trial.should_prune()
        if s.pruner == "median":
            seen = {k: v for k, v in history.items() if k in completed or k == n}
            ours = should_prune(s, n, epoch, seen, len(completed))
        else:
            ours = should_prune(s, n, epoch, history, finished)
        decisions.append((n, epoch, theirs, ours))
        if theirs:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif epoch == len(curves[n]):
            study.tell(trial, value)
            completed.add(n)
        else:
            running[n] = (trial, epoch)
            continue
        finished += 1
        del running[n]
    return decisions


CASES = [
    Settings("median", min_epochs=1, pruner_startup=0),
    Settings("median", min_epochs=2, pruner_startup=4),
    Settings("median", min_epochs=3, pruner_startup=2, direction="minimize"),
    Settings("asha", min_epochs=1, reduction_factor=3),
    Settings("asha", min_epochs=1, reduction_factor=2, direction="minimize"),
    Settings("asha", min_epochs=2, reduction_factor=3),
    Settings("asha", min_epochs=1, reduction_factor=4),
]


@pytest.mark.parametrize("s", CASES, ids=lambda s: f"{s.pruner}-{s.min_epochs}-{s.reduction_factor}-"
                                                  f"{s.pruner_startup}-{s.direction}")
@pytest.mark.parametrize("seed", range(6))
def test_same_decisions_as_optuna(s, seed):
    rng = random.Random(seed)
    in_flight = 1 if seed % 3 == 0 else rng.randint(2, 5)  # sequential, then asynchronous
    curves = random_curves(rng, n_trials=rng.randint(8, 25), n_epochs=rng.choice([9, 12, 20]), ties=seed % 2 == 1)
    if s.direction == "minimize":
        curves = [[-v for v in c] for c in curves]  # falling curves: lower is better
    decisions = run_both(s, curves, in_flight, rng)
    mismatches = [d for d in decisions if d[2] != d[3]]
    assert not mismatches, mismatches[:5]
    assert any(d[2] for d in decisions) or s.pruner_startup > 0  # the comparison saw pruning
