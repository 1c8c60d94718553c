"""``fastlab-lr-find``: the LR finder on the run a config describes (``fastlab.run.find``);
returns the ``valley`` suggestion to Hydra."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fastlab.cli.hydra_app import hydra_app
from fastlab.context import RunContext
from fastlab.run.find import run_lr_find


def _find(cfg: DictConfig, context: RunContext, run_dir: Path) -> float:
    return run_lr_find(cfg, run_dir, context).suggestions["valley"]


main = hydra_app("fastlab-lr-find", _find)


if __name__ == "__main__":
    main()
