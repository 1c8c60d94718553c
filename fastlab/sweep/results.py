"""What a sweep leaves for people: ``trials.csv``, ``best.yaml`` and the best-trials table.

Files are written under a temporary name and renamed into place, so a reader (or a crash) never
sees half a file. With ``hydra.sweeper.repeats`` they speak of configurations: each row is one
configuration's runs (:func:`by_configuration`), its value their mean with ``sd`` and ``n``, and
``runs.csv`` keeps every run.
"""

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fastlab.rundir import atomic_write_text
from fastlab.sweep.objectives import Objectives, feasible_values, mean_objectives, pareto_mask
from fastlab.sweep.store import Trial

# The key of ``Trial.objectives`` under which a trial completed without a value keeps what its
# task returned (grid and random): None for nothing, else the return as text.
RETURNED = "returned"
NO_OBJECTIVE = ("no objective was returned: the task returned nothing (or text) in every completed trial, so no "
                "trial is best; return the objective as a float (and set hydra.sweeper.direction) to rank them")
NOT_RANKED = ("hydra.sweeper.direction is not set, so the trials are not ranked: set it to maximize or minimize "
              "to rank the numbers the task returns")


@dataclasses.dataclass(frozen=True)
class Spread:
    """A configuration's runs (``hydra.sweeper.repeats``): the sd of their values, how many
    completed, and their trial numbers."""

    sd: float | None
    n: int
    runs: tuple[int, ...]


def by_configuration(trials: Sequence[Trial]) -> tuple[list[Trial], dict[int, Spread]]:
    """The runs of a sweep with repeats as one row per configuration (numbered by configuration,
    value the mean of its completed runs, objectives their means, the first run's job dir), and
    each one's :class:`Spread`. Trials of a sweep without repeats come back as they are."""
    groups: dict[int, list[Trial]] = {}
    for t in trials:
        if t.config is None:
            return list(trials), {}
        groups.setdefault(t.config, []).append(t)
    rows, spread = [], {}
    for config, runs in sorted(groups.items()):
        values = [t.value for t in runs if t.status == "completed" and t.value is not None]
        statuses = {t.status for t in runs}
        status = next((s for s in ("completed", "running", "diverged", "pruned") if s in statuses), "failed")
        mean = sum(values) / len(values) if values else None
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        errors = [t.error for t in runs if t.error]
        rows.append(Trial(number=config, status=status, params=runs[0].params, value=mean, job_dir=runs[0].job_dir,
                          started_at=min((t.started_at for t in runs if t.started_at), default=None),
                          finished_at=max((t.finished_at for t in runs if t.finished_at), default=None),
                          error=errors[-1] if errors else None,
                          objectives=mean_objectives([t.objectives for t in runs if t.status == "completed"])))
        spread[config] = Spread(sd, len(values), tuple(t.number for t in runs))
    return rows, spread

def best_trials(trials: Sequence[Trial], sign: float, k: int | None = None,
                pruned: str = "drop") -> list[Trial]:
    """Completed trials, best first (``sign`` +1 maximizes, -1 minimizes, 0: no direction, none);
    ties by number.
    ``pruned="keep"`` ranks pruned trials too, by the value at their last epoch."""
    if not sign:  # no direction (a plain app's grid or random sweep): nothing is ranked
        return []
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


def trials_csv(trials: Sequence[Trial], names: Sequence[str], objectives: Objectives | None = None,
               spread: dict[int, Spread] | None = None) -> str:
    """One row per trial: number, status, value, (with several objectives: one column per
    objective and ``feasible``), one column per searched key, then bookkeeping. With ``spread``
    (configurations of a sweep with repeats): ``sd`` and ``n`` after the value (the mean), and the
    configuration's ``runs``; runs themselves (``config`` set) get ``config`` and ``repeat``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    placed = any(t.config is not None for t in trials)
    returned = any(_returned(t) for t in trials)  # a task that returned no number: what it returned
    fixed = {"number", "status", "value", "feasible", *names, "job_dir", "started_at", "finished_at", "error"}
    # an objective named like another column (a task returning {"value": ...}) gets a prefix
    judged = [f"objective.{n}" if n in fixed else n for n in objectives.names] + ["feasible"] \
        if objectives is not None else []
    writer.writerow(
        ["number", "status", *(["config", "repeat"] if placed else []), "value", *(["returned"] if returned else []),
         *(["sd", "n"] if spread else []),
         *judged, *names, "job_dir", "started_at", "finished_at", "error", *(["runs"] if spread else [])]
    )
    for t in trials:
        s = (spread or {}).get(t.number)
        writer.writerow(
            [t.number, t.status, *([_cell(t.config), _cell(t.repeat)] if placed else []), _cell(t.value)]
            + ([_returned_cell(t)] if returned else [])
            + ([_cell(s.sd), s.n] if spread else [])
            + (_judged_cells(t, objectives) if objectives is not None else [])
            + [_cell(t.params.get(n)) for n in names]
            + [_cell(t.job_dir), _cell(t.started_at), _cell(t.finished_at), _cell(t.error)]
            + ([" ".join(map(str, s.runs))] if spread else [])
        )
    return out.getvalue()


def _returned(t: Trial) -> bool:
    """Whether ``t`` completed without a value, keeping what its task returned instead."""
    return bool(t.objectives) and RETURNED in t.objectives


def _returned_cell(t: Trial) -> str:
    """trials.csv's ``returned``: ``None`` for a task that returned nothing, else its text."""
    if not _returned(t):
        return ""
    text = t.objectives[RETURNED]
    return "None" if text is None else str(text)


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
    trials: Sequence[Trial], sign: float, direction: str | None, overrides: list[str] | None,
    pruned: str = "drop", objectives: Objectives | None = None,
    overrides_of: Callable[[dict[str, Any]], list[str]] | None = None, spread: dict[int, Spread] | None = None,
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
    note = _unranked_note(trials, sign) if best is None else None
    if note is not None:
        doc["note"] = note
    if spread:  # a configuration of a sweep with repeats: value is the mean of its runs
        s = spread.get(best.number) if best is not None else None
        doc.update({"sd": None if s is None else s.sd, "n": None if s is None else s.n,
                    "runs": None if s is None else list(s.runs)})
    if objectives is not None:
        doc["objectives"] = dict(zip(objectives.names, objectives.directions, strict=True))
        doc["constraints"] = [text for text, _, _ in objectives.constraints]
        doc["pareto"] = [{"number": t.number, "values": dict(t.objectives["values"]), "job_dir": t.job_dir,
                          "params": dict(t.params),  # a copy: YAML would alias the best trial's
                          "overrides": overrides_of(t.params) if overrides_of else None}
                         for t in pareto_front(trials, objectives)]
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _unranked_note(trials: Sequence[Trial], sign: float) -> str | None:
    """Why no trial is best although some completed: none returned a number (``NO_OBJECTIVE``),
    or no direction ranks the numbers (``NOT_RANKED``); None otherwise."""
    done = [t for t in trials if t.status == "completed"]
    if not done:
        return None
    if all(t.value is None for t in done):
        return NO_OBJECTIVE
    return NOT_RANKED if not sign else None


def best_table(trials: Sequence[Trial], names: Sequence[str], sign: float, k: int,
               pruned: str = "drop", objectives: Objectives | None = None,
               spread: dict[int, Spread] | None = None) -> str:
    """The ``k`` best completed trials as a fixed-width text table; with several objectives, the
    Pareto front (up to ``k`` rows, by the first objective) with each objective's value."""
    if objectives is not None and len(objectives.names) > 1:
        return _front_table(trials, names, k, objectives)
    ranked = best_trials(trials, sign, k, pruned)
    note = _unranked_note(trials, sign) if not ranked else None
    if note is not None:
        return _unranked_table(trials, names, k, note)
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
    if spread:  # configurations: the mean of their runs, its sd and n
        title = title.replace(" trials (", " configurations (", 1)
        header = ["rank", "config", "mean", "sd", "n", *names]
        rows = [[str(i + 1), str(t.number), f"{t.value:.6g}", _fmt(spread[t.number].sd), str(spread[t.number].n),
                 *(_fmt(t.params.get(n)) for n in names)] for i, t in enumerate(ranked)]
        return "\n".join([title, *_aligned([header, *rows])])
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


def _unranked_table(trials: Sequence[Trial], names: Sequence[str], k: int, note: str) -> str:
    """The first ``k`` completed trials by number, with their value or what their task returned,
    under a title that says why they are not ranked (``note``)."""
    c = counts(trials)
    done = [t for t in trials if t.status == "completed"][:k]
    title = (f"first {len(done)} of {len(trials)} trials ({c['completed']} completed, {c['diverged']} diverged, "
             f"{c['failed']} failed): {note}")
    header = ["trial", "value", "returned", *names, "job_dir"]
    rows = [[str(t.number), _fmt(t.value), _returned_cell(t), *(_fmt(t.params.get(n)) for n in names),
             _cell(t.job_dir)] for t in done]
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
    direction: str | None,
    best_overrides: list[str] | None,
    pruned: str = "drop",
    objectives: Objectives | None = None,
    overrides_of: Callable[[dict[str, Any]], list[str]] | None = None,
) -> None:
    """Write ``trials.csv`` and ``best.yaml`` into the sweep dir (with repeats, of configurations,
    and every run into ``runs.csv``)."""
    rows, spread = by_configuration(trials)
    if spread:
        atomic_write_text(sweep_dir / "runs.csv", trials_csv(trials, names, objectives))
    atomic_write_text(sweep_dir / "trials.csv", trials_csv(rows, names, objectives, spread))
    atomic_write_text(sweep_dir / "best.yaml", best_yaml(rows, sign, direction, best_overrides, pruned,
                                                         objectives, overrides_of, spread))
