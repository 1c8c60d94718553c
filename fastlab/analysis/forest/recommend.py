"""The recommendation for the focus parameter, from its partial dependence and the bootstrap.

Pure functions of arrays: no forest, no files. The words of the verdict come from
:mod:`fastlab.analysis.forest.verdict`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from fastlab.analysis.forest.dependence import plateau_argmax
from fastlab.analysis.forest.encode import Feature
from fastlab.analysis.forest.verdict import Baseline, judge, within_margin, within_text

# A parameter whose shuffling costs less than this share of the trials' variance (held out)
# does not matter (MetaAnalysis.matters: which value a preset keeps). Whether an optimum is clear
# is decided by the intervals alone (fastlab.analysis.forest.verdict).
MIN_IMPORTANCE = 0.01

# Neutral values: where a parameter does nothing (a ratio of 1 is no discrimination).
NEUTRAL = {"schedule.lr_ratio": 1.0}


def round3(v: float, integer: bool = False) -> int | float:
    """A value to write into a config: 3 significant digits (every interval here is wider than
    that), an int for an integer parameter."""
    return int(round(v)) if integer else float(f"{v:.3g}")


def quantiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of ``samples`` (n,)."""
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _on_grid(feature: Feature, grid: np.ndarray, value: float) -> bool:
    if feature.log and value <= 0:
        return False
    return bool(np.isclose(grid, feature.to_x([value])[0], rtol=0, atol=1e-12).any())


def recommend(feature: Feature, grid: np.ndarray, curve: np.ndarray, boot: np.ndarray,
              sign: float, level: float = 0.9, neutral: float | None = None,
              reference: float | None = None, importance: tuple[float, float] = (math.inf, 0.0),
              objective: str = "objective", margin: float = 0.0) -> dict[str, Any]:
    """Best value of a numeric parameter, its interval, the gain over its baseline, a verdict.

    The numbers are measured here; every verdict word comes from
    :func:`fastlab.analysis.forest.verdict.judge`. The baseline is the neutral value when it is on the
    grid, else both ends of the grid (the sampled range).

    Parameters
    ----------
    feature : the focus parameter's column description (numeric).
    grid : (G,) its grid, in column space.
    curve : (G,) partial dependence of the full-data forest, in objective units.
    boot : (B, G) the bootstrap's partial dependence curves on the same grid.
    sign : +1 to maximize the objective, -1 to minimize it.
    level : the intervals' coverage, e.g. 0.9.
    neutral, reference : parameter values (or None); they must be grid points to be read exactly
        (``grid_for(..., extra=...)`` puts them there).
    importance : (mean, std) of the parameter's held-out permutation importance (reported).
    margin : the smallest gain that counts, in objective units (the verdict's rule).

    Returns
    -------
    ``{param, best, interval [lo, hi], level, at_edge, is_neutral, predicted_best, neutral,
    predicted_neutral, gain, gain_interval, baselines, reference, importance, importance_std,
    boot_best_share_of_range}`` plus :func:`~fastlab.analysis.forest.verdict.judge`'s fields
    (``clear_optimum``, ``verdict``, ``reference_inside``, ...); values in the parameter's own
    units. ``gain`` and ``gain_interval`` are over the neutral value (None without one).
    """
    name = feature.name
    best_i = plateau_argmax(sign * curve)
    boot_best = np.asarray([grid[plateau_argmax(sign * c)] for c in boot])  # (B,) column space
    lo_x, hi_x = quantiles(boot_best, level)
    span = float(grid[-1] - grid[0]) or 1.0
    share = (hi_x - lo_x) / span
    best = float(feature.from_x([grid[best_i]])[0])
    lo, hi = (float(v) for v in feature.from_x([lo_x, hi_x]))
    # within 5% of either end of the sampled range: the optimum may lie beyond it
    at_edge = min(grid[best_i] - grid[0], grid[-1] - grid[best_i]) < 0.05 * span

    def baseline(what: str, i: int) -> Baseline:
        gain_iv = quantiles(sign * (boot[:, best_i] - boot[:, i]), level)  # from (B,)
        return Baseline(what, float(feature.from_x([grid[i]])[0]),
                        float(sign * (curve[best_i] - curve[i])), gain_iv)

    gain = gain_iv = pred_neutral = None
    is_neutral = False
    if neutral is not None and _on_grid(feature, grid, neutral):
        n_i = int(np.argmin(np.abs(grid - feature.to_x([neutral])[0])))
        is_neutral = abs(grid[best_i] - grid[n_i]) < 0.05 * span
        pred_neutral = float(curve[n_i])
        b = replace(baseline("the neutral", n_i), value=float(neutral))
        baselines = [b]
        gain, gain_iv = b.gain, list(b.gain_interval)
    else:  # no value that does nothing: a clear optimum must beat both ends of the range
        baselines = [baseline("the low end", 0), baseline("the high end", len(grid) - 1)]
    words = judge(name, best, (lo, hi), level, baselines, reference, bool(at_edge), objective,
                  margin)
    imp_mean, imp_std = importance
    return {
        "param": name,
        "best": best,
        "interval": [lo, hi],
        "level": level,
        **words,
        "at_edge": bool(at_edge),
        "is_neutral": bool(is_neutral),
        "predicted_best": float(curve[best_i]),
        "neutral": neutral,
        "predicted_neutral": pred_neutral,
        "gain": gain,
        "gain_interval": gain_iv,
        "baselines": [{"what": b.what, "value": b.value, "gain": b.gain,
                       "gain_interval": list(b.gain_interval)} for b in baselines],
        "reference": reference,
        "margin": float(margin),
        "importance": float(imp_mean),
        "importance_std": float(imp_std),
        "boot_best_share_of_range": float(share),
    }


def tuned_comparison(values: list[float], tuned: list[Any], surface: np.ndarray,
                     boot: np.ndarray, sign: float, level: float,
                     margin: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Non-inferiority and tunability of the focus, from slices of its 2-D partial dependence.

    Row 0 is the best focus value where the surface is best (the conditional optimum at the
    tuned other parameter, column ``c*``); the other rows are the values compared with it (a
    ratio of 1, the reference 2.6). Every difference is read at the same points in the full
    forest and in each bootstrap refit, as :func:`recommend`'s gains are.

    Parameters
    ----------
    values : (R,) the focus values of the rows, the best first.
    tuned : (K,) the other parameter's values of the columns (the head rates).
    surface : (R, K) the full forest's partial dependence at those points.
    boot : (B, R, K) the bootstrap refits' partial dependence at the same points.
    sign : +1 to maximize, -1 to minimize.
    level : the intervals' coverage.
    margin : the smallest difference that counts (objective units).

    Returns
    -------
    ``(noninferior, tunability)``: ``noninferior`` = ``{at, best, margin, level, arms: [{value,
    loss, interval, within, text}]}``, each arm's loss at the best's own column ``c*``;
    ``tunability`` = ``{best, at, predicted, level, arms: [{value, at, predicted, gain,
    interval}]}``, each arm at its own best column: what tuning the focus buys over fixing it.
    """
    score = sign * surface  # (R, K) higher is better
    c = int(np.argmax(score[0]))
    best_tuned = boot[:, 0, c]  # (B,)
    ni_arms, tu_arms = [], []
    for r in range(1, len(values)):
        loss = float(score[0, c] - score[r, c])
        iv = quantiles(sign * (best_tuned - boot[:, r, c]), level)
        within = within_margin(iv, margin)
        ni_arms.append({"value": float(values[r]), "loss": loss, "interval": list(iv),
                        "within": within, "text": within_text(within)})
        own = plateau_argmax(score[r])
        gain = float(score[0, c] - score[r, own])
        tu_arms.append({"value": float(values[r]), "at": _plain(tuned[own]),
                        "predicted": float(surface[r, own]), "gain": gain,
                        "interval": list(quantiles(sign * (best_tuned - boot[:, r, own]), level))})
    noninferior = {"at": _plain(tuned[c]), "best": float(values[0]), "margin": float(margin),
                   "level": level, "arms": ni_arms}
    tunability = {"best": float(values[0]), "at": _plain(tuned[c]),
                  "predicted": float(surface[0, c]), "level": level, "arms": tu_arms}
    return noninferior, tunability


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
