"""The mechanism: does the ratio itself carry the effect, or only the lowest group's rate?

With a head rate ``h``, a ratio ``r`` between adjacent groups and ``g`` layer groups, the lowest
group trains at ``h / r^(g - 1)``. A sweep over (head rate, ratio) covers the same runs as one
over (head rate, lowest rate): the two are one bijection apart, so no analysis of one basis can
tell them apart by what it contains. A forest can tell them apart by how it *predicts*: its splits
are along the axes, so an objective that depends on one column of a basis (the lowest rate, say)
is learned from fewer trials in the basis that has that column than in the one where it is a
diagonal. :func:`compare_bases` fits both bases on the same folds and compares their held-out
errors trial by trial; the basis that predicts unseen trials better is the one whose axes the
objective follows.

The decision (:func:`fastlab.analysis.forest.verdict.mechanism_verdict`) reads the interval of the
difference in held-out R^2 (the lowest-rate basis minus the ratio basis), from a bootstrap over
the trials of their paired errors: above 0, the lowest rate carries it; below 0, the ratio; a
straddle (or neither basis predicting at all), cannot tell.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.model_selection import RepeatedKFold

from fastlab.analysis.forest.dependence import pd_surface
from fastlab.analysis.forest.trees import fit_quietly

# What the lowest group's rate is, as a --derive expression over the sweep's columns and the
# runs' metrics.json facts (layer_groups).
LOWEST_RATE = "lowest_rate"
LOWEST_RATE_EXPR = "schedule.lr_max/schedule.lr_ratio**(layer_groups-1)"
REPEATS = 2  # shuffles of the K folds: each trial is held out this many times, its error averaged


def heldout_errors(make_forest: Callable[[int], object], bases: list[np.ndarray], y: np.ndarray,
                   n_splits: int = 5, repeats: int = REPEATS,
                   random_state: int = 0) -> np.ndarray:
    """Squared held-out errors of a forest in each basis, on the same folds.

    Parameters
    ----------
    make_forest : seed -> an unfitted regressor.
    bases : design matrices (n, d_b), the same trials in the same order.
    y : (n,) the response.

    Returns
    -------
    (len(bases), n): each trial's squared error when held out, averaged over the repeats.
    """
    n = len(y)
    k = max(2, min(n_splits, n))
    errors = np.zeros((len(bases), n))
    folds = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=random_state)
    for f, (train, test) in enumerate(folds.split(bases[0])):
        for b, X in enumerate(bases):
            forest = fit_quietly(make_forest(random_state + f), X[train], y[train])
            errors[b, test] += (forest.predict(X[test]) - y[test]) ** 2
    return errors / repeats


def compare_bases(make_forest: Callable[[int], object], X_ratio: np.ndarray,
                  X_lowest: np.ndarray, y: np.ndarray, level: float = 0.9, n_splits: int = 5,
                  n_boot: int = 1000, random_state: int = 0) -> dict[str, float | list[float]]:
    """Held-out R^2 of the ratio basis and of the lowest-rate basis, and their difference with an
    interval.

    Returns
    -------
    ``{"r2": {"ratio", "lowest_rate"}, "difference", "interval": [lo, hi], "level", "folds",
    "repeats"}``: ``difference`` is R^2(lowest-rate basis) - R^2(ratio basis), from the same
    held-out predictions; its interval is the percentile bootstrap over trials of the paired errors.
    """
    e = heldout_errors(make_forest, [X_ratio, X_lowest], y, n_splits, REPEATS, random_state)
    var = float(np.var(y)) or 1.0
    r2 = 1.0 - e.mean(axis=1) / var  # (2,)
    d = (e[0] - e[1]) / var  # (n,) per trial: positive where the lowest-rate basis errs less
    rng = np.random.default_rng([random_state, 29])
    idx = rng.integers(0, len(y), (n_boot, len(y)))
    boot = d[idx].mean(axis=1)  # (n_boot,)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"r2": {"ratio": float(r2[0]), LOWEST_RATE: float(r2[1])},
            "difference": float(d.mean()), "interval": [float(lo), float(hi)],
            "level": level, "folds": max(2, min(n_splits, len(y))), "repeats": REPEATS}


def ratio_surfaces(forests, j_head: int, j_low: int, ratio_grid: np.ndarray,
                   head_grid: np.ndarray, to_low: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   low_grid: np.ndarray):
    """Each forest of the lowest-rate basis read at (ratio, head rate) points: (G, K) per forest.

    A forest fitted on (head rate, lowest rate, ...) gives a 2-D partial dependence over those two
    columns (``head_grid`` x ``low_grid``, by the trees' recursion: cheap); the point (ratio r,
    head rate h) is the lowest rate ``to_low(r, h)`` on that surface, read by linear
    interpolation along the lowest rate. Every such point is a combination the sweep could run:
    the ratio and the head rate stay on their sampled grids.

    Parameters
    ----------
    forests : iterable of (forest, rows): a fitted forest and the design rows to average over.
    ratio_grid : (G,) the ratio's grid (column space); head_grid (K,), low_grid (L,) likewise.
    to_low : (ratio_x (G, 1), head_x (1, K)) -> the lowest rate's column values (G, K).

    Yields
    ------
    (G, K) per forest.
    """
    low = to_low(ratio_grid[:, None], head_grid[None, :])  # (G, K)
    for forest, rows in forests:
        s = pd_surface(forest, rows, j_head, j_low, head_grid, low_grid)  # (K, L)
        yield np.stack([np.interp(low[:, k], low_grid, s[k]) for k in range(len(head_grid))],
                       axis=1)
