"""Trials table -> the forest's design matrix: one column per swept parameter, one row per trial.

- Numeric parameters are used as they are, or as log10(value) when the sweep sampled them on a log
  scale or their values span more than a decade (a learning rate from 1e-4 to 1e-1 matters by its
  order of magnitude; trees split log10 evenly, and partial dependence is gridded evenly in it).
- Categorical parameters (strings, booleans, lists, config-group options) become integer codes in
  sorted label order; a forest splits codes into any grouping it needs, so one column suffices.
- A numeric parameter with at most ``MAX_LEVELS`` distinct sampled values (``choice(8, 16, 32)``,
  an integer range over a few values) is discrete: its grids hold only the values sampled. An
  integer one with more values is gridded on integers.
- Derived columns (``--derive``, :mod:`fastlab.analysis.forest.derive`) are numeric parameters whose scale
  no sweep declared; trials where one is not finite are left out and counted.
- Replicate keys (``seed``) and parameters that never changed are not features.
- A conditional key (``hydra.sweeper.conditions``; ``TrialsTable.conditions``) is a feature over
  the trials where it was swept: where it is absent its column holds a value outside its range
  (``Feature.absent_x``: below it, or the category ``(absent)``), so the trees split those trials
  off, and ``Encoded.active`` says which rows have it. Its importance and partial dependence are
  computed over those rows only (:mod:`~fastlab.analysis.forest.importance`,
  :mod:`~fastlab.analysis.forest.analysis`).
- The response comes from :func:`outcomes`, the explicit policy for failed and diverged trials.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.table import COMPLETED, DIVERGED, REPLICATE_KEYS, TrialsTable

DIVERGED_POLICIES = ("worst", "drop")
# A conditional categorical parameter's category where the trial did not sweep it
ABSENT_LABEL = "(absent)"
# A numeric parameter with this many distinct sampled values or fewer is discrete: partial
# dependence is read at those values only. A forest's splits fall between sampled values, so no
# level of its partial dependence is missed.
MAX_LEVELS = 12


def label(value: Any) -> str:
    """A category's label: strings as they are, lists as JSON, booleans lower-case."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list | dict | tuple):
        return json.dumps(value)
    return repr(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Feature:
    """How one swept parameter becomes a column.

    Attributes
    ----------
    name : the parameter (override key).
    kind : ``numeric`` or ``categorical``.
    log : numeric only: the column holds log10(value).
    why : why this scale, for the report (e.g. ``sampled on a log scale``, ``spans 2.0 decades``).
    integer : numeric only: every observed value is an int (its values, grids and
        recommendation are whole numbers).
    categories : categorical only: the labels, in code order.
    low, high : numeric only: the observed range, in the parameter's own units.
    levels : numeric only: the distinct sampled values in column space, sorted, when there are
        at most ``MAX_LEVELS`` of them (a discrete parameter); else empty.
    condition : the expression under which a conditional parameter was swept; "" for one that
        every trial has.
    """

    name: str
    kind: str
    log: bool = False
    why: str = ""
    integer: bool = False
    categories: tuple[str, ...] = ()
    low: float = math.nan
    high: float = math.nan
    levels: tuple[float, ...] = ()
    condition: str = ""

    @property
    def absent_x(self) -> float:
        """A conditional parameter's column value where a trial does not have it: one range
        width (plus one) below its numeric range, or the code of ``ABSENT_LABEL``."""
        if not self.numeric:
            return float(self.categories.index(ABSENT_LABEL))
        lo, hi = (float(x) for x in self.to_x([self.low, self.high]))
        return lo - (hi - lo) - 1.0

    @property
    def numeric(self) -> bool:
        return self.kind == "numeric"

    @property
    def discrete(self) -> bool:
        return bool(self.levels)

    def to_x(self, values: list[Any]) -> np.ndarray:
        """Parameter values, length n -> column, shape (n,)."""
        if self.numeric:
            v = np.asarray(values, dtype=float)
            return np.log10(v) if self.log else v
        codes = {c: i for i, c in enumerate(self.categories)}
        return np.asarray([codes[label(v)] for v in values], dtype=float)

    def from_x(self, x: np.ndarray) -> np.ndarray:
        """Column values (n,) -> parameter values (n,) (labels for a categorical; whole numbers
        for an integer parameter, so 10**log10(16) reads 16, not 15.999999999999998)."""
        x = np.asarray(x, dtype=float)
        if self.numeric:
            v = 10.0**x if self.log else x
            return np.round(v) if self.integer else v
        return np.asarray([self.categories[int(round(i))] for i in x.ravel()], dtype=object)


def describe_feature(name: str, values: list[Any], declared_log: bool,
                     scale_known: bool = False) -> Feature | None:
    """The :class:`Feature` for one parameter's observed values, or None when it is constant.

    ``declared_log``: the sweep sampled it on a log scale. ``scale_known``: the sweep declared its
    scale either way, so a linear interval from 0.001 to 1 stays linear; otherwise values that
    span more than a decade are log-scaled."""
    if len({label(v) for v in values}) < 2:
        return None
    if all(_is_number(v) for v in values):
        v = np.asarray(values, dtype=float)
        lo, hi = float(v.min()), float(v.max())
        # typed as ints by the override or trials.db (int(interval(2, 6)), choice(8, 16, 32)):
        # a float that happens to be whole (a ratio of 1.0 or 10.0) is no integer parameter
        integer = all(isinstance(x, int) for x in values)
        if declared_log and lo > 0:
            log, why = True, "sampled on a log scale"
        elif not scale_known and lo > 0 and hi / lo > 10:
            log, why = True, f"spans {math.log10(hi / lo):.1f} decades"
        else:
            log, why = False, "linear"
        f = Feature(name, "numeric", log, why, integer, (), lo, hi)
        distinct = np.unique(v)
        if len(distinct) <= MAX_LEVELS:
            f = replace(f, levels=tuple(float(x) for x in f.to_x(distinct)))
        return f
    cats = tuple(sorted({label(v) for v in values}))
    return Feature(name, "categorical", why="categorical", categories=cats)


def outcomes(values: np.ndarray, status: tuple[str, ...], direction: str,
             diverged: str = "worst") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The response and which trials it keeps, under an explicit policy.

    Completed trials keep their objective. Diverged trials (the loss went non-finite: a real
    outcome, usually of a too-high rate) are scored as the worst completed value with
    ``diverged="worst"`` (as fastlab's forest sweeper does), so the forest learns where training
    breaks; ``diverged="drop"`` leaves them out. Failed, running and missing trials say nothing
    about the response and are always left out.

    Parameters
    ----------
    values : (n,) objective, NaN where none.
    status : length n.
    direction : ``maximize`` or ``minimize``.

    Returns
    -------
    y : (n,) the response (NaN where not kept).
    keep : (n,) bool.
    policy : ``{"diverged": policy, "worst": value or None, "kept": k, "dropped": {status: count},
        "scored_worst": count, "text": one sentence for the report}``.
    """
    if diverged not in DIVERGED_POLICIES:
        raise MetaError(f"--diverged {diverged!r} is not known: use worst or drop")
    values = np.asarray(values, dtype=float)
    status_arr = np.asarray(status, dtype=object)
    done = (status_arr == COMPLETED) & np.isfinite(values)
    y = np.where(done, values, np.nan)
    worst = None
    if done.any():
        worst = float(values[done].min() if direction == "maximize" else values[done].max())
    div = status_arr == DIVERGED
    keep = done.copy()
    if diverged == "worst" and worst is not None:
        y[div] = worst
        keep |= div
    dropped: dict[str, int] = {}
    for s in status_arr[~keep]:
        key = "completed without an objective" if s == COMPLETED else str(s)
        dropped[key] = dropped.get(key, 0) + 1
    n_div = int(div.sum())
    if n_div and diverged == "worst" and worst is not None:
        text = f"{n_div} diverged trial(s) scored as the worst completed value ({worst:.4g})"
    elif n_div:
        text = f"{n_div} diverged trial(s) left out"
    else:
        text = "no trial diverged"
    others = {k: v for k, v in dropped.items() if k != DIVERGED}
    if others:
        text += "; left out: " + ", ".join(f"{v} {k}" for k, v in sorted(others.items()))
    policy = {"diverged": diverged, "worst": worst, "kept": int(keep.sum()), "dropped": dropped,
              "scored_worst": n_div if diverged == "worst" and worst is not None else 0,
              "text": text}
    return y, keep, policy


@dataclass(frozen=True)
class Encoded:
    """The design matrix of the kept trials.

    Attributes
    ----------
    X : (n, d) float: one column per feature.
    y : (n,) float: the response.
    rows : (n,) int: the kept trials' positions in the table.
    features : length d.
    skipped : ``{name: why}`` for swept keys that are not features.
    policy : see :func:`outcomes`.
    active : ``{name: (n,) bool}`` for each conditional feature: the rows where it was swept.
    """

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    features: tuple[Feature, ...]
    skipped: dict[str, str]
    policy: dict[str, Any]
    active: dict[str, np.ndarray] = field(default_factory=dict)

    def active_rows(self, name: str) -> np.ndarray:
        """(n,) bool: the rows that have parameter ``name`` (all of them unless it is conditional)."""
        return self.active.get(name, np.ones(len(self.y), dtype=bool))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def index(self, name: str) -> int:
        return self.names.index(name)


def encode(table: TrialsTable, direction: str, diverged: str = "worst") -> Encoded:
    """The design matrix of ``table`` (see the module docstring). A trial without a value for a
    numeric feature (a key some jobs did not override) is left out and counted."""
    y, keep, policy = outcomes(table.values, table.status, direction, diverged)
    rows = np.flatnonzero(keep)
    features, skipped = [], {}
    for name in table.names:
        if name in REPLICATE_KEYS:
            skipped[name] = "replicates (training randomness), not a hyperparameter"
            continue
        present = [table.params[i].get(name, _MISSING) for i in rows]
        values = [v for v in present if v is not _MISSING]
        # no sweep declared a derived column's scale: the "spans a decade" rule decides it
        f = describe_feature(name, values, name in table.log_scale,
                             table.scales_known and name not in table.derived)
        if f is None:
            skipped[name] = "constant over the trials analysed"
            continue
        features.append(_conditional(f, table.conditions.get(name, ""), len(values) < len(present)))
    # A numeric feature must be present in every kept row; a categorical one gets "null".
    # A derived one is absent where its expression is not finite: counted on its own.
    complete = np.ones(len(rows), dtype=bool)
    not_finite: dict[str, int] = {}
    for f in features:
        if f.numeric and not f.condition:
            has = np.asarray([name_in(table.params[i], f.name) for i in rows], dtype=bool)
            if f.name in table.derived and not has.all():
                not_finite[f.name] = int((~has).sum())
            complete &= has
    policy = {**policy, "not_finite": not_finite}
    if not complete.all():
        n = int((~complete).sum())
        parts = [f"{c} where {k} is not finite" for k, c in not_finite.items()]
        if n > sum(not_finite.values()):  # others lack a swept parameter (a jobs' own override)
            parts.append(f"{n} without every parameter" if not parts else "others without "
                         "every parameter")
        policy = {**policy, "kept": int(complete.sum()),
                  "text": policy["text"] + "; left out: " + ", ".join(parts)}
        rows = rows[complete]
        # ranges and levels of what is left (a level only the left-out trials had is no level)
        redone = []
        for f in features:
            if f.numeric:
                name, condition = f.name, f.condition
                values = [table.params[i][name] for i in rows if name in table.params[i]]
                f = describe_feature(name, values, name in table.log_scale,
                                     table.scales_known and name not in table.derived)
                if f is None:
                    skipped[name] = "constant over the trials analysed"
                    continue
                f = _conditional(f, condition, len(values) < len(rows))
            redone.append(f)
        features = redone
    columns, active = [], {}
    for f in features:
        if f.condition:
            has = np.asarray([f.name in table.params[i] for i in rows], dtype=bool)
            column = np.full(len(rows), f.absent_x)
            column[has] = f.to_x([table.params[i][f.name] for i, h in zip(rows, has, strict=True) if h])
            active[f.name] = has
            columns.append((f, column))
            continue
        vals = [table.params[i].get(f.name) for i in rows]
        if not f.numeric and any(label(v) not in f.categories for v in vals):
            f = Feature(f.name, f.kind, why=f.why,
                        categories=tuple(sorted(set(f.categories) | {label(v) for v in vals})))
        columns.append((f, f.to_x(vals)))
    features = [f for f, _ in columns]
    X = np.column_stack([c for _, c in columns]) if columns else np.empty((len(rows), 0))
    return Encoded(X, y[rows], rows, tuple(features), skipped, policy, active)


def _conditional(f: Feature, condition: str, some_absent: bool) -> Feature:
    """``f`` as a conditional parameter, when the sweep made it one and some analysed trial lacks
    it (a categorical one gains the category ``ABSENT_LABEL``)."""
    if not condition or not some_absent:
        return f
    if not f.numeric:
        f = replace(f, categories=(*f.categories, ABSENT_LABEL))
    return replace(f, condition=condition)


_MISSING = object()


def name_in(params: dict[str, Any], name: str) -> bool:
    return name in params and _is_number(params[name])
