"""Several objectives: ``hydra.sweeper.objectives`` and ``hydra.sweeper.constraints``.

``objectives: {accuracy: maximize, n_params: minimize}`` names what a trial is judged by. A name
is read from the job's return value when the task returns a mapping (``{"accuracy": 0.9, ...}``),
else from its ``metrics.json``: a top-level number (``n_params``, ``epochs``, ``objective``), the
final epoch's metric (``final.<name>``, so ``accuracy`` or ``valid_loss``), or a dotted path
(``seconds.total``, ``best.accuracy``). ``constraints: ["n_params < 2e5", ...]`` are expressions
over the same names (the language of :mod:`fastlab.sweep.conditions`); a trial that breaks one is
infeasible. The trial's ``value`` is its first objective's, so the table, pruning and a single
objective's tools go on working; ``trials.db`` keeps every objective in the trial's
``objectives`` (``{"values": {name: value}, "violated": [constraint, ...]}``).

The forest proposes for several objectives as ParEGO does: each batch of proposals maximises a
random scalarisation (augmented Tchebycheff, weights drawn per batch from the seed) of the
objectives, each normalised to [0, 1] over the trials so far; infeasible trials count as the
worst. The Pareto front (feasible trials no other feasible trial beats on every objective) goes
into ``best.yaml`` under ``pareto:``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastlab.sweep.conditions import evaluate, parse_expression
from fastlab.sweep.direction import DIRECTIONS
from fastlab.sweep.errors import SweepError
from fastlab.sweep.space import flatten

RHO = 0.05  # ParEGO's augmentation: a little of the weighted sum, so weakly dominated points lose


@dataclass(frozen=True, eq=False)
class Objectives:
    """What ``hydra.sweeper.objectives`` and ``constraints`` say, checked."""

    names: tuple[str, ...]
    directions: tuple[str, ...]
    constraints: tuple[tuple[str, ast.expr, tuple[str, ...]], ...] = ()  # (text, tree, names it reads)

    @property
    def signs(self) -> np.ndarray:
        """(k,) +1 to maximize, -1 to minimize each objective."""
        return np.asarray([1.0 if d == "maximize" else -1.0 for d in self.directions])

    def judge(self, returned: Any, metrics: Mapping[str, Any] | None) -> dict[str, Any]:
        """A finished job's ``{"values": {name: value or None}, "violated": [...]}`` from what it
        returned and its ``metrics.json``."""
        values = {name: resolve(name, returned, metrics) for name in self.names}
        known = dict(values)
        violated = []
        for text, tree, names in self.constraints:
            scope = {n: known.get(n, resolve(n, returned, metrics)) for n in names}
            try:
                ok = evaluate(tree, {n: v for n, v in scope.items() if v is not None})
            except TypeError:
                ok = False
            if not ok:
                violated.append(text)
        return {"values": values, "violated": violated}


def parse_objectives(objectives: Mapping[str, Any] | None, constraints: Sequence[Any] | None) -> Objectives | None:
    """The checked objectives (None when there are none); one ``SweepError`` line for a bad one."""
    flat = flatten(objectives or {})
    if not flat:
        if constraints:
            raise SweepError("hydra.sweeper.constraints need hydra.sweeper.objectives: name what the trials are "
                             "judged by, e.g. hydra.sweeper.objectives={accuracy: maximize, n_params: minimize}")
        return None
    for name, direction in flat.items():
        if direction not in DIRECTIONS:
            raise SweepError(f"hydra.sweeper.objectives.{name}={direction!r} is not a direction: use maximize or "
                             "minimize")
    parsed = []
    for i, text in enumerate(constraints or ()):
        tree, names = parse_expression(text, f"hydra.sweeper.constraints[{i}]={text!r}", "\"n_params < 2e5\"")
        parsed.append((str(text).strip(), tree, names))
    return Objectives(tuple(flat), tuple(flat.values()), tuple(parsed))


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def resolve(name: str, returned: Any, metrics: Mapping[str, Any] | None) -> float | None:
    """The value of objective (or constraint name) ``name`` for one job; None when it has none."""
    if isinstance(returned, Mapping) and name in returned:
        return _number(returned[name])
    m = metrics or {}
    if name in m and not isinstance(m[name], Mapping):
        return _number(m[name])
    final = m.get("final")
    if isinstance(final, Mapping) and name in final:
        return _number(final[name])
    node: Any = m
    for part in name.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return _number(node)


def feasible_values(objectives: Objectives, judged: Mapping[str, Any] | None) -> np.ndarray | None:
    """(k,) a feasible trial's objective values, or None (infeasible, or a value missing)."""
    if not judged or judged.get("violated"):
        return None
    values = [judged.get("values", {}).get(n) for n in objectives.names]
    if any(v is None for v in values):
        return None
    return np.asarray(values, dtype=float)


def pareto_mask(points: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """(n,) True for the points no other point beats on every objective (``points``: (n, k)
    values; ``signs``: +1 to maximize, -1 to minimize). Equal points are all on the front."""
    g = points * signs  # larger is better everywhere
    n = len(g)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        beats = np.all(g >= g[i], axis=1) & np.any(g > g[i], axis=1)
        mask[i] = not beats.any()
    return mask


def scalarise(rows: Sequence[np.ndarray | None], signs: np.ndarray, weights: np.ndarray) -> list[float | None]:
    """ParEGO's augmented Tchebycheff scalarisation, to maximize: each objective turned so larger
    is better and normalised to [0, 1] over ``rows`` (the feasible trials' values, None for the
    others), then ``-(max_i w_i (1 - f_i) + RHO * sum_i w_i (1 - f_i))``; None stays None (the
    forest scores it as the worst)."""
    known = np.asarray([r * signs for r in rows if r is not None])
    if not len(known):
        return [None] * len(rows)
    lo, hi = known.min(axis=0), known.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    out: list[float | None] = []
    for r in rows:
        if r is None:
            out.append(None)
            continue
        gap = weights * (1.0 - (r * signs - lo) / span)  # (k,) weighted distance from the best seen
        out.append(float(-(gap.max() + RHO * gap.sum())))
    return out


def weights_for(k: int, seed: int, first: int) -> np.ndarray:
    """(k,) the scalarisation's weights for the batch of proposals starting at trial ``first``:
    uniform on the simplex, drawn from the seed, so a resume draws the same."""
    return np.random.default_rng([seed, first, 17]).dirichlet(np.ones(k))


def mean_objectives(judged: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The objectives of a configuration from its runs' (``hydra.sweeper.repeats``): each
    objective's mean over the runs that have it, and every constraint some run broke."""
    runs = [j for j in judged if j]
    if not runs:
        return None
    names = list(dict.fromkeys(n for j in runs for n in j.get("values", {})))
    values = {}
    for name in names:
        seen = [j["values"][name] for j in runs if j["values"].get(name) is not None]
        values[name] = sum(seen) / len(seen) if seen else None
    violated = list(dict.fromkeys(v for j in runs for v in j.get("violated", [])))
    return {"values": values, "violated": violated}
