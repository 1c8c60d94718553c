"""The LR finder as a run of its own (``fastlab-lr-find``): build the run a config describes, run
the range test in its first stage's freezing, write ``lr_find.json`` and ``plots/lr_find.png``."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fastlab.config import RunConfig, to_run_config
from fastlab.context import RunContext
from fastlab.lr_find import LRFindResult, plot_lr_find
from fastlab.run.plan import find_lr
from fastlab.run.prepare import prepare
from fastlab.run.train import default_run_dir
from fastlab.rundir import LR_FIND, PLOTS, write_json

log = logging.getLogger("fastlab")


def run_lr_find(cfg: DictConfig | RunConfig, run_dir: str | Path | None = None,
                context: RunContext | None = None) -> LRFindResult:
    """The range test of the run ``cfg`` describes (its own cache settings, ``paths.cache`` and
    ``data.cache``), written to ``run_dir`` (default ``outputs/runs/<date>/<time>``)."""
    run = cfg if isinstance(cfg, RunConfig) else to_run_config(cfg)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    result = find_lr(prepare(run, context=context).learn, run.schedule)
    write_json(run_dir / LR_FIND, result.to_json())
    plot_lr_find(result, run_dir / PLOTS / "lr_find.png")
    for name, lr in result.suggestions.items():
        log.info("lr_find %-8s %.3g", name, lr)
    log.info("run dir: %s", run_dir)
    return result
