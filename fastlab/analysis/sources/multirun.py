"""Read any Hydra multirun dir: job dirs holding ``.hydra/overrides.yaml`` and ``metrics.json``.

Whichever sweeper made the dir (basic, optuna, fastlab, ...), each job's overrides say what it
ran; the override keys whose values differ between jobs are the swept parameters, the rest are
fixed. ``metrics.json`` (DESIGN.md's run-dir contract) gives the status and the objective.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.direction import direction_of_metrics, direction_of_task
from fastlab.analysis.sources.objectives import with_metric
from fastlab.analysis.sources.table import TrialsTable, numeric_facts, require_trials, swept_names
from fastlab.rundir.metrics_json import read_metrics


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """Override lines (``key=value``) -> ``{key: typed value}``, typed as Hydra types them
    (``1`` int, ``1e-3`` float, ``[16,32]`` list, ``cnn`` str). Deletions (``~key``) are skipped;
    ``+key``/``++key`` count as ``key``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for o in OverridesParser.create().parse_overrides(list(lines)):
        if o.is_delete():
            continue
        out[o.key_or_group] = o.value()
    return out


def find_job_dirs(path: Path) -> list[Path]:
    """Job dirs under ``path`` (those holding ``.hydra/overrides.yaml``), in job-number order."""
    found = [p.parent.parent for p in path.glob("*/.hydra/overrides.yaml")]
    if not found:  # a custom hydra.sweep.subdir may nest them deeper
        found = [p.parent.parent for p in path.glob("**/.hydra/overrides.yaml")]

    def order(p: Path) -> tuple:
        rel = p.relative_to(path).parts
        return tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in rel)

    return sorted(found, key=order)


def _job_number(job_dir: Path, default: int) -> int:
    return int(job_dir.name) if job_dir.name.isdigit() else default


def _read_metrics(job_dir: Path) -> dict[str, Any] | None:
    try:
        return read_metrics(job_dir)
    except (OSError, ValueError) as e:
        raise MetaError(f"{job_dir / 'metrics.json'} is not readable JSON ({e}): delete that job "
                        "dir or rerun its trial") from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as e:
        raise MetaError(f"{path} is not readable YAML ({e}): delete that job dir or rerun its "
                        "trial") from None


def read_multirun(path: Path, metric: str | None = None) -> TrialsTable:
    """The trials of the Hydra multirun dir ``path`` (see the module docstring); ``metric``
    (``--metric``): a number of the jobs' ``metrics.json`` as the response instead of the
    objective (:func:`fastlab.analysis.sources.objectives.with_metric`)."""
    job_dirs = find_job_dirs(path)
    rows, values, status, numbers, all_metrics = [], [], [], [], []
    objective, config = None, None
    for i, job_dir in enumerate(job_dirs):
        lines = _read_yaml(job_dir / ".hydra" / "overrides.yaml") or []
        try:
            rows.append(parse_overrides(lines))
        except Exception as e:  # Hydra's grammar errors carry several lines: keep the first
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MetaError(f"{job_dir / '.hydra/overrides.yaml'} holds an override Hydra cannot "
                            f"parse ({first}): delete that job dir") from None
        metrics = _read_metrics(job_dir)
        all_metrics.append(metrics)
        numbers.append(_job_number(job_dir, i))
        if metrics is None:
            status.append("missing")
            values.append(math.nan)
            continue
        status.append(str(metrics.get("status", "completed")))
        value = metrics.get("objective")
        values.append(float(value) if isinstance(value, int | float) else math.nan)
        objective = objective or metrics.get("objective_name")
        if config is None and status[-1] == "completed":
            config = _read_yaml(job_dir / ".hydra" / "config.yaml")
    names, fixed = swept_names(rows)
    # metrics.json says it (fastlab-train); older fastlab-train runs: their task, from the registry
    direction, note = direction_of_metrics(all_metrics)
    if direction is None and not note:
        direction = direction_of_task((config or {}).get("task"))
    table = TrialsTable(
        names=tuple(names),
        params=tuple({k: r[k] for k in names if k in r} for r in rows),
        values=np.asarray(values, dtype=float),
        status=tuple(status),
        numbers=tuple(numbers),
        objective=objective,
        direction=direction,
        direction_note=note,
        fixed=fixed,
        metrics=tuple(numeric_facts(m) for m in all_metrics),
        job_dirs=tuple(job_dirs),
        config=config if isinstance(config, dict) else None,
        source="job dirs",
        path=path,
    )
    return with_metric(require_trials(table), metric, all_metrics)
