"""``metrics.json``: the contract between a run and whoever reads it (sweepers, fastlab-meta,
people). :class:`RunMetrics` is that contract, and :func:`write_metrics` its one writer."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastlab.context import Keep
from fastlab.errors import OutputError
from fastlab.rundir import METRICS, git_info, versions, write_json

log = logging.getLogger("fastlab")


# Keys written only when they say something (a run that used no LR finder has no "lr_find").
_OPTIONAL = ("threads", "stages", "stopped_early", "pruned", "lr_find", "pretrained", "auto_bs", "sizes", "course",
             "tta", "error", "traceback")


@dataclass
class RunMetrics:
    """What a run reports. ``objective`` is ``final[objective_name]`` of a completed or pruned run
    (null when diverged or failed) and ``direction`` says which way it is better, as the task
    knows it. A pruned run (a sweep trial its pruner stopped) ends after the epoch it was pruned
    after, so its ``final`` and ``objective`` are that epoch's."""

    objective_name: str
    direction: str  # "maximize" | "minimize"
    status: str = "failed"  # "completed" | "pruned" | "diverged" | "failed"
    objective: float | None = None
    final: dict[str, float] = field(default_factory=dict)  # the last epoch's values
    best: dict[str, Any] | None = None  # the epoch best by the objective, with its "epoch"
    epochs: int = 0
    layer_groups: int | None = None
    n_params: int | None = None  # the model's parameters (all of them, trainable or frozen)
    group_lrs: list[float] = field(default_factory=list)  # peak rates of the last stage, head last
    seconds: dict[str, float] = field(default_factory=lambda: {"total": 0.0, "train": 0.0})
    diagnostics: list[str] = field(default_factory=list)
    threads: int | None = None
    stages: list[dict] | None = None
    stopped_early: bool | None = None
    pruned: dict | None = None  # {"epoch": 1-based epoch it was pruned after, "value": the objective then}
    lr_find: dict[str, float] | None = None  # the LR finder's suggestions
    pretrained: dict | None = None  # {"path", "loaded", "new"}
    auto_bs: dict | None = None  # {"out_of_memory": [sizes], "bs": size used}
    sizes: list[int] | None = None  # schedule.sizes: the image sides trained at, in order
    # schedule=course: per unfrozen stage, {"size", "frozen_pick", "unfrozen_pick", "lrs"}: the first
    # finder's pick (the frozen stage's head rate), where the second finder's curve rises, the rates
    course: list[dict] | None = None
    # trainer.tta: {"n", "beta", "seed", metric: value (with TTA), "plain": {metric: value}} (fastlab.tta.tta_metrics)
    tta: dict | None = None
    error: str | None = None
    traceback: str | None = None
    versions: dict[str, str] = field(default_factory=dict)  # of the libraries that matter
    git: dict[str, Any] = field(default_factory=dict)  # the code's commit, and whether it was dirty

    def to_dict(self) -> dict:
        """The keys that say something, values as measured (NaN stays NaN; ``metrics.json``
        writes it as null)."""
        return {k: v for k, v in asdict(self).items() if k not in _OPTIONAL or v is not None}


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def json_safe(obj):
    """NaN and infinities as null: JSON has neither."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def summarize(history: list[dict], objective: str, direction: str) -> tuple[dict, dict | None]:
    """``final`` (the last epoch's values) and ``best`` (the epoch best by ``objective``)."""
    if not history:
        return {}, None
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "seconds")}
    scored = [row for row in history if finite_or_none(row.get(objective)) is not None]
    if not scored:
        return final, None
    pick = max if direction == "maximize" else min
    row = pick(scored, key=lambda r: r[objective])
    best = {"epoch": row["epoch"], **{k: v for k, v in row.items() if k not in ("epoch", "lr", "seconds")}}
    return final, best


def read_metrics(run_dir: str | Path) -> dict | None:
    """The ``metrics.json`` of ``run_dir`` (a run dir or a sweep's job dir), or None when it has
    none. A file that is not a JSON object raises ``ValueError`` naming it."""
    path = Path(run_dir) / METRICS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"'{path}' is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"'{path}' holds a {type(doc).__name__}, not the object fastlab-train writes")
    return doc


def write_metrics(metrics: RunMetrics, run_dir: Path, start: float, keep: Keep | None = None) -> None:
    """``metrics.json``, for a failed run too (with its error), with library versions and the
    code's git commit (asked once per process when ``keep``, a sweep worker's, is active)."""
    if not metrics.seconds.get("total"):
        metrics.seconds = {"total": time.perf_counter() - start, "train": metrics.seconds.get("train", 0.0)}
    # a sweep worker asks git (a subprocess) and the package metadata once, not every trial
    metrics.versions, metrics.git = (keep or Keep()).kept("code", "versions and git", lambda: (versions(), git_info()))
    try:
        write_json(run_dir / METRICS, json_safe(metrics.to_dict()))
    except OutputError as e:  # no room even for metrics.json: the error in flight says more
        log.error(str(e))
