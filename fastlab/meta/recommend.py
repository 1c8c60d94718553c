"""The recommendation for the focus parameter, from its partial dependence and the bootstrap.

Pure functions of arrays: no forest, no files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastlab.meta.dependence import plateau_argmax
from fastlab.meta.encode import Feature

# A parameter whose shuffling costs less than this share of the trials' variance (held out)
# does not matter enough to have an optimum worth stating.
MIN_IMPORTANCE = 0.01
# When the bootstrap's best values spread over more than this share of the sampled range (in the
# column's scale), the data do not locate an optimum.
MAX_INTERVAL_SHARE = 0.5

# Neutral values: where a parameter does nothing (a ratio of 1 is no discrimination).
NEUTRAL = {"schedule.lr_ratio": 1.0}


def fmt(v: float | None, signed: bool = False) -> str:
    """A number to 3 significant digits for sentences (``+0.0312`` with ``signed``)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.3g}" if signed else f"{v:.3g}"


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
              objective: str = "objective") -> dict[str, Any]:
    """Best value of a numeric parameter, its interval, the gain over a neutral value, a verdict.

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
    importance : (mean, std) of the parameter's held-out permutation importance.

    Returns
    -------
    ``{param, best, interval [lo, hi], level, clear_optimum, verdict, at_edge, predicted_best,
    neutral, predicted_neutral, gain, gain_interval, reference, reference_inside, importance,
    importance_std, boot_best_share_of_range}``; values in the parameter's own units.
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

    gain = gain_iv = pred_neutral = None
    is_neutral = False
    if neutral is not None and _on_grid(feature, grid, neutral):
        n_i = int(np.argmin(np.abs(grid - feature.to_x([neutral])[0])))
        is_neutral = abs(grid[best_i] - grid[n_i]) < 0.05 * span
        pred_neutral = float(curve[n_i])
        gain = float(sign * (curve[best_i] - curve[n_i]))
        gain_iv = list(quantiles(sign * (boot[:, best_i] - boot[:, n_i]), level))
    inside = None if reference is None else bool(lo <= reference <= hi)

    imp_mean, imp_std = importance
    reasons = []
    if not (imp_mean > MIN_IMPORTANCE and imp_mean > imp_std):
        reasons.append(f"permutation importance {fmt(imp_mean)} ± {fmt(imp_std)}")
    if share > MAX_INTERVAL_SHARE:
        reasons.append(f"the bootstrap's best values spread over {fmt(lo)} to {fmt(hi)}, "
                       f"{share:.0%} of the sampled range")
    clear = not reasons
    pct = f"{level:.0%}"
    if clear and is_neutral:
        verdict = (f"best {name} = {fmt(best)}, the neutral value itself ({pct} interval "
                   f"{fmt(lo)} to {fmt(hi)}): on average over the other parameters, moving "
                   f"{name} away from {fmt(neutral)} does not help")
    elif clear:
        verdict = f"best {name} = {fmt(best)} ({pct} interval {fmt(lo)} to {fmt(hi)})"
        if at_edge:
            verdict += ", at the edge of the sampled range: the optimum may lie beyond it"
        if gain is not None:
            verdict += (f"; {fmt(gain, True)} {objective} over the neutral {fmt(neutral)} "
                        f"({pct} interval {fmt(gain_iv[0], True)} to {fmt(gain_iv[1], True)})")
    else:
        verdict = (f"no clear optimum for {name}: the response is flat over "
                   f"{fmt(feature.low)} to {fmt(feature.high)} ({'; '.join(reasons)}); any value "
                   "in the range does about as well")
    if reference is not None and clear:
        verdict += (f"; the reference {fmt(reference)} lies "
                    f"{'inside' if inside else 'outside'} the interval")
    elif reference is not None:
        verdict += f", so the reference {fmt(reference)} is neither confirmed nor ruled out"
    return {
        "param": name,
        "best": best,
        "interval": [lo, hi],
        "level": level,
        "clear_optimum": clear,
        "verdict": verdict + ".",
        "at_edge": bool(at_edge),
        "is_neutral": bool(is_neutral),
        "predicted_best": float(curve[best_i]),
        "neutral": neutral,
        "predicted_neutral": pred_neutral,
        "gain": gain,
        "gain_interval": gain_iv,
        "reference": reference,
        "reference_inside": inside,
        "importance": float(imp_mean),
        "importance_std": float(imp_std),
        "boot_best_share_of_range": float(share),
    }
