"""Held-out permutation importance: how much worse the forest predicts unseen trials when one
parameter's column is shuffled.

Impurity importance rewards parameters with many distinct values even when they are noise;
permutation importance on trials the forest did not train on does not. The trials are split into
K folds; for each fold a forest fits the rest and ``sklearn.inspection.permutation_importance``
shuffles each column of the held-out fold ``n_repeats`` times.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.inspection import permutation_importance
from sklearn.model_selection import KFold

from fastlab.analysis.forest.trees import fit_quietly


def heldout_importance(make_forest: Callable[[int], object], X: np.ndarray, y: np.ndarray,
                       n_splits: int = 5, n_repeats: int = 5,
                       random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
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
        scores.append(r.importances / var)
    all_scores = np.concatenate(scores, axis=1)  # (d, k * n_repeats)
    return all_scores.mean(axis=1), all_scores.std(axis=1)
