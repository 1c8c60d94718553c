"""``--confirm``: a small controlled grid, run through the fastlab sweeper, that checks the forest.

A forest can flatter a sparse corner of the space. The grid trains the recommended focus value
and the neutral one, each at several head learning rates (``schedule.lr_max``) and seeds, with
everything else fixed at the sweep's own config, and asks: once the learning rate is tuned for
each arm, does the recommendation still win?

The sweep's composed config (``trials.db``'s, or a job's ``.hydra/config.yaml``) becomes the
primary config of the grid (``<report>/confirm_conf/meta_confirm.yaml``); other swept parameters
that matter are set to the best value of their partial dependence, the rest keep the sweep's
value (or, outside the sampled range, the trials' median). The grid is a fastlab sweep in
``<report>/confirm``, so a second ``--confirm`` resumes it.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fastlab.analysis.errors import MetaError
from fastlab.analysis.forest.analysis import MetaAnalysis
from fastlab.analysis.forest.encode import outcomes
from fastlab.analysis.forest.recommend import round3
from fastlab.analysis.forest.verdict import fmt
from fastlab.analysis.report.progress import ProgressLine
from fastlab.analysis.sources import read_trials
from fastlab.analysis.sources.table import TrialsTable
from fastlab.sweepdir import trials_db

LR = "schedule.lr_max"
GROUPS = ("data", "arch", "schedule", "task", "trainer", "aug")
# Groups whose options share one schema and carry no name: any option, then the config's values.
UNNAMED = {"trainer": "default", "aug": "none"}
CONFIG_NAME = "meta_confirm"


def _set(config: dict, key: str, value: Any) -> None:
    node = config
    *path, last = key.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def _get(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def fixed_config(m: MetaAnalysis) -> tuple[dict, list[str]]:
    """The config every grid run shares, and notes on what was set.

    The sweep's composed config with every other swept parameter at
    :meth:`MetaAnalysis.suggest`'s value (the best of its partial dependence when it matters).
    """
    if m.table_.config is None:
        raise MetaError(f"--confirm needs the sweep's composed config, and {m.table_.path} has "
                        "none (no .hydra/config.yaml in a completed job dir): rerun the sweep with "
                        "fastlab-train, or confirm by hand")
    config = copy.deepcopy(m.table_.config)
    config.pop("hydra", None)
    notes = []
    for f in m.encoded_.features:
        if f.name in (m.focus_, LR) or f.name in m.table_.derived:
            continue  # a derived column follows from the parameters it is computed from
        value, why = m.suggest(f.name, _get(config, f.name))
        if f.name in GROUPS:  # a config-group choice: switch the option, drop the old node
            config[f.name] = {"name": value}
        else:
            _set(config, f.name, value)
        notes.append(f"`{f.name}` = {value} ({why})")
    return config, notes


def head_rates(m: MetaAnalysis, config: dict, values: Sequence[float]) -> list[float]:
    """Head learning rates for the grid: around the best ``schedule.lr_max`` of each arm.

    With ``schedule.lr_max`` swept, each arm's best rate comes from the forest's partial dependence
    of (focus, lr_max) when it has that surface, else from lr_max's own curve; the grid spans
    each of them x1/3, x1, x3 (merging rates within 25%). Without it, the config's lr_max
    x1/3, x1, x3.
    """
    centres = []
    enc = m.encoded_
    if LR in enc.names:
        j, k = enc.index(m.focus_), enc.index(LR)
        fj, fk = enc.features[j], enc.features[k]
        grid_k = m.pd_[LR]["x"]
        if m.pd2d_ is not None and m.pd2d_["b"] == LR:
            from fastlab.analysis.forest.dependence import pd_surface

            grid_j = fj.to_x(list(values))
            surface = pd_surface(m.forest_, enc.X, j, k, grid_j, grid_k)  # (len(values), Gk)
            centres = [float(fk.from_x([grid_k[int(np.argmax(m.sign_ * row))]])[0])
                       for row in surface]
        else:
            centres = [float(fk.from_x([grid_k[int(np.argmax(m.sign_ * m.pd_[LR]["mean"]))]])[0])]
    else:
        lr = _get(config, LR)
        if not isinstance(lr, int | float) or isinstance(lr, bool):
            raise MetaError(f"--confirm tunes {LR} around the sweep's value, but it is {lr!r}: "
                            "pass --confirm-lrs 1e-3,3e-3,1e-2")
        centres = [float(lr)]
    rates: list[float] = []
    for c in sorted(centres):
        for f in (1 / 3, 1.0, 3.0):
            r = float(f"{c * f:.2g}")
            if not rates or r > rates[-1] * 1.25:
                rates.append(r)
    return sorted(set(rates))


def write_primary(config: dict, conf_dir: Path) -> None:
    """``<conf_dir>/meta_confirm.yaml``: the fixed config as a primary config that composes with
    fastlab's own groups (each group's option chosen by its ``name``)."""
    defaults: list[Any] = ["train_schema"]
    for group in GROUPS:
        name = UNNAMED.get(group) or (config.get(group) or {}).get("name")
        if name is None:
            raise MetaError(f"the sweep's config has no {group}.name: --confirm cannot rebuild it")
        defaults.append({group: name})
    defaults.append("_self_")
    doc = {"defaults": defaults, **config, "hydra": {"job": {"chdir": False}}}
    conf_dir.mkdir(parents=True, exist_ok=True)
    from fastlab.rundir import atomic_write_text

    atomic_write_text(conf_dir / f"{CONFIG_NAME}.yaml",
                      "# Written by fastlab-meta --confirm: the sweep's config, fixed.\n"
                      + yaml.safe_dump(doc, sort_keys=False))


def _choice(values: Sequence[Any]) -> str:
    return "choice(" + ", ".join(repr(v) for v in values) + ")"


def grid_command(conf_dir: Path, sweep_dir: Path, focus: str, values: Sequence[float],
                 lrs: Sequence[float], seeds: int, extra: Sequence[str] = (),
                 direction: str | None = None) -> list[str]:
    """The ``fastlab-train -m`` command of the grid (every combination, in order).

    ``direction``: the analysis's own (``--direction`` or the sweep's), so the grid's best.yaml
    ranks as the verdict does; None leaves it to the task's objective.
    """
    way = [] if direction is None else [f"hydra.sweeper.direction={direction}"]
    return [sys.executable, "-m", "fastlab.cli.train", "-m", "--config-dir", str(conf_dir),
            "--config-name", CONFIG_NAME, "hydra/sweeper=fastlab",
            "hydra.sweeper.strategy=grid", *way, f"hydra.sweep.dir={sweep_dir}",
            f"{focus}={_choice(values)}", f"{LR}={_choice(lrs)}", f"seed=range(0, {seeds})",
            "trainer.progress=none", "trainer.plots=false", "trainer.save_model=false", *extra]


def _finished(sweep_dir: Path) -> int:
    """Finished trials of the grid so far, read through the trial store (no lock taken)."""
    from fastlab.sweep.store import count_finished

    return count_finished(trials_db(sweep_dir))


def run_grid(cmd: list[str], sweep_dir: Path, total: int, log: Path, quiet: bool = False) -> None:
    """Run the grid as a child process, its output into ``log``, with a progress line."""
    progress = None if quiet else ProgressLine("fastlab-meta: confirmation grid")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        shown = -1
        while child.poll() is None:
            time.sleep(1.0)
            done = _finished(sweep_dir)
            if progress is not None and done != shown and done < total:
                progress(done, total)
                shown = done
    if progress is not None:
        progress(total, total)
    if child.returncode != 0:
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {child.returncode}"
        raise MetaError(f"the confirmation grid failed ({last.strip()}); its log: {log}")


def summarize_grid(table: TrialsTable, focus: str, lr_key: str, sign: float,
                   values: Sequence[float], diverged: str = "worst") -> dict[str, Any]:
    """Mean and standard error per (focus value, head rate) cell, and the tuned comparison.

    ``values`` = (neutral, recommended). Each arm is scored at its best head rate; the
    recommendation "beats" the neutral value when the difference exceeds twice its standard
    error (and "loses" when it falls below minus twice).
    """
    direction = "maximize" if sign > 0 else "minimize"
    y, keep, policy = outcomes(table.values, table.status, direction, diverged)
    cells: dict[tuple[float, float], list[float]] = {}
    for p, v, k in zip(table.params, y, keep):
        if k:
            cells.setdefault((float(p[focus]), float(p[lr_key])), []).append(float(v))
    rows = []
    for (value, lr), vs in sorted(cells.items()):
        a = np.asarray(vs)
        se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else None
        rows.append({"value": value, "lr_max": lr, "n": len(a), "mean": float(a.mean()), "se": se})
    tuned = {}
    for v in values:
        arm = [r for r in rows if math.isclose(r["value"], float(v))]
        if arm:
            tuned[float(v)] = max(arm, key=lambda r: sign * r["mean"])
    out: dict[str, Any] = {"param": focus, "values": [float(v) for v in values], "cells": rows,
                           "policy": policy["text"], "tuned": list(tuned.values()),
                           "difference": None, "difference_se": None, "beats": None,
                           "seed_sd": seed_sd(rows)}
    neutral, best = (float(v) for v in values)
    if neutral not in tuned or best not in tuned:
        out["verdict"] = "the grid has no completed run for one of the arms: nothing to compare"
        return out
    a, b = tuned[best], tuned[neutral]
    diff = sign * (a["mean"] - b["mean"])
    se = math.sqrt((a["se"] or 0.0) ** 2 + (b["se"] or 0.0) ** 2)
    out["difference"], out["difference_se"] = diff, se
    if diff > 2 * se:
        out["beats"], word = True, "beats"
    elif diff < -2 * se:
        out["beats"], word = False, "loses to"
    else:
        out["beats"], word = None, "cannot be told from"
    out["verdict"] = (
        f"With {LR} tuned for each, {focus}={fmt(best)} {word} {fmt(neutral)}: "
        f"{fmt(a['mean'])} ± {fmt(a['se'])} (at lr {fmt(a['lr_max'])}) vs "
        f"{fmt(b['mean'])} ± {fmt(b['se'])} (at lr {fmt(b['lr_max'])}); difference "
        f"{fmt(diff, True)} ± {fmt(se)} (s.e., {a['n']} seeds per cell).")
    return out


def seed_sd(cells: Sequence[dict[str, Any]]) -> float | None:
    """A single run's noise between seeds: the pooled sd of the runs around their cell's mean
    (cells ``{n, se}`` as :func:`summarize_grid` lists them); None without a cell of 2 runs."""
    dof = sum(c["n"] - 1 for c in cells if c["se"] is not None)
    squares = sum((c["n"] - 1) * c["n"] * c["se"] ** 2 for c in cells if c["se"] is not None)
    return math.sqrt(squares / dof) if dof > 0 else None


def grid_margin(result: dict[str, Any]) -> tuple[float, str] | None:
    """The margin a confirmation grid measured, for :meth:`MetaAnalysis.set_margin`, or None."""
    sd = result.get("seed_sd")
    if sd is None or not sd > 0:
        return None
    return sd, (f"the confirmation grid's seed noise: the pooled sd of a single run over "
                f"{result.get('seeds', 'its')} seeds per cell")


def confirm(m: MetaAnalysis, out: Path, seeds: int = 3, lrs: Sequence[float] | None = None,
            extra: Sequence[str] = (), quiet: bool = False) -> dict[str, Any]:
    """Run (or resume) the confirmation grid of a fitted analysis; returns its summary."""
    rec = m.recommendation_
    if rec is None or m.focus_ == LR:
        raise MetaError(f"--confirm tunes {LR} inside each arm: the focus must be another "
                        "numeric parameter, e.g. --focus schedule.lr_ratio")
    if m.focus_ in m.table_.derived:
        raise MetaError(f"--confirm trains values of the focus, and {m.focus_} is derived "
                        f"({m.table_.derived[m.focus_]}), not a config key: focus a swept "
                        "parameter, e.g. --focus schedule.lr_ratio")
    if m.neutral_ is None:
        raise MetaError(f"--confirm compares the recommendation with the neutral value of "
                        f"{m.focus_}, and it has none: pass --neutral VALUE")
    if seeds < 2:
        raise MetaError(f"--confirm-seeds {seeds}: a standard error needs at least 2 seeds")
    f = m.encoded_.features[m.encoded_.index(m.focus_)]
    values = [round3(m.neutral_, f.integer), round3(rec["best"], f.integer)]
    tested = "recommended"
    if values[0] == values[1] and m.reference is not None:
        # the forest prefers the neutral value: put the stated reference (2.6) to the test
        values[1], tested = round3(m.reference, f.integer), "reference"
    if values[0] == values[1]:
        return {"param": m.focus_, "values": values, "cells": [], "tuned": [], "beats": None,
                "difference": None, "difference_se": None,
                "description": f"The recommended `{m.focus_}` is its neutral value "
                               f"{fmt(values[0])}, and no --reference was given: no grid to run.",
                "verdict": f"the recommendation is the neutral {m.focus_}={fmt(values[0])}: "
                           "nothing to confirm."}
    config, notes = fixed_config(m)
    rates = list(lrs) if lrs else head_rates(m, config, values)
    conf_dir, sweep_dir = out / "confirm_conf", (out / "confirm").resolve()
    write_primary(config, conf_dir)
    # --metric: the grid's runs are judged by that metric (their metrics.json), in the analysis's
    # direction; the grid's own best.yaml then ranks by the task's objective, as the task says
    metric = m.table_.metric
    cmd = grid_command(conf_dir.resolve(), sweep_dir, m.focus_, values, rates, seeds, extra,
                       m.direction_ if metric is None else None)
    total = len(values) * len(rates) * seeds
    run_grid(cmd, sweep_dir, total, out / "confirm.log", quiet)
    result = summarize_grid(read_trials(sweep_dir, metric), m.focus_, LR, m.sign_, values, m.diverged)
    result["description"] = (
        f"{len(values)} values of `{m.focus_}` (neutral {fmt(values[0])}, {tested} "
        f"{fmt(values[1])}{'' if rec['clear_optimum'] else ', though the forest found no clear optimum'}"
        f"{', since the recommendation is the neutral value' if tested == 'reference' else ''})"
        f" x {len(rates)} head rates ({', '.join(fmt(r) for r in rates)}) x {seeds} seeds = "
        f"{total} runs, everything else fixed at the sweep's config"
        + (": " + "; ".join(notes) if notes else "") + f". Grid: `{sweep_dir}`.")
    result["lrs"], result["seeds"], result["sweep_dir"] = rates, seeds, str(sweep_dir)
    result["tested"] = tested
    return result
