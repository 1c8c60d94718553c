"""What a sweep leaves for people: ``trials.csv``, ``best.yaml`` and the best-trials table.

Files are written under a temporary name and renamed into place, so a reader (or a crash) never
sees half a file.
"""

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fastlab.rundir import atomic_write_text
from fastlab.sweep.objectives import Objectives, feasible_values, pareto_mask
from fastlab.sweep.store import Trial


def best_trials(trials: Sequence[Trial], sign: float, k: int | None = None,
                pruned: str = "drop") -> list[Trial]:
    """Completed trials, best first (``sign`` +1 maximizes, -1 minimizes); ties by number.
    ``pruned="keep"`` ranks pruned trials too, by the value at their last epoch."""
    ranked = ("completed", "pruned") if pruned == "keep" else ("completed",)
    done = [t for t in trials if t.status in ranked and t.value is not None]
    done.sort(key=lambda t: (-sign * t.value, t.number))
    return done if k is None else done[:k]


def counts(trials: Sequence[Trial]) -> dict[str, int]:
    """How many trials have each status."""
    out = {"completed": 0, "diverged": 0, "failed": 0, "running": 0}
    for t in trials:
        out[t.status] = out.get(t.status, 0) + 1
    return out


def _cell(value: Any) -> str:
    # Lists and dicts (possible choice values) as JSON: one unambiguous CSV cell.
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)


def trials_csv(trials: Sequence[Trial], names: Sequence[str], objectives: Objectives | None = None) -> str:
    """One row per trial: number, status, value, (with several objectives: one column per
    objective and ``feasible``), one column per searched key, then bookkeeping."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fixed = {"number", "status", "value", "feasible", *names, "job_dir", "started_at", "finished_at", "error"}
    # an objective named like another column (a task returning {"value": ...}) gets a prefix
    judged = [f"objective.{n}" if n in fixed else n for n in objectives.names] + ["feasible"] \
        if objectives is not None else []
    writer.writerow(
        ["number", "status", "value", *judged, *names, "job_dir", "started_at", "finished_at", "error"]
    )
    for t in trials:
        writer.writerow(
            [t.number, t.status, _cell(t.value)]
            + (_judged_cells(t, objectives) if objectives is not None else [])
            + [_cell(t.params.get(n)) for n in names]
            + [_cell(t.job_dir), _cell(t.started_at), _cell(t.finished_at), _cell(t.error)]
        )
    return out.getvalue()


def _judged_cells(t: Trial, objectives: Objectives) -> list[str]:
    if t.objectives is None:
        return [""] * (len(objectives.names) + 1)
    values = t.objectives.get("values", {})
    return [_cell(values.get(n)) for n in objectives.names] + [_cell(not t.objectives.get("violated"))]


def pareto_front(trials: Sequence[Trial], objectives: Objectives) -> list[Trial]:
    """The completed, feasible trials no other such trial beats on every objective, by number."""
    rows = [(t, feasible_values(objectives, t.objectives)) for t in trials if t.status == "completed"]
    rows = [(t, v) for t, v in rows if v is not None]
    if not rows:
        return []
    mask = pareto_mask(np.stack([v for _, v in rows]), objectives.signs)
    return [t for (t, _), keep in zip(rows, mask, strict=True) if keep]


def best_yaml(
    trials: Sequence[Trial], sign: float, direction: str, overrides: list[str] | None,
    pruned: str = "drop", objectives: Objectives | None = None,
    overrides_of: Callable[[dict[str, Any]], list[str]] | None = None,
) -> str:
    """The best trial and the overrides that reproduce it (``overrides`` of the best, or None);
    with several objectives also ``objectives`` and the Pareto front under ``pareto:`` (each
    trial's number, values, params and ``overrides_of(params)``)."""
    ranked = best_trials(trials, sign, 1, pruned)
    best = ranked[0] if ranked else None
    doc = {
        "direction": direction,
        "value": None if best is None else best.value,
        "number": None if best is None else best.number,
        "job_dir": None if best is None else best.job_dir,
        "params": None if best is None else best.params,
        "overrides": overrides,
        "trials": counts(trials),
        "pruned_trials": pruned,  # the policy: dropped from the ranking, or kept in it
    }
    if objectives is not None:
        doc["objectives"] = dict(zip(objectives.names, objectives.directions, strict=True))
        doc["constraints"] = [text for text, _, _ in objectives.constraints]
        doc["pareto"] = [{"number": t.number, "values": dict(t.objectives["values"]), "job_dir": t.job_dir,
                          "params": dict(t.params),  # a copy: YAML would alias the best trial's
                          "overrides": overrides_of(t.params) if overrides_of else None}
                         for t in pareto_front(trials, objectives)]
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def best_table(trials: Sequence[Trial], names: Sequence[str], sign: float, k: int,
               pruned: str = "drop", objectives: Objectives | None = None) -> str:
    """The ``k`` best completed trials as a fixed-width text table; with several objectives, the
    Pareto front (up to ``k`` rows, by the first objective) with each objective's value."""
    if objectives is not None and len(objectives.names) > 1:
        return _front_table(trials, names, k, objectives)
    ranked = best_trials(trials, sign, k, pruned)
    direction = "maximize" if sign > 0 else "minimize"
    c = counts(trials)
    n_pruned = (f", {c['pruned']} pruned ({'ranked by their last epoch' if pruned == 'keep' else 'not ranked'})"
                if c.get("pruned") else "")
    title = (
        f"best {len(ranked)} of {len(trials)} trials ({direction}; {c['completed']} completed, "
        f"{c['diverged']} diverged, {c['failed']} failed{n_pruned})"
    )
    if not ranked:
        return title
    header = ["rank", "trial", "value", *names, "job_dir"]
    rows = [
        [
            str(i + 1),
            str(t.number),
            f"{t.value:.6g}",
            *(_fmt(t.params.get(n)) for n in names),
            _cell(t.job_dir),
        ]
        for i, t in enumerate(ranked)
    ]
    return "\n".join([title, *_aligned([header, *rows])])


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _front_table(trials: Sequence[Trial], names: Sequence[str], k: int, objectives: Objectives) -> str:
    front = pareto_front(trials, objectives)
    c = counts(trials)
    infeasible = sum(1 for t in trials if t.objectives and t.objectives.get("violated"))
    goals = ", ".join(f"{d} {n}" for n, d in zip(objectives.names, objectives.directions, strict=True))
    title = (f"pareto front: {len(front)} of {len(trials)} trials ({goals}; {c['completed']} completed, "
             f"{infeasible} infeasible, {c['diverged']} diverged, {c['failed']} failed)")
    if not front:
        return title
    first = objectives.signs[0]
    front.sort(key=lambda t: (-first * t.objectives["values"][objectives.names[0]], t.number))
    header = ["trial", *objectives.names, *names, "job_dir"]
    rows = [[str(t.number), *(_fmt(t.objectives["values"][n]) for n in objectives.names),
             *(_fmt(t.params.get(n)) for n in names), _cell(t.job_dir)] for t in front[:k]]
    return "\n".join([title, *_aligned([header, *rows])])


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else _cell(value)


def write_exports(
    sweep_dir: Path,
    trials: Sequence[Trial],
    names: Sequence[str],
    sign: float,
    direction: str,
    best_overrides: list[str] | None,
    pruned: str = "drop",
    objectives: Objectives | None = None,
    overrides_of: Callable[[dict[str, Any]], list[str]] | None = None,
) -> None:
    """Write ``trials.csv`` and ``best.yaml`` into the sweep dir."""
    atomic_write_text(sweep_dir / "trials.csv", trials_csv(trials, names, objectives))
    atomic_write_text(sweep_dir / "best.yaml", best_yaml(trials, sign, direction, best_overrides, pruned,
                                                         objectives, overrides_of))
