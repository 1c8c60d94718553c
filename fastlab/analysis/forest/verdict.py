"""What the report may say: whether an optimum is clear, and how far to trust the forest.

Every sentence of ``report.md`` and every verdict field of ``summary.json`` that says "clear",
"optimum", "inside" or "outside" is worded here, from one rule, so two parts of a report can never
disagree. Pure functions of numbers: no forest, no files.

**The rule.** An optimum is *clear* when, for its baseline,

1. the interval of the gain (the best value's partial dependence minus the baseline's, across the
   bootstrap refits) lies above 0, and
2. the interval of the best value (the refits' argmax) leaves the baseline out.

The baseline is the neutral value (a ratio of 1: no discrimination) when there is one on the
grid; otherwise both ends of the sampled range, so that a clear optimum lies inside the range and
beats each end. Only a clear optimum is compared with a reference: inside or outside its interval.
Without one, the reference is neither confirmed nor ruled out, whatever the interval's bounds.

**The trust scale** (:data:`TRUST_SCALE`) grades the forest by its out-of-bag R^2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# (grade, lowest OOB R^2 of the grade, what it means for the report); the first grade whose
# bound the R^2 reaches. A NaN R^2 (too few out-of-bag trials) is "do not trust".
TRUST_SCALE: tuple[tuple[str, float, str], ...] = (
    ("good", 0.75, ""),
    ("moderate", 0.5, "the ranking of what matters is usable; check the optimum with --confirm "
                      "before relying on it"),
    ("weak", 0.25, "the importances are hints and the optimum a sketch: confirm it (--confirm) "
                   "or run more trials"),
    ("do not trust", -math.inf, "the forest explains too little of the trials' spread for its "
                                "importances or optima to mean anything; run more trials, or "
                                "narrow the ranges to where training works"),
)
SCALE_TEXT = "OOB R^2 < 0.25 do not trust, 0.25-0.5 weak, 0.5-0.75 moderate, >= 0.75 good"


def fmt(v: float | None, signed: bool = False) -> str:
    """A number to 3 significant digits for sentences (``+0.0312`` with ``signed``)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.3g}" if signed else f"{v:.3g}"


def trust(oob_r2: float | None) -> dict[str, Any]:
    """The grade of a forest's fit: ``{grade, oob_r2, advice, scale}`` (advice "" for good)."""
    r2 = math.nan if oob_r2 is None else float(oob_r2)
    grade, _, advice = next((row for row in TRUST_SCALE if math.isfinite(r2) and r2 >= row[1]),
                            TRUST_SCALE[-1])
    return {"grade": grade, "oob_r2": None if not math.isfinite(r2) else r2, "advice": advice,
            "scale": SCALE_TEXT}


def trust_warning(oob_r2: float | None) -> str | None:
    """The report's warning for a fit below "good" on the trust scale, or None."""
    t = trust(oob_r2)
    if t["grade"] == "good":
        return None
    share = ("almost none" if t["oob_r2"] is None or t["oob_r2"] <= 0
             else f"{t['oob_r2']:.0%}")
    return (f"trust in this fit: {t['grade']} (OOB R^2 = {fmt(t['oob_r2'])}: the forest explains "
            f"{share} of the trials' spread out of bag; scale: {SCALE_TEXT}): {t['advice']}")


@dataclass(frozen=True)
class Baseline:
    """What the best value is measured against.

    Attributes
    ----------
    what : how sentences name it: ``the neutral``, ``the low end``, ``the high end``.
    value : the baseline's parameter value.
    gain : the full-data forest's gain of the best value over it (in the direction of better).
    gain_interval : (lo, hi) of the gain across the bootstrap refits.
    """

    what: str
    value: float
    gain: float
    gain_interval: tuple[float, float]


def _contains(interval: tuple[float, float], value: float) -> bool:
    lo, hi = interval
    tol = 1e-9 * max(1.0, abs(value))  # a value read back through log10 lands a hair off
    return lo - tol <= value <= hi + tol


def is_clear(interval: tuple[float, float], baselines: Sequence[Baseline]) -> bool:
    """The rule (module docstring): every baseline is beaten (gain interval above 0) and left
    out of the best value's interval."""
    return bool(baselines) and all(b.gain_interval[0] > 0 and not _contains(interval, b.value)
                                   for b in baselines)


def rule_text(baselines: Sequence[dict[str, Any] | Baseline]) -> str:
    """The rule as the report states it, for these baselines (``recommendation["baselines"]``)."""
    names = [f"{b['what']} {fmt(b['value'])}" if isinstance(b, dict) else
             f"{b.what} {fmt(b.value)}" for b in baselines]
    return ("The optimum is clear when the interval of its gain over "
            + " and over ".join(names) + " lies above 0 and the interval of the best value leaves "
            + ("it" if len(names) == 1 else "them") + " out.")


def judge(param: str, best: float, interval: tuple[float, float], level: float,
          baselines: Sequence[Baseline], reference: float | None = None,
          at_edge: bool = False, objective: str = "objective") -> dict[str, Any]:
    """Every verdict word about one parameter's optimum, from :func:`is_clear`.

    Parameters
    ----------
    param : the parameter's name.
    best, interval : the best value and the (lo, hi) interval of the refits' best values.
    level : the intervals' coverage, e.g. 0.9.
    baselines : one (the neutral value) or two (the ends of the sampled range).
    reference : a value to place inside or outside the interval of a clear optimum (2.6).
    at_edge : the best value lies at an end of the sampled range.

    Returns
    -------
    ``{clear_optimum, verdict, clear_text, gain_excludes_zero, interval_excludes_baseline,
    reference_inside, reference_in_interval, reference_text}``: ``verdict`` is the report's
    sentence; ``clear_text`` the table's "yes" or "no (why)"; ``reference_inside`` True or False
    for a clear optimum and None otherwise; ``reference_in_interval`` the bare geometric fact.
    """
    pct = f"{level:.0%}"
    lo, hi = interval
    iv = f"{pct} interval {fmt(lo)} to {fmt(hi)}"
    clear = is_clear(interval, baselines)
    beats = [b.gain_interval[0] > 0 for b in baselines]
    apart = [not _contains(interval, b.value) for b in baselines]
    in_iv = None if reference is None else _contains(interval, reference)

    def gain_text(b: Baseline) -> str:
        g_lo, g_hi = b.gain_interval
        return (f"{fmt(b.gain, True)} {objective} over {b.what} {fmt(b.value)} ({pct} interval "
                f"{fmt(g_lo, True)} to {fmt(g_hi, True)})")

    if clear:
        where = ("which leaves out " + " and ".join(f"{b.what} {fmt(b.value)}" for b in baselines)
                 if len(baselines) == 1 else
                 "inside the sampled range, clear of both ends")
        verdict = (f"clear optimum: best {param} = {fmt(best)} ({iv}, {where}); "
                   + "; ".join(gain_text(b) for b in baselines))
        if at_edge:
            verdict += "; it sits at the edge of the sampled range: the optimum may lie beyond it"
        clear_text = "yes"
    else:
        reasons = []
        for b, ok_gain, ok_apart in zip(baselines, beats, apart):
            g_lo, g_hi = b.gain_interval
            if b.gain == 0 and _contains((best, best), b.value):
                reasons.append(f"the best value is {b.what} {fmt(b.value)} itself")
                continue
            if ok_gain:
                reasons.append(f"it beats {b.what} {fmt(b.value)} ({gain_text(b)}), but the "
                               f"{pct} interval of the best value ({fmt(lo)} to {fmt(hi)}) "
                               f"reaches {b.what}")
            elif g_hi < 0:
                reasons.append(f"{b.what} {fmt(b.value)} does better ({gain_text(b)})")
            else:
                reasons.append(f"the gain over {b.what} {fmt(b.value)} could be 0 "
                               f"({pct} interval {fmt(g_lo, True)} to {fmt(g_hi, True)})"
                               + ("" if ok_apart else f", and the {pct} interval of the best "
                                  f"value ({fmt(lo)} to {fmt(hi)}) includes it"))
        if not baselines:
            reasons.append("there is nothing to measure the best value against")
        verdict = (f"no clear optimum for {param}: " + "; ".join(reasons)
                   + f". The forest's best {param} = {fmt(best)} ({iv}) is a hint, not a finding")
        clear_text = "no (" + ("; ".join(
            f"the gain interval over {b.what} includes 0" if not g
            else f"the interval of the best reaches {b.what}"
            for b, g, a in zip(baselines, beats, apart) if not (g and a))
            or "nothing to compare with") + ")"
    if reference is not None and clear:
        ref_text = f"{'inside' if in_iv else 'outside'} the interval"
        verdict += f"; the reference {fmt(reference)} lies {ref_text}"
    elif reference is not None:
        ref_text = "neither confirmed nor ruled out (no clear optimum)"
        verdict += f", so the reference {fmt(reference)} is neither confirmed nor ruled out"
    else:
        ref_text = None
    return {
        "clear_optimum": clear,
        "verdict": verdict + ".",
        "clear_text": clear_text,
        "gain_excludes_zero": all(beats) and bool(baselines),
        "interval_excludes_baseline": all(apart) and bool(baselines),
        "reference_inside": in_iv if clear else None,
        "reference_in_interval": in_iv,
        "reference_text": ref_text,
    }


def verdict_label(clear: bool, reference_inside: bool | None, reference: float | None) -> str:
    """The verdict in three words, to count agreement between refits (stability, the matrix):
    ``clear, 2.6 inside`` / ``clear, 2.6 outside`` / ``clear`` / ``no clear optimum``."""
    if not clear:
        return "no clear optimum"
    if reference is None or reference_inside is None:
        return "clear"
    return f"clear, {fmt(reference)} {'inside' if reference_inside else 'outside'}"
