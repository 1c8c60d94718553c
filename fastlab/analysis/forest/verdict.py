"""What the report may say: whether an optimum is clear, and how far to trust the forest.

Every sentence of ``report.md`` and every verdict field of ``summary.json`` that says "clear",
"optimum", "inside" or "outside" is worded here, from one rule, so two parts of a report can never
disagree. Pure functions of numbers: no forest, no files.

**The rule.** An optimum is *clear* when, for its baseline,

1. the interval of the gain (the best value's partial dependence minus the baseline's, across the
   bootstrap refits) lies above 0: the gain is real;
2. the gain itself (the full-data forest's) exceeds the *margin*, the smallest gain worth acting
   on (by default the objective's noise between training seeds; :data:`DEFAULT_MARGIN_SHARE` of
   the objective when that noise was not measured; a margin of 0 leaves the bare rule 1 and 3):
   the gain matters; and
3. the interval of the best value (the refits' argmax) leaves the baseline out.

A gain whose interval excludes 0 but which stays below the margin is real and too small to
matter: "+0.002 accuracy" with a narrow interval is not a clear optimum.

The baseline is the neutral value (a ratio of 1: no discrimination) when there is one on the
grid; otherwise both ends of the sampled range, so that a clear optimum lies inside the range and
beats each end. Only a clear optimum is compared with a reference: inside or outside its interval.
Without one, the reference is neither confirmed nor ruled out, whatever the interval's bounds.

**Non-inferiority** (:func:`within_margin`) is the same margin read the other way: a value (a ratio
of 1, or 2.6) is *within the margin* of the best when the interval of what it loses to the best
lies below the margin, *not within* when that interval lies above it, and undecided otherwise.

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

# The margin when the seed noise was not measured: this share of the trials' median |objective|
# (0.0045 on an accuracy of 0.9). Published gains from discriminative rates lie above it (ULMFiT's
# Table 7: 0.65-1.3 error points on IMDb and TREC-6) and seed-noise-sized ones below it (Sun et al.
# 2019, BERT on IMDb: at most 0.08 points).
DEFAULT_MARGIN_SHARE = 0.005


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


def is_clear(interval: tuple[float, float], baselines: Sequence[Baseline],
             margin: float = 0.0) -> bool:
    """The rule (module docstring): every baseline is beaten (gain interval above 0) by more than
    ``margin`` (the gain above it) and left out of the best value's interval."""
    return bool(baselines) and all(_beats(b, margin) and not _contains(interval, b.value)
                                   for b in baselines)


def _matters(b: Baseline | dict[str, Any], margin: float) -> bool:
    gain = b.gain if isinstance(b, Baseline) else b["gain"]
    return margin <= 0 or gain > margin


def _beats(b: Baseline, margin: float) -> bool:
    return b.gain_interval[0] > 0 and _matters(b, margin)


def within_margin(loss_interval: Sequence[float], margin: float) -> bool | None:
    """Non-inferiority: True when the interval of what a value loses to the best lies at or below
    ``margin``, False when it lies above it, None (undecided) when it straddles it."""
    lo, hi = loss_interval
    if hi <= margin:
        return True
    return False if lo > margin else None


def within_text(within: bool | None) -> str:
    """:func:`within_margin`'s answer in words."""
    return {True: "within the margin", False: "not within the margin",
            None: "undecided (its interval straddles the margin)"}[within]


def margin_text(margin: float, source: str, objective: str = "objective") -> str:
    """The margin as the report states it: ``margin = 0.0045 accuracy (default: ...)``."""
    return f"margin = {fmt(margin)} {objective} ({source})"


def margin_comparison(baselines: Sequence[dict[str, Any]], margin: float, level: float) -> str:
    """Each gain against the margin, as the report states it (``recommendation["baselines"]``):
    above it, below it, or possibly 0 (the same tests as :func:`is_clear`)."""
    pct = f"{level:.0%}"
    parts = []
    for b in baselines:
        lo, hi = b["gain_interval"]
        where = ("could be 0" if lo <= 0 else "is above the margin" if _matters(b, margin)
                 else "is below the margin: real, too small to matter")
        parts.append(f"the gain over {b['what']} {fmt(b['value'])}, {fmt(b['gain'], True)} "
                     f"({pct} interval {fmt(lo, True)} to {fmt(hi, True)}), {where}")
    return "; ".join(parts)


def rule_text(baselines: Sequence[dict[str, Any] | Baseline], margin: float = 0.0) -> str:
    """The rule as the report states it, for these baselines (``recommendation["baselines"]``)."""
    names = [f"{b['what']} {fmt(b['value'])}" if isinstance(b, dict) else
             f"{b.what} {fmt(b.value)}" for b in baselines]
    above = f", the gain itself exceeds the margin {fmt(margin)}," if margin > 0 else ""
    return ("The optimum is clear when the interval of its gain over "
            + " and over ".join(names) + f" lies above 0{above} and the interval of the best "
            "value leaves " + ("it" if len(names) == 1 else "them") + " out.")


def judge(param: str, best: float, interval: tuple[float, float], level: float,
          baselines: Sequence[Baseline], reference: float | None = None,
          at_edge: bool = False, objective: str = "objective",
          margin: float = 0.0) -> dict[str, Any]:
    """Every verdict word about one parameter's optimum, from :func:`is_clear`.

    Parameters
    ----------
    param : the parameter's name.
    best, interval : the best value and the (lo, hi) interval of the refits' best values.
    level : the intervals' coverage, e.g. 0.9.
    baselines : one (the neutral value) or two (the ends of the sampled range).
    reference : a value to place inside or outside the interval of a clear optimum (2.6).
    at_edge : the best value lies at an end of the sampled range.
    margin : the smallest gain that counts (objective units, >= 0); 0 is the bare rule.

    Returns
    -------
    ``{clear_optimum, verdict, clear_text, gain_excludes_zero, gain_exceeds_margin,
    interval_excludes_baseline, reference_inside, reference_in_interval, reference_text}``:
    ``verdict`` is the report's sentence; ``clear_text`` the table's "yes" or "no (why)";
    ``reference_inside`` True or False for a clear optimum and None otherwise;
    ``reference_in_interval`` the bare geometric fact.
    """
    pct = f"{level:.0%}"
    lo, hi = interval
    iv = f"{pct} interval {fmt(lo)} to {fmt(hi)}"
    clear = is_clear(interval, baselines, margin)
    beats = [_beats(b, margin) for b in baselines]
    nonzero = [b.gain_interval[0] > 0 for b in baselines]
    over = f", above the margin {fmt(margin)}" if margin > 0 else ""
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
                   + "; ".join(gain_text(b) + over for b in baselines))
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
                reach = ("" if ok_apart else f", and the {pct} interval of the best value "
                         f"({fmt(lo)} to {fmt(hi)}) includes it")
                if g_lo > 0:  # real, but smaller than the margin: too small to matter
                    reasons.append(f"the gain ({gain_text(b)}) is below the margin "
                                   f"{fmt(margin)}: real, too small to matter{reach}")
                else:
                    reasons.append(f"the gain over {b.what} {fmt(b.value)} could be 0 ({pct} "
                                   f"interval {fmt(g_lo, True)} to {fmt(g_hi, True)}){reach}")
        if not baselines:
            reasons.append("there is nothing to measure the best value against")
        verdict = (f"no clear optimum for {param}: " + "; ".join(reasons)
                   + f". The forest's best {param} = {fmt(best)} ({iv}) is a hint, not a finding")
        clear_text = "no (" + ("; ".join(
            f"the gain interval over {b.what} includes 0" if not z
            else f"the gain over {b.what} is below the margin" if not g
            else f"the interval of the best reaches {b.what}"
            for b, g, z, a in zip(baselines, beats, nonzero, apart) if not (g and a))
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
        "gain_excludes_zero": all(nonzero) and bool(baselines),
        "gain_exceeds_margin": all(_matters(b, margin) for b in baselines) and bool(baselines),
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


MECHANISMS = ("ratio", "lowest_rate", "cannot tell")


def mechanism_verdict(comparison: dict[str, Any], ratio_matters: bool,
                      groups: Sequence[int] = ()) -> dict[str, Any]:
    """Which basis carries the effect (:mod:`fastlab.analysis.forest.mechanism`), in words.

    ``lowest_rate`` when the interval of the difference in held-out R^2 (lowest-rate basis minus
    ratio basis) lies above 0; ``ratio`` when it lies below 0 and the ratio matters in its own
    basis (held-out importance clearly above 0); else ``cannot tell``, as when neither basis
    predicts held-out trials at all (both R^2 at or below 0).

    Returns
    -------
    ``comparison`` with ``basis`` (one of :data:`MECHANISMS`) and ``text`` added.
    """
    r2 = comparison["r2"]
    lo, hi = comparison["interval"]
    pct = f"{comparison['level']:.0%}"
    g = ("" if not groups else
         f" (lowest rate = head rate / ratio^(groups - 1), groups {', '.join(map(str, groups))})")
    figures = (f"held-out R^2 {fmt(r2['lowest_rate'])} in (head rate, lowest group's rate) against "
               f"{fmt(r2['ratio'])} in (head rate, ratio), difference "
               f"{fmt(comparison['difference'], True)} ({pct} interval {fmt(lo, True)} to "
               f"{fmt(hi, True)})")
    if max(r2.values()) <= 0:
        basis, why = "cannot tell", "neither basis predicts held-out trials"
    elif lo > 0:
        basis, why = "lowest_rate", ("the lowest group's rate carries the effect, not the ratio "
                                     "itself: what matters is how fast the lowest group learns")
    elif hi < 0 and ratio_matters:
        basis, why = "ratio", "the ratio itself carries the effect, beyond the lowest group's rate"
    elif hi < 0:
        basis, why = "cannot tell", ("the ratio basis predicts better, but the ratio does not "
                                     "matter in it")
    else:
        basis, why = "cannot tell", "the two bases predict held-out trials equally well"
    return {"basis": basis, **comparison, "text": f"mechanism: {why}; {figures}{g}."}
