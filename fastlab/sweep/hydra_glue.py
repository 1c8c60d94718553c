"""Between Hydra and the driver: settings, job dirs, batch size, job returns -> Outcomes, and
what Hydra's contract asks of a sweeper (``multirun.yaml``, the ``JobReturn``s of every launch)."""

import contextlib
import copy
import dataclasses
import logging
import math
import os
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fastlab.run.trial import exit_without_final_collection
from fastlab.rundir import atomic_write_text
from fastlab.sweep import hydra_private
from fastlab.sweep.direction import HOW_TO_SET, direction_of_task, resolve_direction
from fastlab.sweep.driver import Outcome, run_sweep
from fastlab.sweep.errors import SweepError
from fastlab.sweep.objectives import parse_objectives
from fastlab.sweep.settings import SweepSettings, needs_a_number, trial_override
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
) -> list[list[JobReturn]]:
    """Run the sweep ``hydra.sweeper`` describes, with Hydra's launcher and config loader; return
    the ``JobReturn``s of this driver's launch calls in launch order (one list per call), as
    Hydra's basic sweeper does."""
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
    elif options.direction is None and direction_of_task(task_node(config)) is None:
        needs = needs_a_number(options)
        if needs is not None:  # said before the first trial, not after failed ones
            raise SweepError(f"{needs} needs each trial's objective, a number, and the way it is better: return "
                             f"the objective as a float from the task and {HOW_TO_SET}, or sweep with "
                             "hydra.sweeper.strategy=grid or random, which also take a task that returns nothing")
        # grid and random need no ranking to run: a plain Hydra app (which returns nothing, or a
        # number nobody said the way of) is swept as Hydra's basic sweeper would, its trials unranked
        direction, source = None, None
    else:
        direction, source = resolve_direction(options.direction, task_node(config), space.names)
    options = dataclasses.replace(options, direction=direction)
    if direction is None:
        log.info("direction: not set (a task that returns nothing is swept as it is; set "
                 "hydra.sweeper.direction to rank the numbers a task returns)")
    else:
        log.info(f"direction: {direction} (from {source})")
    returns = LaunchReturns()

    def launch(overrides: list[list[str]], initial_job_idx: int) -> list[Outcome]:
        slot = returns.reserve()
        try:
            with shipped.installed() if shipped is not None else contextlib.nullcontext():
                batch = launcher.launch([tuple(o) for o in overrides], initial_job_idx=initial_job_idx)
        except Exception as e:
            # A job's own errors come back in its JobReturn; an exception here means the launcher
            # itself broke (e.g. joblib when a worker process is killed). The batch stays
            # "running" in trials.db, so the same command re-runs it.
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise SweepError(f"the launcher failed ({type(e).__name__}: {first}): a job process died or could "
                             "not start; run the same command again to resume (completed trials are kept)") from None
        returns.fill(slot, batch)
        return [outcome_of(r) for r in batch]

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
            # as Hydra's basic sweeper saves it: the sweep's composed config, for users and tools
            started=lambda: write_multirun_yaml(config),
        )
        ok = True
    finally:
        close_sweep(tracking, ok)
    return returns.launched()


class LaunchReturns:
    """The ``JobReturn``s of a sweep's launch calls, in the order the calls were made: a slot is
    taken as a call starts (asynchronous launch calls run on threads of their own and may end in
    any order) and filled when it returns; a call that raised leaves its slot out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: list[list[JobReturn] | None] = []

    def reserve(self) -> int:
        with self._lock:
            self._slots.append(None)
            return len(self._slots) - 1

    def fill(self, slot: int, batch: Sequence[JobReturn]) -> None:
        with self._lock:
            self._slots[slot] = list(batch)

    def launched(self) -> list[list[JobReturn]]:
        with self._lock:
            return [batch for batch in self._slots if batch is not None]


def write_multirun_yaml(config: DictConfig) -> None:
    """``hydra.sweep.dir/multirun.yaml``: the sweep's config as Hydra's basic sweeper saves it
    (``OmegaConf.save``'s text, unresolved), written atomically like every file fastlab writes."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(config))


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
    """A Hydra ``JobReturn`` -> an Outcome: a float is the objective (NaN or inf: diverged), a
    mapping the objectives by name; nothing (None) or anything else is a return without a number,
    which grid and random record as it is (``Outcome.unnumbered``)."""
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
    if value is None:  # most Hydra apps write their results themselves and return nothing
        return Outcome("completed", value=None, job_dir=job_dir, text=None, unnumbered=True)
    try:
        number = float(value)
    except (TypeError, ValueError):
        # kept as text with the trial; the driver decides whether the sweep can do without a number
        return Outcome("completed", value=None, job_dir=job_dir, text=str(value), unnumbered=True)
    if not math.isfinite(number):
        return Outcome("diverged", value=None, job_dir=job_dir)
    return Outcome("completed", value=number, job_dir=job_dir)
