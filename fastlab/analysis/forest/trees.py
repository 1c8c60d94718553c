"""The meta-model: scikit-learn's random forest, with out-of-bag R^2 as its honesty check (graded
by :data:`fastlab.analysis.forest.verdict.TRUST_SCALE`)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.ensemble import RandomForestRegressor


def make_forest(n_estimators: int = 300, min_samples_leaf: int = 3, random_state: int = 0,
                n_jobs: int | None = None) -> RandomForestRegressor:
    """A ``RandomForestRegressor`` with out-of-bag scoring.

    ``min_samples_leaf`` > 1 averages the noise of single trials (seeds) inside each leaf, which
    keeps partial dependence curves from chasing one lucky run. ``max_features=1.0`` lets every
    split see every parameter: with few parameters that keeps irrelevant ones from being forced
    into splits, so their importance and partial dependence stay near zero.
    """
    return RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                 max_features=1.0, oob_score=True, random_state=random_state,
                                 n_jobs=n_jobs)


def fit_quietly(forest: RandomForestRegressor, X: np.ndarray, y: np.ndarray) -> RandomForestRegressor:
    """``forest.fit(X, y)``, silencing scikit-learn's warning that a few trials never fell out of
    bag (possible with very few trials): their OOB prediction is then NaN and left out."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OOB.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*out-of-bag.*", category=UserWarning)
        return forest.fit(X, y)


def oob_r2(forest: RandomForestRegressor, y: np.ndarray) -> float:
    """Out-of-bag R^2 of a fitted forest over the trials that have an OOB prediction.

    Parameters
    ----------
    forest : fitted with ``oob_score=True``.
    y : (n,) the response it was fitted to.
    """
    pred = np.asarray(forest.oob_prediction_, dtype=float).ravel()  # (n,)
    ok = np.isfinite(pred)
    if ok.sum() < 2 or np.var(y[ok]) == 0:
        return float("nan")
    return float(1.0 - np.mean((y[ok] - pred[ok]) ** 2) / np.var(y[ok]))
