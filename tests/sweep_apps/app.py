"""A tiny Hydra app of the sweeper tests' own: any Hydra app can be swept, not only fastlab-train.

It returns a smooth function of x, y and c (maximum 1.0 at x=0.3, y=3, c=b), optionally sleeps
(so a test can kill a sweep mid-way; ``spread`` makes the time grow with x), raises when x equals ``fail_x`` and returns NaN when x
equals ``nan_x``. It writes ``marker.txt`` (the pid that ran it) into its job dir, so a test can
tell a job dir written by the first run from one written by a resume. With ``by_name=true`` it
returns its objectives by name: ``{"value": ..., "cost": 1 + 4x + y/5}``, a planted trade-off (the
value is best at x=0.3, the cost lowest at x=0), for ``hydra.sweeper.objectives``. ``noise`` adds
Gaussian noise of that sd, drawn from ``seed`` and the trial's values: a training seed's luck, for
``hydra.sweeper.repeats``.
"""

import math
import os
import random
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "marker.txt").write_text(str(os.getpid()))
    time.sleep(cfg.sleep * (1 + cfg.spread * cfg.x))
    if cfg.fail_x is not None and cfg.x == cfg.fail_x:
        raise RuntimeError(f"boom at x={cfg.x}")
    if cfg.nan_x is not None and cfg.x == cfg.nan_x:
        return math.nan
    bonus = {"a": 0.0, "b": 0.1, "c": -0.1}[cfg.c]
    value = 0.9 - (cfg.x - 0.3) ** 2 - 0.01 * (cfg.y - 3) ** 2 + bonus
    if cfg.noise:
        value += cfg.noise * random.Random(f"{cfg.seed}:{cfg.x}:{cfg.c}:{cfg.y}").gauss(0.0, 1.0)
    if cfg.by_name:
        return {"value": value, "cost": 1 + 4 * cfg.x + cfg.y / 5}
    return value


if __name__ == "__main__":
    main()
