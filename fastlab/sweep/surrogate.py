"""The forest strategy's model: a random-forest surrogate and expected improvement.

The surrogate is scikit-learn's ``RandomForestRegressor`` on the unit-cube coordinates of the
finished trials (a conditional key absent from a trial sits outside the cube, at
``space.ABSENT_UNIT``, where a tree can split it off from every value). Its trees disagree where data are thin, so the spread of their predictions serves
as the uncertainty that expected improvement (EI) trades against the mean (as in SMAC).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import norm
from sklearn.ensemble import RandomForestRegressor

from fastlab.sweep.space import SearchSpace

if TYPE_CHECKING:  # strategies calls into this module, only when the forest proposes
    from fastlab.sweep.strategies import Observation

N_TREES = 64
MIN_SAMPLES_LEAF = 1
MAX_FEATURES = 1.0
N_UNIFORM = 1024  # uniform candidates, for exploration
N_LOCAL = 64  # candidates around each of the best trials, for refinement
N_BEST = 5
LOCAL_SCALE = 0.05  # the spread of local candidates, in unit-cube coordinates
MIN_SPACING = 0.03  # proposals of one batch lie at least this far apart (unit cube, per dim)


def expected_improvement(
    mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.01
) -> np.ndarray:
    """EI of candidates for maximization, shape (n,): E[max(f - best - xi, 0)] for f ~ N(mean, std²)."""
    std = np.maximum(std, 1e-12)
    z = (mean - best - xi) / std
    return (mean - best - xi) * norm.cdf(z) + std * norm.pdf(z)


def targets(values: Sequence[float | None], sign: float) -> np.ndarray:
    """Observed values -> what the surrogate fits, shape (n,): maximized, standardized.

    A diverged trial (None or NaN) counts as the worst value seen, so the model learns to avoid
    its region instead of ignoring it.
    """
    y = np.array([np.nan if v is None else sign * v for v in values], dtype=float)
    finite = np.isfinite(y)
    if not finite.any():
        return np.zeros_like(y)
    y[~finite] = y[finite].min()
    spread = y.std()
    return (y - y.mean()) / (spread if spread > 0 else 1.0)


def forest_proposals(
    space: SearchSpace,
    finished: Sequence[Observation],
    count: int,
    sign: float,
    taken: Sequence[dict[str, Any]],
    seed: int,
) -> list[dict[str, Any]]:
    """Up to ``count`` distinct params with the highest EI, none equal to one in ``taken``."""
    rng = np.random.default_rng(seed)
    x = np.array([space.to_unit(o.params) for o in finished])  # (n, d)
    y = targets([o.value for o in finished], sign)  # (n,)
    model = RandomForestRegressor(
        n_estimators=N_TREES,
        min_samples_leaf=MIN_SAMPLES_LEAF,
        max_features=MAX_FEATURES,
        random_state=seed % 2**32,
    ).fit(x, y)

    candidates = _candidates(x, y, rng)  # (m, d)
    if space.conditions:
        # A candidate's absent keys at ABSENT_UNIT, as the finished trials' are: the trees then
        # predict it from the same branch its trial would land on.
        candidates = np.array([space.to_unit(space.from_unit(c)) for c in candidates])
    per_tree = np.stack([tree.predict(candidates) for tree in model.estimators_])  # (trees, m)
    # The incumbent is the model's best prediction at a tried point, not the best observation:
    # trial values are noisy, and a lucky draw should not make everything else look hopeless.
    incumbent = model.predict(x).max()
    ei = expected_improvement(per_tree.mean(axis=0), per_tree.std(axis=0), best=incumbent)

    seen = {space.key_of(p) for p in taken}
    chosen: list[dict[str, Any]] = []
    chosen_units: list[np.ndarray] = []
    for i in np.argsort(-ei, kind="stable"):
        params = space.from_unit(candidates[i])
        key = space.key_of(params)
        if key in seen:
            continue
        # Spread a batch out: near-identical proposals would waste parallel workers.
        if any(np.max(np.abs(candidates[i] - u)) < MIN_SPACING for u in chosen_units):
            continue
        seen.add(key)
        chosen.append(params)
        chosen_units.append(candidates[i])
        if len(chosen) == count:
            break
    return chosen


def _candidates(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform points plus Gaussian steps around the best trials, clipped to the cube, (m, d)."""
    d = x.shape[1]
    uniform = rng.random((N_UNIFORM, d))
    best = x[np.argsort(-y, kind="stable")[:N_BEST]]  # (k, d)
    local = best[:, None, :] + rng.normal(scale=LOCAL_SCALE, size=(len(best), N_LOCAL, d))
    local = np.clip(local.reshape(-1, d), 0.0, 1.0 - 1e-9)
    return np.concatenate([uniform, local])
