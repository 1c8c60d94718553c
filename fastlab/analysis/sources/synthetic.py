"""Synthetic sweeps with a planted answer, to check that the meta-analysis finds it.

:func:`planted_trials` draws trials like the lr-ratio study's (log-uniform ratio and peak rate,
plus an irrelevant parameter) with a known response; :func:`write_multirun` lays a table out as
a plain Hydra multirun dir, so the command line can be tested without training anything.
:func:`lowest_rate_trials` plants an optimum in a derived column (``--derive``): the lowest layer
group's rate, from two swept parameters and the runs' ``layer_groups``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fastlab.analysis.sources.table import TrialsTable

RATIO, LR, JUNK = "schedule.lr_ratio", "schedule.lr_max", "schedule.pct_start"


def planted_response(ratio: np.ndarray, lr: np.ndarray, optimum: float | None = 2.6) -> np.ndarray:
    """An accuracy-like response (n,): a peak in log10(lr) at 3e-3 and, unless ``optimum`` is
    None (flat in the ratio), a peak in log10(ratio) at ``optimum``."""
    y = 0.9 - 0.15 * (np.log10(lr) - np.log10(3e-3)) ** 2
    if optimum is not None:
        y = y - 0.6 * (np.log10(ratio) - np.log10(optimum)) ** 2
    return y


def planted_trials(n: int = 200, seed: int = 0, optimum: float | None = 2.6,
                   noise: float = 0.02, diverge_above: float | None = None) -> TrialsTable:
    """``n`` trials: ``schedule.lr_ratio`` log-uniform on [1, 10], ``schedule.lr_max`` log-uniform
    on [1e-4, 1e-1], ``schedule.pct_start`` uniform on [0.1, 0.5] and irrelevant; the response is
    :func:`planted_response` plus Gaussian ``noise``. Trials with lr_max above ``diverge_above``
    are marked diverged (no objective)."""
    rng = np.random.default_rng(seed)
    ratio = 10 ** rng.uniform(0, 1, n)
    lr = 10 ** rng.uniform(-4, -1, n)
    junk = rng.uniform(0.1, 0.5, n)
    y = planted_response(ratio, lr, optimum) + noise * rng.normal(size=n)
    status = ["completed"] * n
    if diverge_above is not None:
        for i in np.flatnonzero(lr > diverge_above):
            status[i], y[i] = "diverged", np.nan
    params = tuple({RATIO: float(f"{r:.6g}"), LR: float(f"{v:.6g}"), JUNK: float(f"{j:.6g}")}
                   for r, v, j in zip(ratio, lr, junk))
    return TrialsTable(names=(RATIO, LR, JUNK), params=params, values=y, status=tuple(status),
                       numbers=tuple(range(n)), objective="accuracy", direction="maximize",
                       log_scale=frozenset({RATIO, LR}), scales_known=True,
                       path=Path(f"synthetic(seed={seed})"), source="synthetic")


ARCH = "arch.name"
GROUPS = {"cnn3": 3, "cnn5": 5}  # layer groups of each architecture, as metrics.json records them
LOW_OPTIMUM = 1e-4
LOWEST_RATE = "lr_low=schedule.lr_max/schedule.lr_ratio**(layer_groups-1)"


def lowest_rate_trials(n: int = 200, seed: int = 0, noise: float = 0.01,
                       lr_decades: tuple[float, float] = (-3, -1)) -> TrialsTable:
    """``n`` trials whose response depends on the lowest layer group's rate only,
    ``lr_max / lr_ratio**(layer_groups - 1)`` (:data:`LOWEST_RATE`), peaking at
    :data:`LOW_OPTIMUM`: ``schedule.lr_ratio`` log-uniform on [1, 10], ``schedule.lr_max``
    log-uniform on [1e-3, 1e-1] (``lr_decades``: its log10 bounds), ``arch.name`` one of
    :data:`GROUPS`, whose ``layer_groups`` each trial's metrics record. Neither swept rate has an
    optimum of its own; with the head rate reaching :data:`LOW_OPTIMUM` (``lr_decades=(-5, -1)``)
    a ratio of 1 reaches the best lowest rate too, at a head rate that low."""
    rng = np.random.default_rng(seed)
    ratio = 10 ** rng.uniform(0, 1, n)
    lr = 10 ** rng.uniform(*lr_decades, n)
    arch = rng.choice(sorted(GROUPS), n)
    groups = np.asarray([GROUPS[a] for a in arch])
    low = lr / ratio ** (groups - 1)
    y = 0.9 - 0.1 * (np.log10(low) - np.log10(LOW_OPTIMUM)) ** 2 + noise * rng.normal(size=n)
    params = tuple({RATIO: float(f"{r:.6g}"), LR: float(f"{v:.6g}"), ARCH: str(a)}
                   for r, v, a in zip(ratio, lr, arch))
    return TrialsTable(names=(RATIO, LR, ARCH), params=params, values=y,
                       status=("completed",) * n, numbers=tuple(range(n)), objective="accuracy",
                       direction="maximize", log_scale=frozenset({RATIO, LR}), scales_known=True,
                       path=Path(f"synthetic-lowest-rate(seed={seed})"), source="synthetic",
                       metrics=tuple({"layer_groups": float(g)} for g in groups))


def _override_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def write_multirun(table: TrialsTable, path: str | Path, fixed: list[str] = (),
                   config: dict | None = None) -> Path:
    """Lay ``table`` out as a Hydra multirun dir: job dirs ``0/ 1/ ...`` with
    ``.hydra/overrides.yaml`` (``fixed`` then the params), ``metrics.json`` (with the table's
    ``metrics`` facts, such as ``layer_groups``) and, when given,
    ``.hydra/config.yaml`` (a composed config, e.g. for ``--apply``)."""
    path = Path(path)
    for i, (p, v, s) in enumerate(zip(table.params, table.values, table.status)):
        job = path / str(i)
        (job / ".hydra").mkdir(parents=True, exist_ok=True)
        lines = [*fixed, *(f"{k}={_override_text(x)}" for k, x in p.items())]
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(lines))
        if config is not None:
            (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        metrics = {"status": s, "objective": None if not np.isfinite(v) else float(v),
                   "objective_name": table.objective,
                   **(table.metrics[i] if table.metrics else {})}  # layer_groups, ...
        if table.direction is not None:  # as fastlab-train's metrics.json records it
            metrics["direction"] = table.direction
        (job / "metrics.json").write_text(json.dumps(metrics))
    return path
