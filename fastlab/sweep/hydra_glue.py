"""Between Hydra and the driver: settings, job dirs, batch size, and job returns -> Outcomes."""

import contextlib
import copy
import dataclasses
import logging
import math
import os
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fastlab.run.trial import exit_without_final_collection
from fastlab.sweep import hydra_private
from fastlab.sweep.direction import resolve_direction
from fastlab.sweep.driver import Outcome, run_sweep
from fastlab.sweep.errors import SweepError
from fastlab.sweep.objectives import parse_objectives
from fastlab.sweep.settings import SweepSettings, trial_override
from fastlab.sweep.space import parse_space
from fastlab.sweep.trackers import close_sweep, open_sweep

log = logging.getLogger(__name__)


def run_hydra_sweep(
    settings: Mapping[str, Any],
    params: Mapping[str, Any] | None,
    arguments: Sequence[str],
    config: DictConfig,
    launcher: Any,
    config_loader: Any,
    validate: Any,
) -> None:
    """Run the sweep ``hydra.sweeper`` describes, with Hydra's launcher and config loader."""
    options = SweepSettings.from_config(settings).validate()  # `async` is a config key
    if options.batch_size is None:
        options.batch_size = auto_batch_size(config.hydra.get("launcher"), options.strategy,
                                             options.asynchronous)
    space = parse_space(params, arguments, config_loader=config_loader, conditions=options.conditions)
    objectives = parse_objectives(options.objectives, options.constraints)
    if objectives is not None:  # the trial's value is its first objective's
        first, direction = objectives.names[0], objectives.directions[0]
        if options.direction not in (None, direction):
            raise SweepError(f"hydra.sweeper.direction={options.direction} but the first objective, {first}, is to "
                             f"{direction}: drop hydra.sweeper.direction (the objectives say it)")
        source = f"hydra.sweeper.objectives.{first}"
    else:
        direction, source = resolve_direction(options.direction, task_node(config), space.names)
    options = dataclasses.replace(options, direction=direction)
    log.info(f"direction: {direction} (from {source})")

    def launch(overrides: list[list[str]], initial_job_idx: int) -> list[Outcome]:
        try:
            with shipped.installed() if shipped is not None else contextlib.nullcontext():
                returns = launcher.launch([tuple(o) for o in overrides], initial_job_idx=initial_job_idx)
        except Exception as e:
            # A job's own errors come back in its JobReturn; an exception here means the launcher
            # itself broke (e.g. joblib when a worker process is killed). The batch stays
            # "running" in trials.db, so the same command re-runs it.
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise SweepError(f"the launcher failed ({type(e).__name__}: {first}): a job process died or could "
                             "not start; run the same command again to resume (completed trials are kept)") from None
        return [outcome_of(r) for r in returns]

    exit_without_final_collection()  # the driver's exit, as its workers' (fastlab.run.trial)
    # MLflow's parent run and TensorBoard's HParams, when the trials log there (fastlab.tracking)
    tracking = open_sweep(config, str(config.hydra.sweep.dir), space, options)
    ok = False
    try:
        # Hydra's singletons copied once for all the launch calls (None: each call copies its own)
        shipped = hydra_private.shipped_singletons()
        run_sweep(
            options,
            space,
            str(config.hydra.sweep.dir),
            launch,
            job_dir_for=JobDirs(config),
            validate=validate,
            context=app_config_text(config),
            hand_number=trial_override,
            workers=launcher_workers(config.hydra.get("launcher")),
        )
        ok = True
    finally:
        close_sweep(tracking, ok)


def task_node(config: DictConfig) -> dict[str, Any] | None:
    """The composed config's ``task`` name and objective (resolved), or None when it has none.

    The sweeper's config holds the fixed overrides (``task=regress``) but not the searched ones,
    which is why a sweep over the task itself is refused by ``resolve_direction``.
    """
    out = {}
    for key in ("name", "objective"):
        try:
            value = OmegaConf.select(config, f"task.{key}", throw_on_missing=False)
        except Exception:  # an interpolation only a job can resolve: no known task then
            return None
        if value is None:
            return None
        out[key] = value
    return out


def app_config_text(config: DictConfig) -> str:
    """The app's composed config without ``hydra``, unresolved (``${now:...}`` stays as typed),
    as YAML: a resume must find the same, so trials of one sweep stay comparable."""
    app = OmegaConf.to_container(config, resolve=False)
    app.pop("hydra", None)
    return OmegaConf.to_yaml(app)


# Trials per worker in one batch for strategies whose proposals do not depend on results: a batch
# ends when its slowest trial does and costs the driver a turn-around, so a few trials per worker
# share that wait (joblib hands each worker its next trial as soon as it is free).
TRIALS_PER_WORKER = 4
# Asynchronously, trials per worker in flight for the same strategies: one running and one waiting
# in the launcher's queue, so a worker that finishes starts its next trial at once instead of
# idling through the driver's turn-around (recording, claiming, launching: about a third of a
# study trial's cost on a 2-core CPU when it was not hidden).
QUEUED_PER_WORKER = 2
ADAPTIVE = ("forest",)  # proposes from every finished trial: a batch is one round of proposals


def launcher_workers(launcher: Any) -> int | None:
    """Jobs the configured launcher runs at once when it says (joblib's n_jobs), else None (the
    driver takes batch_size): the LR finder's threads and the study's time estimate count them."""
    n_jobs = None if launcher is None else launcher.get("n_jobs")
    return auto_batch_size(launcher, "forest") if isinstance(n_jobs, int) and n_jobs != 0 else None


def auto_batch_size(launcher: Any, strategy: str = "forest", asynchronous: bool = True) -> int:
    """Trials in flight at once: the jobs the configured launcher runs at once (joblib's
    ``n_jobs``, else 1), times ``QUEUED_PER_WORKER`` asynchronously or ``TRIALS_PER_WORKER``
    batch-synchronously, unless the strategy is adaptive (it proposes better from more finished
    trials, so it keeps one trial per worker).

    Other launchers (submitit, ray) do not say how many workers will really be free, so with
    them set ``hydra.sweeper.batch_size`` to that number.
    """
    n_jobs = None if launcher is None else launcher.get("n_jobs")
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    if n_jobs < 0:  # joblib's convention: -1 = all CPUs, -2 = all but one, ...
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if strategy in ADAPTIVE:
        return n_jobs
    return n_jobs * (QUEUED_PER_WORKER if asynchronous else TRIALS_PER_WORKER)


class JobDirs:
    """Job number -> the dir that job will run in, ``hydra.sweep.dir/hydra.sweep.subdir``.

    One copy of the config is made once and its ``hydra.job.num`` set per call: a deep copy per
    job cost the driver about 13 ms of every trial's turn-around. Called from the driver's claims
    only, one at a time.
    """

    def __init__(self, config: DictConfig) -> None:
        self.root = str(config.hydra.sweep.dir)
        self.cfg = copy.deepcopy(config)

    def __call__(self, num: int) -> str:
        with read_write(self.cfg.hydra), open_dict(self.cfg.hydra):
            self.cfg.hydra.job.num = num
        try:
            subdir = str(OmegaConf.select(self.cfg, "hydra.sweep.subdir"))
        except Exception:
            # A subdir that needs what only the job knows (its overrides): the launcher tells later.
            subdir = str(num)
        return os.path.join(self.root, subdir)


def outcome_of(ret: JobReturn) -> Outcome:
    """A Hydra ``JobReturn`` -> an Outcome. The objective must be a float; NaN (or inf) = diverged."""
    job_dir = None
    if ret.hydra_cfg is not None:
        job_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
    if ret.status != JobStatus.COMPLETED:
        error = hydra_private.returned(ret)  # what the job raised
        if isinstance(error, BaseException):
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
        else:
            text = f"the job ended with status {ret.status.name}"
        return Outcome("failed", error=text, job_dir=job_dir)
    value = hydra_private.returned(ret)
    if isinstance(value, Mapping | DictConfig):  # several objectives by name: the driver reads them
        return Outcome("completed", value=None, job_dir=job_dir,
                       returned=OmegaConf.to_container(value) if isinstance(value, DictConfig) else dict(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Outcome(
            "failed",
            error=f"the task returned {value!r}, not a number; return the objective as a float",
            job_dir=job_dir,
        )
    if not math.isfinite(number):
        return Outcome("diverged", value=None, job_dir=job_dir)
    return Outcome("completed", value=number, job_dir=job_dir)
