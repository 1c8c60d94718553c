"""``fastlab-train``: compose a run from ``conf/``, train it, write its run dir.

``train(cfg)`` is importable and does the work; ``main`` is the ``@hydra.main`` wrapper, which
returns one float (the objective) so that any Hydra sweeper can optimise it. What a run does is
split over ``fastlab.prepare`` (data, model, Learner) and ``fastlab.run`` (plan, fit, outputs,
``metrics.json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fastlab.callbacks.checkpoint import find_resume
from fastlab.callbacks.core import Callback
from fastlab.cli import fail
from fastlab.config import RunConfig, register_configs, to_run_config
from fastlab.data.images import storage
from fastlab.distributed import setup, teardown
from fastlab.errors import FastlabError
from fastlab.guards import deadline
from fastlab.run import reuse
from fastlab.run.fit import fit_retrying
from fastlab.run.plan import resumed_config
from fastlab.run.trial import exit_without_final_collection, in_fastlab_sweep, trial_profile
from fastlab.rundir import clean_stale_temps

log = logging.getLogger("fastlab")


def config_dir() -> Path:
    """``fastlab/conf``: in a source checkout a link to the top-level ``conf/``, in a wheel the
    configs themselves."""
    return Path(__file__).resolve().parent / "conf"


def default_run_dir() -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs/runs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def train(cfg: DictConfig | RunConfig, run_dir: str | Path | None = None, cbs: Sequence[Callback] = ()) -> dict:
    """Train one run and write its run dir; returns the contents of ``metrics.json``.

    ``cfg`` is a composed config (as Hydra gives it) or a ``RunConfig``. ``run_dir`` defaults to
    Hydra's output dir, or ``outputs/runs/<date>/<time>`` outside Hydra; with ``trainer.resume``
    the interrupted run's dir, continued from its ``last.pt``. ``cbs`` are extra callbacks for
    the Learner. Errors in the user's input raise ``FastlabError`` before any training; a loss
    that turns non-finite ends the run with ``status: diverged`` and a null objective.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    run = cfg if isinstance(cfg, RunConfig) else to_run_config(cfg)
    trial = in_fastlab_sweep()  # a trial does only what the sweep needs (fastlab.run.trial)
    run = trial_profile(run, trial)
    if trial:
        exit_without_final_collection()
    ctx = setup(run.trainer.strategy, run.trainer.device)
    state, run_dir = find_resume(run.trainer.resume, run_dir)
    if state is not None:
        run = resumed_config(state["config"], run.trainer)
        log.info("resuming the run in %s with its own config", run_dir)
    if ctx.main:  # in a data-parallel run only rank 0 writes
        run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in clean_stale_temps(run_dir):
            log.info("removed %s, left by a writer that was killed", tmp.name)
    try:
        # trainer.timeout counts from here: data, model, training and outputs, the whole job
        # decoded images live where paths.cache and trainer.max_resident_gb say (data.cache)
        # a sweep worker keeps decoded data and read checkpoints for its next trials (fastlab.run.reuse)
        with deadline(run.trainer.timeout, run_dir), storage.using(storage.Storage.of(run)), reuse.using(trial):
            return fit_retrying(run, run_dir, state, ctx, cbs, start).to_dict()
    except BaseException:
        teardown(ctx, barrier=False)  # a failed rank must not wait for the others
        raise
    finally:
        teardown(ctx)


register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    try:
        metrics = train(cfg)
    except FastlabError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records a failed trial and goes on
        fail("fastlab-train", str(e))
    value = metrics["objective"]
    return float("nan") if value is None else float(value)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
