"""The edge between Hydra and a run: the one module below the ``@hydra.main`` wrappers that reads
Hydra's global config (``HydraConfig``).

``fastlab-train`` and ``fastlab-lr-find`` are Hydra apps. What a run must know about where it runs
is read here once, from the job's Hydra config, into a ``fastlab.context.RunContext`` that is
handed down; nothing below reads Hydra's state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fastlab.cli import fail
from fastlab.config import config_dir, register_configs
from fastlab.context import Keep, RunContext, Trial
from fastlab.errors import FastlabError

SWEEPER = "FastlabSweeper"  # the class name of hydra/sweeper=fastlab's sweeper

# What this process keeps between the trials it runs as a sweep worker: made once per process,
# handed to each of its trials through their RunContext.
WORKER_KEEP = Keep(active=True)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def parallel_jobs(launcher: Any) -> int:
    """How many jobs of a multirun run at once on this machine: joblib's ``n_jobs`` (-1 = one per
    core); 1 for another launcher."""
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs", -1) or 1)
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def run_context() -> tuple[RunContext, Path | None]:
    """The job's ``RunContext`` and run dir, read off Hydra's config of the running job.

    A job of a ``hydra/sweeper=fastlab`` multirun is a trial: it gets the sweep's settings, the
    trial number its driver handed it (``hydra.sweeper.trial``), the link its pruner reports
    through, and the worker's keeper. Any other multirun's job is a run alone that knows its job
    number (which GPU) and how many jobs share the cores.
    """
    hc = HydraConfig.get()
    output_dir = OmegaConf.select(hc, "runtime.output_dir", default=None)
    run_dir = Path(output_dir) if output_dir is not None else None
    if hc.mode != RunMode.MULTIRUN:
        return RunContext(), run_dir
    num = OmegaConf.select(hc, "job.num", default=None)
    job_num = None if num is None else int(num)
    jobs = parallel_jobs(hc.get("launcher"))
    if not str(hc.sweeper.get("_target_", "")).endswith(SWEEPER):
        return RunContext(job_num=job_num, parallel_jobs=jobs), run_dir
    settings = OmegaConf.to_container(hc.sweeper, resolve=True)
    number = settings.get("trial")
    trial = Trial(None if number is None else int(number), Path(str(hc.sweep.dir)), settings)
    link = None
    if trial.pruner != "none":
        from fastlab.sweep.link import trial_link  # the trial store: loaded in a pruned sweep only

        link = trial_link(trial)
    return RunContext(trial, job_num, jobs, WORKER_KEEP, link), run_dir


def hydra_app(prog: str, body: Callable[[DictConfig, RunContext, Path], float]) -> Callable[[], None]:
    """The ``main`` of a Hydra command: composes ``conf/train.yaml`` from the command line, runs
    ``body(cfg, context, run_dir)`` and returns its float to Hydra (any sweeper can optimise it).
    Hydra's job name (``hydra.job.name``: the log file's name) is ``prog`` without ``fastlab-``,
    and ``--help`` names the app ``prog`` (``hydra.help.app_name`` in ``conf/train.yaml``).
    A ``FastlabError`` ends the command with one line and exit 2, or, inside a multirun, is raised
    again so that the sweeper records a failed job."""
    register_configs()

    def _main(cfg: DictConfig) -> float:
        context, run_dir = run_context()
        try:
            return body(cfg, context, run_dir)
        except FastlabError as e:
            if in_multirun():
                raise  # the sweeper records a failed trial and goes on
            fail(prog, str(e))

    # Hydra names the job after the task function's module: the command's, not this one.
    _main.__module__ = "fastlab.cli." + prog.removeprefix("fastlab-")
    return hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(_main)
