"""A plain Hydra app, as most are: it writes its result into its output dir and returns nothing.

Nothing in it knows fastlab: the tests sweep it with ``hydra/sweeper=fastlab`` (grid and random)
as a user would swap the sweeper of any app. ``ret=text`` returns a string instead. The job numbered
``hold_job`` stops once, the first time a job of that number runs: it writes ``hold_dir/held``
and waits until ``hold_dir/release`` exists, so a test kills the driver (or starts another one)
at a known point, synchronised on that file rather than on a sleep.
"""

import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def hold_once(hold_dir: Path) -> None:
    """Write ``held`` (only the first job to get here) and wait for ``release``."""
    try:
        fd = os.open(hold_dir / "held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # held before: a resumed or later run goes on
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    while not (hold_dir / "release").exists():
        time.sleep(0.02)


@hydra.main(version_base="1.3", config_path="plain_conf", config_name="config")
def main(cfg: DictConfig) -> str | None:
    hydra_cfg = HydraConfig.get()
    if cfg.hold_job is not None and hydra_cfg.job.num == cfg.hold_job:
        hold_once(Path(cfg.hold_dir))
    out = Path(hydra_cfg.runtime.output_dir)
    (out / "result.txt").write_text(f"x={cfg.x} y={cfg.y} pid={os.getpid()}\n")
    if cfg.ret == "text":
        return f"x={cfg.x} y={cfg.y}"
    return None


if __name__ == "__main__":
    main()
