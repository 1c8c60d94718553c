"""The sweep loop: propose a batch, record it as running, launch it, record the results.

Independent of Hydra: ``launch`` is any function that runs a batch of override lists as jobs
numbered from a given index and returns one ``Outcome`` per job (``hydra_glue`` adapts Hydra's
launchers). The loop's state lives in ``trials.db`` alone, so running the same sweep again resumes:

- finished trials are kept and not re-run; ``n_trials`` is the total for the sweep;
- trials left ``running`` by a driver that died are recorded from their job's ``metrics.json``
  when the job had finished, else run again, with the same params, in a new job dir: job numbers
  only grow, so no job dir is ever overwritten.
"""

import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastlab.run.metrics import read_metrics
from fastlab.sweep.direction import HOW_TO_SET
from fastlab.sweep.errors import SweepError
from fastlab.sweep.export import best_table, best_trials, write_exports
from fastlab.sweep.settings import DEFAULT_N_TRIALS, SweepSettings
from fastlab.sweep.space import SearchSpace
from fastlab.sweep.store import FINISHED, Trial, TrialStore
from fastlab.sweep.strategies import Observation, grid_size, propose

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """The result of one job: status completed, failed or diverged (a NaN objective)."""

    status: str
    value: float | None = None
    error: str | None = None
    job_dir: str | None = None  # where the job ran, when the launcher says


Launch = Callable[[list[list[str]], int], Sequence[Outcome]]


def run_sweep(
    settings: SweepSettings,
    space: SearchSpace,
    sweep_dir: str | Path,
    launch: Launch,
    job_dir_for: Callable[[int], str] = str,
    validate: Callable[[list[list[str]]], None] | None = None,
    echo: Callable[[str], None] = print,
    context: str = "",
) -> list[Trial]:
    """Run (or resume) a sweep in ``sweep_dir``; return its trials.

    Parameters
    ----------
    job_dir_for : job number -> the job's dir, recorded while the trial runs (the launcher's
        answer replaces it when the job returns).
    validate : raises if a batch of override lists cannot be composed, before anything runs.
    echo : where the best-trials table goes.
    context : anything else a resume must match (the app's composed config), besides the space.

    ``settings.direction`` must be set: ``hydra_glue`` resolves it from the app's task when the
    user gave none (``fastlab.sweep.direction``).
    """
    settings.validate()
    if settings.direction is None:
        raise SweepError(f"hydra.sweeper.direction is not set; {HOW_TO_SET}")
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with TrialStore(sweep_dir / "trials.db") as store:
        seed = _check_identity(store, space, context, settings, sweep_dir)
        n_total = _total(settings, space)
        allowed_failures = math.floor(settings.max_failure_rate * n_total)
        batch_size = settings.batch_size or 1
        # Past the highest job dir on disk too: a job dir is never reused, whatever the db says.
        next_job = max(store.get("next_job") or 0, _highest_job_dir(sweep_dir) + 1)

        _recover_finished(store, sweep_dir)
        trials = store.trials()
        queue = [t for t in trials if t.status == "running"]
        if settings.retry_failed:
            queue += [t for t in trials if t.status == "failed"]
        queue.sort(key=lambda t: t.number)
        _log_resume(trials, queue, n_total)
        checked: set[tuple] = set()  # the shapes of trial whose composition was checked

        try:
            while True:
                trials = store.trials()
                queued = {t.number for t in queue}
                finished = [t for t in trials if t.status in FINISHED and t.number not in queued]
                failed = [t for t in finished if t.status == "failed"]
                if len(failed) > allowed_failures:
                    raise SweepError(
                        f"sweep stopped: {len(failed)} of {len(finished)} trials failed, more than "
                        f"max_failure_rate={settings.max_failure_rate} of n_trials={n_total} allows "
                        f"(last error: {_last_line(failed[-1].error)}); fix the task and rerun with "
                        "hydra.sweeper.retry_failed=true, or raise hydra.sweeper.max_failure_rate"
                    )
                todo = n_total - len(finished)
                if todo <= 0:
                    break
                size = min(batch_size, todo)
                rerun, queue = queue[:size], queue[size:]
                n_new = max(0, min(size - len(rerun), n_total - len(trials)))
                runs = [(t.number, t.params) for t in rerun]
                runs += _new_runs(space, settings, seed, trials, len(trials), n_new, rerun)
                if not runs:
                    break
                next_job = _run_batch(
                    store, space, runs, next_job, launch, job_dir_for, validate, sweep_dir, checked
                )
        finally:
            trials = store.trials()
            if trials:
                _export(sweep_dir, space, settings, trials, echo)
    return trials


def _check_identity(
    store: TrialStore, space: SearchSpace, context: str, settings: SweepSettings, sweep_dir: Path
) -> int:
    """Refuse to resume a different sweep; return the sweep's seed (kept in the db).

    Trials of one sweep must be comparable: the same search space, fixed overrides and config,
    and the same direction (the best trial, the forest's proposals and fastlab-meta all read the
    recorded one). n_trials, batch_size, the strategy and the launcher may change between runs.
    A sweep that never started a trial (a typo stopped it) binds nothing: the corrected command
    starts afresh. A store from before directions were recorded takes this run's.
    """
    started = bool(store.trials())
    for key, value, what in (
        ("space", space.fingerprint(), "another search space or other fixed overrides"),
        ("config", context, "another config (a changed config file or default)"),
    ):
        stored = store.get(key)
        if stored is None or not started:
            store.set(key, value)
        elif stored != value:
            raise SweepError(
                f"{sweep_dir / 'trials.db'} holds a sweep over {what}; rerun with the same "
                "ones, or use a new hydra.sweep.dir"
            )
    stored = store.get("direction")
    if stored is not None and started and stored != settings.direction:
        raise SweepError(
            f"{sweep_dir / 'trials.db'} holds a sweep to {stored} its objective, not to "
            f"{settings.direction} it; rerun with hydra.sweeper.direction="
            f"{stored}, or use a new hydra.sweep.dir"
        )
    store.set("direction", settings.direction)
    seed = settings.seed if settings.seed is not None else store.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    store.set("seed", seed)
    return int(seed)


def _recover_finished(store: TrialStore, sweep_dir: Path) -> None:
    """Record the trials a driver that died left ``running`` although their job had finished:
    fastlab-train's ``metrics.json`` in the job dir says how it ended (a batch's results reach the
    store only when its last job returns). Failed ones, and jobs that write no metrics.json, run
    again."""
    for trial in store.trials():
        if trial.status != "running" or not trial.job_dir:
            continue
        metrics = _read_metrics(str(sweep_dir / trial.job_dir))
        status = metrics.get("status") if metrics else None
        value = metrics.get("objective") if metrics else None
        if status == "completed" and isinstance(value, int | float) and math.isfinite(value):
            store.finish(trial.number, status="completed", value=float(value), metrics=metrics, job_dir=None,
                         error=None)
        elif status == "diverged":
            store.finish(trial.number, status="diverged", value=None, metrics=metrics, job_dir=None, error=None)
        else:
            continue
        log.info(f"trial {trial.number}: {status} (its job finished before the driver stopped; from its metrics.json)")


def _total(settings: SweepSettings, space: SearchSpace) -> int:
    """n_trials, or its default; a grid never runs more trials than it has points."""
    if settings.strategy != "grid":
        return settings.n_trials or DEFAULT_N_TRIALS
    size = grid_size(space)
    if settings.n_trials is not None and settings.n_trials < size:
        log.warning(f"grid of {size} points: running only the first n_trials={settings.n_trials}")
        return settings.n_trials
    return size


def _new_runs(
    space: SearchSpace,
    settings: SweepSettings,
    seed: int,
    trials: Sequence[Trial],
    first: int,
    count: int,
    rerun: Sequence[Trial],
) -> list[tuple[int, dict[str, Any]]]:
    """Numbers and params of ``count`` new trials, numbered from ``first``."""
    if count == 0:
        return []
    numbers = list(range(first, first + count))
    observations = [
        Observation(t.params, t.value if t.status == "completed" else None)
        for t in trials
        if t.status in ("completed", "diverged")
    ]
    # Pending: the trials about to re-run, and any still marked running but not in this batch.
    pending = [t.params for t in rerun] + [t.params for t in trials if t.status == "running"]
    params = propose(space, settings, seed, numbers, observations, pending)
    return list(zip(numbers, params, strict=True))


def _run_batch(
    store: TrialStore,
    space: SearchSpace,
    runs: list[tuple[int, dict[str, Any]]],
    next_job: int,
    launch: Launch,
    job_dir_for: Callable[[int], str],
    validate: Callable[[list[list[str]]], None] | None,
    sweep_dir: Path,
    checked: set[tuple],
) -> int:
    """Launch one batch and record it; return the next free job number. ``checked``: the
    shapes (``_shape``) of trial already composed by ``validate``; this batch's new ones are added."""
    overrides = [space.overrides(params) for _, params in runs]
    if validate is not None:
        # Before anything is marked running: a typo fails the sweep at once. Each shape once: the
        # driver composing every trial would leave the workers idle while it does.
        fresh = {_shape(params): o for (_, params), o in zip(runs, overrides, strict=True)}
        fresh = {shape: o for shape, o in fresh.items() if shape not in checked}
        if fresh:
            validate(list(fresh.values()))
            checked.update(fresh)
    jobs = list(range(next_job, next_job + len(runs)))
    store.start(
        [
            (number, params, _relative(job_dir_for(job), sweep_dir))
            for (number, params), job in zip(runs, jobs, strict=True)
        ],
        next_job=next_job + len(runs),
    )
    numbers = ", ".join(str(n) for n, _ in runs)
    where = f"job {jobs[0]}" if len(jobs) == 1 else f"jobs {jobs[0]}-{jobs[-1]}"
    log.info(f"launching trial{'s' if len(runs) > 1 else ''} {numbers} ({where})")
    outcomes = launch(overrides, next_job)
    if len(outcomes) != len(runs):
        raise SweepError(
            f"the launcher returned {len(outcomes)} results for {len(runs)} jobs; check the "
            "hydra/launcher settings"
        )
    for (number, _), outcome in zip(runs, outcomes, strict=True):
        job_dir = outcome.job_dir
        metrics = _read_metrics(job_dir)
        status = outcome.status
        # fastlab-train's metrics.json can tell a failed run from a diverged one (both NaN).
        if status == "diverged" and metrics and metrics.get("status") == "failed":
            status = "failed"
        store.finish(
            number,
            status=status,
            value=outcome.value,
            metrics=metrics,
            job_dir=None if job_dir is None else _relative(job_dir, sweep_dir),
            error=outcome.error,
        )
        shown = f"{outcome.value:.6g}" if outcome.value is not None else _last_line(outcome.error)
        log.info(f"trial {number}: {status} {shown}")
    return next_job + len(runs)


def _shape(params: dict[str, Any]) -> tuple:
    """What decides whether a trial's overrides compose: a number's type (any int fits where one
    does), other values themselves (a string may be a config group's option, a list a shape)."""
    return tuple(sorted((k, type(v).__name__ if isinstance(v, int | float) and not isinstance(v, bool) else repr(v))
                        for k, v in params.items()))


def _export(
    sweep_dir: Path,
    space: SearchSpace,
    settings: SweepSettings,
    trials: list[Trial],
    echo: Callable[[str], None],
) -> None:
    """Write trials.csv and best.yaml, then echo the best-trials table."""
    best = best_trials(trials, settings.sign, 1)
    overrides = space.overrides(best[0].params) if best else None
    write_exports(sweep_dir, trials, space.names, settings.sign, settings.direction, overrides)
    if settings.top_k:
        echo(best_table(trials, space.names, settings.sign, settings.top_k))
    echo(f"trials: {sweep_dir / 'trials.csv'}  best: {sweep_dir / 'best.yaml'}")


def _log_resume(trials: Sequence[Trial], queue: Sequence[Trial], n_total: int) -> None:
    if not trials:
        log.info(f"new sweep of {n_total} trials")
        return
    done = sum(t.status in FINISHED for t in trials) - sum(t.status == "failed" for t in queue)
    log.info(f"resuming: {done} of {n_total} trials finished, {len(queue)} to run again")


def _highest_job_dir(sweep_dir: Path) -> int:
    numbers = [int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(numbers, default=-1)


def _relative(job_dir: str, sweep_dir: Path) -> str:
    """A job dir relative to the sweep dir when inside it, so a sweep dir can be moved."""
    path = Path(job_dir)
    try:
        return str(path.resolve().relative_to(sweep_dir.resolve()))
    except ValueError:
        return str(path)


def _read_metrics(job_dir: str | None) -> dict[str, Any] | None:
    """The job's metrics.json (written by fastlab-train), or None for apps that write none."""
    if job_dir is None:
        return None
    try:
        return read_metrics(job_dir)
    except (OSError, ValueError):  # a job killed mid-write, or an app's own file of that name
        return None


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
