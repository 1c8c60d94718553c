"""Held-out permutation importance: how much worse the forest predicts unseen trials when one
parameter's column is shuffled.

Impurity importance rewards parameters with many distinct values even when they are noise;
permutation importance on trials the forest did not train on does not. The trials are split into
K folds; for each fold a forest fits the rest and ``sklearn.inspection.permutation_importance``
shuffles each column of the held-out fold ``n_repeats`` times. A conditional parameter's column is
shuffled among the held-out trials that have it, and its importance is the rise in error on those
trials: what its value is worth where it was swept, not whether it was swept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.inspection import permutation_importance
from sklearn.model_selection import KFold

from fastlab.analysis.forest.trees import fit_quietly


def heldout_importance(make_forest: Callable[[int], object], X: np.ndarray, y: np.ndarray,
                       n_splits: int = 5, n_repeats: int = 5, random_state: int = 0,
                       active: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of each column's held-out permutation importance.

    Importance is the rise in mean squared error when the column is shuffled, divided by the
    variance of ``y``, so it reads in R^2 units whatever the objective: about 0 for an irrelevant
    parameter (it may dip below 0), and up to about 2 for one that decides everything (shuffling
    adds the prediction's variance on top of the lost signal).

    Parameters
    ----------
    make_forest : seed -> an unfitted regressor.
    X : (n, d) design matrix.
    y : (n,) response.
    active : column -> (n,) bool, for conditional columns: the rows that have the parameter.

    Returns
    -------
    mean, std : (d,) each, over all folds and repeats.
    """
    n, d = X.shape
    var = float(np.var(y)) or 1.0
    k = max(2, min(n_splits, n))
    scores = []  # (d, n_repeats) per fold
    for fold, (train, test) in enumerate(KFold(k, shuffle=True, random_state=random_state).split(X)):
        forest = fit_quietly(make_forest(random_state + fold), X[train], y[train])
        r = permutation_importance(forest, X[test], y[test], scoring="neg_mean_squared_error",
                                   n_repeats=n_repeats, random_state=random_state + fold)
        importances = r.importances
        for j, has in (active or {}).items():
            importances[j] = _within(forest, X[test][has[test]], y[test][has[test]], j, n_repeats,
                                     np.random.default_rng([random_state, fold, j]))
        scores.append(importances / var)
    all_scores = np.concatenate(scores, axis=1)  # (d, k * n_repeats)
    # a fold without a trial that has a conditional parameter says nothing of it (NaN)
    return np.nanmean(all_scores, axis=1), np.nanstd(all_scores, axis=1)


def _within(forest, X: np.ndarray, y: np.ndarray, j: int, n_repeats: int,
            rng: np.random.Generator) -> np.ndarray:
    """(n_repeats,) rises in mean squared error on ``X``, ``y`` (the held-out rows that have
    conditional column ``j``) when column ``j`` is shuffled among them; NaN with fewer than 2."""
    if len(y) < 2:
        return np.full(n_repeats, np.nan)
    base = np.mean((forest.predict(X) - y) ** 2)
    out = np.empty(n_repeats)
    for r in range(n_repeats):
        shuffled = X.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        out[r] = np.mean((forest.predict(shuffled) - y) ** 2) - base
    return out
