"""What a sweep leaves for people: ``trials.csv``, ``best.yaml`` and the best-trials table.

Files are written under a temporary name and renamed into place, so a reader (or a crash) never
sees half a file.
"""

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fastlab.rundir import atomic_write_text
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


def trials_csv(trials: Sequence[Trial], names: Sequence[str]) -> str:
    """One row per trial: number, status, value, one column per searched key, then bookkeeping."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["number", "status", "value", *names, "job_dir", "started_at", "finished_at", "error"]
    )
    for t in trials:
        writer.writerow(
            [t.number, t.status, _cell(t.value)]
            + [_cell(t.params.get(n)) for n in names]
            + [_cell(t.job_dir), _cell(t.started_at), _cell(t.finished_at), _cell(t.error)]
        )
    return out.getvalue()


def best_yaml(
    trials: Sequence[Trial], sign: float, direction: str, overrides: list[str] | None,
    pruned: str = "drop",
) -> str:
    """The best trial and the overrides that reproduce it (``overrides`` of the best, or None)."""
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
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def best_table(trials: Sequence[Trial], names: Sequence[str], sign: float, k: int,
               pruned: str = "drop") -> str:
    """The ``k`` best completed trials as a fixed-width text table."""
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
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join([title, *lines])


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
) -> None:
    """Write ``trials.csv`` and ``best.yaml`` into the sweep dir."""
    atomic_write_text(sweep_dir / "trials.csv", trials_csv(trials, names))
    atomic_write_text(sweep_dir / "best.yaml", best_yaml(trials, sign, direction, best_overrides, pruned))
