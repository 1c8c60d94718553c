"""``train(cfg)``: one run, from its config to its written run dir.

Importable and free of Hydra's global state: what the run must know about where it runs (a sweep
trial or not, the job it is, what a sweep worker keeps) comes in as a ``RunContext``, which the
``fastlab-train`` command (``fastlab.cli.train``) builds from Hydra's config. Called from Python, a
notebook or another application (inside its multirun too) with no context, it is a run alone.
What a run does is split over ``fastlab.run.prepare`` (data, model, Learner) and ``fastlab.run``
(plan, fit, outputs, ``metrics.json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from fastlab.callbacks.checkpoint import find_resume
from fastlab.callbacks.core import Callback
from fastlab.config import RunConfig, register_configs, to_run_config
from fastlab.context import RunContext
from fastlab.distributed import setup, teardown
from fastlab.guards import deadline
from fastlab.run.fit import fit_retrying
from fastlab.run.plan import resumed_config
from fastlab.run.trial import exit_without_final_collection, trial_profile
from fastlab.rundir import clean_stale_temps

log = logging.getLogger("fastlab")

# The schemas in Hydra's ConfigStore, so that conf/ composes with Hydra's compose API in a script or
# notebook that imports train (as the Python API shows).
register_configs()


def default_run_dir() -> Path:
    """``outputs/runs/<date>/<time>`` under the working folder: a run's dir when none is given."""
    return Path("outputs/runs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def print_config(run: RunConfig) -> None:
    """The run's composed config as a tree on stdout (``trainer.print_config``): one branch per
    group, its keys and values as the config spells them (rich, as lightning-hydra-template)."""
    import yaml
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold")
    for group, value in run.to_dict().items():
        if not isinstance(value, dict):  # a top-level value (seed, save_as)
            tree.add(f"{group}: {value}")
            continue
        text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip()
        tree.add(group, style="bold").add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    Console().print(tree)


def train(cfg: DictConfig | RunConfig, run_dir: str | Path | None = None, cbs: Sequence[Callback] = (),
          context: RunContext | None = None) -> dict:
    """Train one run and write its run dir; returns the contents of ``metrics.json``.

    ``cfg`` is a composed config (as Hydra gives it) or a ``RunConfig``. ``run_dir`` defaults to
    ``outputs/runs/<date>/<time>``; with ``trainer.resume`` the interrupted run's dir, continued
    from its ``last.pt``. ``cbs`` are extra callbacks for the Learner. ``context`` says where the
    run runs (default: a run alone, whoever calls it). Errors in the user's input raise
    ``FastlabError`` before any training; a loss that turns non-finite ends the run with
    ``status: diverged`` and a null objective.
    """
    start = time.perf_counter()
    context = context or RunContext()
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    run = cfg if isinstance(cfg, RunConfig) else to_run_config(cfg)
    run = trial_profile(run, context)  # a trial does only what the sweep needs (fastlab.run.trial)
    if context.trial is not None:
        exit_without_final_collection()
    ctx = setup(run.trainer.strategy, run.trainer.device)
    state, run_dir = find_resume(run.trainer.resume, run_dir)
    if state is not None:
        run = resumed_config(state["config"], run.trainer)
        log.info("resuming the run in %s with its own config", run_dir)
    if run.trainer.print_config and context.trial is None and ctx.main:
        print_config(run)
    if ctx.main:  # in a data-parallel run only rank 0 writes
        run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in clean_stale_temps(run_dir):
            log.info("removed %s, left by a writer that was killed", tmp.name)
    try:
        # trainer.timeout counts from here: data, model, training and outputs, the whole job
        with deadline(run.trainer.timeout, run_dir):
            return fit_retrying(run, run_dir, state, ctx, cbs, start, context).to_dict()
    except BaseException:
        teardown(ctx, barrier=False)  # a failed rank must not wait for the others
        raise
    finally:
        teardown(ctx)
