"""Partial dependence: the forest's average prediction as one or two parameters move over a grid,
the others kept at the trials' own values; and its bootstrap over resampled trials.

All grids live in column space (log10 for log-scaled parameters, codes for categorical ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.inspection import partial_dependence

from fastlab.analysis.forest.encode import ABSENT_LABEL, Feature
from fastlab.analysis.forest.trees import fit_quietly

Progress = Callable[[int, int], None]

EXTRA_MARGIN = 0.1


def grid_for(feature: Feature, column: np.ndarray, size: int = 50,
             extra: Sequence[float] = ()) -> np.ndarray:
    """The grid of one column, shape (G,), sorted.

    Numeric: ``size`` points evenly spaced (in column space) over the observed range (rounded to
    whole values for an integer parameter), plus the ``extra`` parameter values (a neutral or
    reference value) that fall inside it or just beyond it (within ``EXTRA_MARGIN`` of its width:
    a ratio sampled from 1 is seen from 1.01 on, and a forest is flat beyond its last split
    anyway), so curves can be read exactly there. A discrete parameter: its sampled values only
    (``feature.levels``: a table against ``choice(8, 16, 32)`` lists 8, 16 and 32, never 17.9),
    so a neutral value is read only when it was sampled. Categorical: every code.
    """
    if not feature.numeric:  # a conditional one's (absent) is no value to set it to
        return np.asarray([i for i, c in enumerate(feature.categories) if c != ABSENT_LABEL], dtype=float)
    lo, hi = float(column.min()), float(column.max())
    margin = EXTRA_MARGIN * (hi - lo)
    if feature.discrete:  # no extras: a best value must be one the trials tried
        return np.asarray(feature.levels, dtype=float)
    if feature.integer:
        even = feature.to_x(feature.from_x(np.linspace(lo, hi, size)))  # whole values only
    else:
        even = np.linspace(lo, hi, size)
    points = [even]
    for v in extra:
        if v is None or (feature.log and v <= 0):
            continue
        x = float(feature.to_x([v])[0])
        if lo - margin <= x <= hi + margin:
            points.append(np.asarray([x]))
    return np.unique(np.concatenate(points))


def pd_curve(forest, X: np.ndarray, j: int, grid: np.ndarray) -> np.ndarray:
    """1-D partial dependence of column ``j`` on ``grid`` (G,) -> (G,)."""
    r = partial_dependence(forest, X, [j], custom_values={j: grid}, kind="average")
    return np.asarray(r["average"][0], dtype=float)


def pd_surface(forest, X: np.ndarray, j: int, k: int, grid_j: np.ndarray,
               grid_k: np.ndarray) -> np.ndarray:
    """2-D partial dependence of columns ``j`` and ``k`` -> (Gj, Gk)."""
    r = partial_dependence(forest, X, [j, k], custom_values={j: grid_j, k: grid_k},
                           kind="average")
    return np.asarray(r["average"][0], dtype=float)


def bootstrap_curves(make_forest: Callable[[int], object], X: np.ndarray, y: np.ndarray,
                     grids: dict[int, np.ndarray], n_boot: int, random_state: int = 0,
                     progress: Progress | None = None,
                     active: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Refit the forest on ``n_boot`` resamples of the trials (drawn with replacement) and compute
    every column's partial dependence on its grid each time.

    The band this gives covers the uncertainty of the whole procedure (which trials were run and
    how the forest fitted them), not only the trees' disagreement.

    Parameters
    ----------
    make_forest : seed -> an unfitted regressor.
    X : (n, d); y : (n,).
    grids : column -> grid (G_j,).
    progress : called as ``progress(done, n_boot)`` after each refit.
    active : column -> (n,) bool, for conditional columns: their curves average over the
        resampled rows that have the parameter (NaN in a resample without one).

    Returns
    -------
    column -> curves, shape (n_boot, G_j).
    """
    rng = np.random.default_rng(random_state)
    n = len(y)
    out = {j: np.empty((n_boot, len(g))) for j, g in grids.items()}
    for b in range(n_boot):
        idx = rng.integers(0, n, n)  # (n,) a resample of the trials
        forest = fit_quietly(make_forest(int(rng.integers(2**31))), X[idx], y[idx])
        for j, g in grids.items():
            rows = X[idx] if active is None or j not in active else X[idx][active[j][idx]]
            out[j][b] = pd_curve(forest, rows, j, g) if len(rows) else np.nan
        if progress is not None:
            progress(b + 1, n_boot)
    return out


def plateau_argmax(curve: np.ndarray) -> int:
    """The index of the curve's maximum; when a forest's step-shaped curve is flat at its top, the
    middle of that top plateau (the first argmax would sit on the plateau's edge)."""
    curve = np.asarray(curve, dtype=float)
    top = curve.max()
    at_top = np.isclose(curve, top, rtol=1e-9, atol=1e-12 * max(1.0, abs(top)))
    first = int(np.argmax(at_top))
    last = first
    while last + 1 < len(curve) and at_top[last + 1]:
        last += 1
    return (first + last) // 2


def conditional_optimum(surface: np.ndarray, sign: float) -> np.ndarray:
    """For each column of a (Gj, Gk) surface, the index along j of the best value -> (Gk,)."""
    return np.asarray([plateau_argmax(sign * surface[:, c]) for c in range(surface.shape[1])])
