"""``fastlab-train``: compose a run from ``conf/``, train it, write its run dir.

``train(cfg)`` is importable and does the work; ``main`` is the ``@hydra.main`` wrapper, which
returns one float (the objective) so that any Hydra sweeper can optimise it.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fastlab.config import RunConfig, ScheduleConfig, register_configs, to_run_config
from fastlab.data import DataBunch
from fastlab.errors import ConfigError, FastlabError
from fastlab.learner import Learner
from fastlab.models import create_model
from fastlab.rundir import git_info, save_checkpoint, versions, write_history, write_json
from fastlab.tasks import Task, get_task

log = logging.getLogger("fastlab")


def config_dir() -> Path:
    """``fastlab/conf``: in a source checkout a link to the top-level ``conf/``, in a wheel the
    configs themselves."""
    return Path(__file__).resolve().parent / "conf"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here: use trainer.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_schedule(learn: Learner, s: ScheduleConfig) -> list[float]:
    """Train by ``schedule.name``; returns the realised peak rate of each layer group."""
    if s.name == "one_cycle":
        learn.fit_one_cycle(s.epochs, s.lr_max, div=s.div, div_final=s.div_final,
                            pct_start=s.pct_start, moms=s.moms)
    elif s.name == "constant":
        learn.fit_constant(s.epochs, s.lr_max, mom=s.moms[0])
    else:
        raise ConfigError(f"schedule.name={s.name!r} is not known: use one_cycle or constant")
    return [s.lr_max * scale for scale in learn.lr_scales()]


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def summarize(history: list[dict], task: Task, objective: str) -> tuple[dict, dict | None]:
    """``final`` (the last epoch's values) and ``best`` (the epoch best by ``objective``)."""
    if not history:
        return {}, None
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "seconds")}
    scored = [row for row in history if _finite_or_none(row.get(objective)) is not None]
    if not scored:
        return final, None
    pick = max if task.direction(objective) == "maximize" else min
    row = pick(scored, key=lambda r: r[objective])
    best = {"epoch": row["epoch"], **{k: v for k, v in row.items() if k not in ("epoch", "lr", "seconds")}}
    return final, best


def _json_safe(obj):
    if isinstance(obj, float):
        return _finite_or_none(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def default_run_dir() -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs/runs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def train(cfg: DictConfig | RunConfig, run_dir: str | Path | None = None) -> dict:
    """Train one run and write its run dir; returns the contents of ``metrics.json``.

    ``cfg`` is a composed config (as Hydra gives it) or a ``RunConfig``. ``run_dir`` defaults to
    Hydra's output dir, or ``outputs/runs/<date>/<time>`` outside Hydra. Errors in the user's
    input raise ``FastlabError`` before any training; a loss that turns non-finite ends the run
    with ``status: diverged`` and a null objective.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else None
    run = cfg if isinstance(cfg, RunConfig) else to_run_config(cfg)
    task = get_task(run.task)
    objective = run.task.objective
    metrics: dict = {"status": "failed", "objective": None, "objective_name": objective}
    try:
        device = resolve_device(run.trainer.device)
        if run.trainer.precision == "16-mixed" and device.type != "cuda":
            raise ConfigError("trainer.precision=16-mixed needs a CUDA device: use bf16-mixed (works on CPU) or 32")
        data = DataBunch.from_config(run.data, task.targets, seed=run.seed).to(device)
        seed_everything(run.seed)  # right before the model: init, dropout and nothing else
        model = create_model(run.arch, data.n_channels, data.c)
        s = run.schedule
        learn = Learner(model, data, task.loss_func, task.metrics, opt=s.opt, wd=s.wd,
                        lr_ratio=s.lr_ratio, precision=run.trainer.precision,
                        progress=run.trainer.progress)
        log.info("training %s on %s (%d train / %d valid images, %d outputs) on %s",
                 run.arch.name, run.data.name, len(data.train_items), len(data.valid_items),
                 data.c, device)
        group_lrs = run_schedule(learn, s)
        history = learn.recorder.history
        final, best = summarize(history, task, objective)
        diagnostics = []
        if learn.diverged:
            diagnostics.append(f"loss became non-finite in epoch {learn.epoch + 1}: lower schedule.lr_max "
                               f"(was {s.lr_max:g})")
        value = final.get(objective) if not learn.diverged else None
        metrics.update({
            "status": "diverged" if learn.diverged else "completed",
            "objective": _finite_or_none(value),
            "final": final,
            "best": best,
            "epochs": len(history),
            "layer_groups": len(learn.layer_groups),
            "group_lrs": group_lrs,
            "seconds": {"total": time.perf_counter() - start, "train": learn.recorder.train_seconds},
            "diagnostics": diagnostics,
        })
        write_history(run_dir / "history.csv", history, list(task.metrics))
        if run.trainer.save_model:
            save_checkpoint(run_dir / "model.pt", {
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "meta": {"arch": run.arch.name, "arch_config": dict(vars(run.arch)),
                         "task": task.name, "classes": data.classes, "n_in": data.n_channels,
                         "n_out": data.c, "size": data.size, "mean": data.mean, "std": data.std,
                         "config": resolved},
            })
        if run.trainer.plots and learn.recorder.losses:
            from fastlab.plots import plot_losses, plot_lr

            plot_losses(learn.recorder, run_dir / "plots" / "losses.png")
            plot_lr(learn.recorder, run_dir / "plots" / "lr.png")
        for line in diagnostics:
            log.warning(line)
    except Exception as e:
        metrics["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, FastlabError):
            metrics["traceback"] = traceback.format_exc()
        raise
    finally:
        metrics["seconds"] = metrics.get("seconds") or {"total": time.perf_counter() - start, "train": 0.0}
        metrics.setdefault("diagnostics", [])
        metrics["versions"], metrics["git"] = versions(), git_info()
        write_json(run_dir / "metrics.json", _json_safe(metrics))
    log.info("%s: %s = %s; run dir: %s", metrics["status"], objective, metrics["objective"], run_dir)
    return metrics


register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    try:
        metrics = train(cfg)
    except FastlabError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records a failed trial and goes on
        print(f"fastlab-train: error: {e}", file=sys.stderr)
        sys.exit(2)
    value = metrics["objective"]
    return float("nan") if value is None else float(value)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
