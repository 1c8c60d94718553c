"""``fastlab-train``: compose a run from ``conf/``, train it, write its run dir.

The ``@hydra.main`` wrapper (``fastlab.cli.hydra_app``) returns one float, the objective, so that
any Hydra sweeper can optimise it; the work is ``fastlab.run.train.train``, importable on its own.

    python -m fastlab.cli.train schedule.epochs=5
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from fastlab.cli.hydra_app import hydra_app
from fastlab.context import RunContext
from fastlab.run.train import train


def _train(cfg: DictConfig, context: RunContext, run_dir: Path) -> float:
    value = train(cfg, run_dir, context=context)["objective"]
    return float("nan") if value is None else float(value)


main = hydra_app("fastlab-train", _train)


if __name__ == "__main__":
    main()
