"""The sweep loop: claim trials, launch them, record the results; many drivers may share one study.

Independent of Hydra: ``launch`` is any function that runs a list of override lists as jobs
numbered from a given index and returns one ``Outcome`` per job (``hydra_glue`` adapts Hydra's
launchers). The loop's state lives in the trial store alone (``store.py``), so running the same
sweep again resumes, and running it twice at once shares it:

- a driver *claims* its next trials in one transaction: it reads every trial, proposes from all
  the finished ones (running ones count as pending), and writes the new ones running under its
  name with their reserved job numbers. ``n_trials`` is the total for the study;
- asynchronous (the default): a new trial is claimed and launched as soon as one of the
  ``batch_size`` running ones ends, each in its own ``launch`` call on a thread of its own; with
  ``async=false`` a batch of ``batch_size`` is launched at once and waits for its slowest trial;
- a trial left ``running`` by a driver that died (its lock file free, or no heartbeat for
  ``heartbeat_s``) is recorded from its job's ``metrics.json`` when the job had finished, else run
  again, once, with the same params, in a new job dir: job numbers only grow, so no job dir is
  ever overwritten;
- a driver runs until every trial of the study has finished, so each one's exports are whole.
"""

import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastlab.rundir.metrics_json import read_metrics
from fastlab.sweep import lr_range
from fastlab.sweep.direction import HOW_TO_SET
from fastlab.sweep.errors import SweepError
from fastlab.sweep.lease import DriverLease
from fastlab.sweep.objectives import Objectives, mean_objectives, parse_objectives
from fastlab.sweep.prior import enqueued, warm_observations
from fastlab.sweep.results import RETURNED, best_table, best_trials, by_configuration, write_exports
from fastlab.sweep.settings import DEFAULT_N_TRIALS, SweepSettings, needs_a_number
from fastlab.sweep.space import SearchSpace
from fastlab.sweep.store import FINISHED, Trial, TrialStore, now, open_store
from fastlab.sweep.strategies import Observation, grid_size, propose
from fastlab.sweepdir import trials_db

log = logging.getLogger(__name__)
# How often a driver with nothing to launch looks again at trials other drivers run.
POLL_S = 0.5


@dataclass(frozen=True)
class Outcome:
    """The result of one job: status completed, failed or diverged (a NaN objective)."""

    status: str
    value: float | None = None
    error: str | None = None
    job_dir: str | None = None  # where the job ran, when the launcher says
    returned: dict[str, Any] | None = None  # a task that returned its objectives by name (value None)
    # A task that returned no number (value None): nothing (text None), or something else as text.
    unnumbered: bool = False
    text: str | None = None


Launch = Callable[[list[list[str]], int], Sequence[Outcome]]


@dataclass
class _Sweep:
    """What one driver's loop carries: the study, the settings and its own bookkeeping."""

    settings: SweepSettings
    space: SearchSpace
    sweep_dir: Path
    store: TrialStore
    lease: DriverLease
    seed: int
    n_total: int
    job_dir_for: Callable[[int], str]
    validate: Callable[[list[list[str]]], None] | None
    started: str  # when this driver started: failed trials before it are retried (retry_failed)
    hand_number: Callable[[int], list[str]]  # trial number -> overrides that tell its job
    enqueued: list[dict[str, Any]] = field(default_factory=list)  # hydra.sweeper.enqueue, checked and filled
    warm: list[Observation] = field(default_factory=list)  # hydra.sweeper.warm_start's trials, for the forest
    mirror: Any = None  # hydra.sweeper.mirror's writer (fastlab.sweep.mirror), or None
    objectives: Objectives | None = None  # hydra.sweeper.objectives and constraints, checked
    repeat_of: dict[int, int] = field(default_factory=dict)  # run number -> its repeat (hydra.sweeper.repeats)
    checked: set[tuple] = field(default_factory=set)  # trial shapes whose composition was checked
    retried: set[int] = field(default_factory=set)  # failed trials this driver already ran again


def run_sweep(
    settings: SweepSettings,
    space: SearchSpace,
    sweep_dir: str | Path,
    launch: Launch,
    job_dir_for: Callable[[int], str] = str,
    validate: Callable[[list[list[str]]], None] | None = None,
    echo: Callable[[str], None] = print,
    context: str = "",
    hand_number: Callable[[int], list[str]] = lambda number: [],
    workers: int | None = None,
    started: Callable[[], None] | None = None,
) -> list[Trial]:
    """Run (or resume, or join) a sweep in ``sweep_dir``; return its trials.

    Parameters
    ----------
    job_dir_for : job number -> the job's dir, recorded while the trial runs (the launcher's
        answer replaces it when the job returns).
    validate : raises if a list of override lists cannot be composed, before anything runs.
    echo : where the best-trials table goes.
    context : anything else a resume must match (the app's composed config), besides the space.
    hand_number : trial number -> the overrides that tell a job its trial number (Hydra's
        launchers: ``hydra.sweeper.trial=N``), appended to each job's overrides.
    workers : jobs the launcher runs at once (None: ``batch_size``): with ``hydra.sweeper.lr_find``,
        the LR finder's threads and the time estimate count them.
    started : called once the study is open and its identity checked, before the first launch
        (``hydra_glue`` writes ``multirun.yaml`` then: a sweep refused before it leaves nothing).

    ``settings.direction`` is resolved by ``hydra_glue`` from the app's task when the user gave
    none (``fastlab.sweep.direction``); it stays None only for a sweep that needs no number
    (``settings.needs_a_number``: grid or random), whose trials are then recorded unranked.
    """
    settings.validate()
    needs = needs_a_number(settings)
    if settings.direction is None and needs is not None:
        raise SweepError(f"hydra.sweeper.direction is not set and {needs} needs it; {HOW_TO_SET}")
    # a bad enqueued configuration or warm-start source stops here, before the store is touched
    if settings.repeats > 1:
        key = settings.repeat_key
        if key in space.names or any(f.lstrip("+~").split("=", 1)[0] == key for f in space.fixed):
            raise SweepError(f"hydra.sweeper.repeats gives each run its own {key}, which the sweep also sets: "
                             f"drop {key} from the overrides, or name another key with hydra.sweeper.repeat_key")
    lr_range.check_space(settings, space)
    objectives = parse_objectives(settings.objectives, settings.constraints)
    enqueued(space, settings.enqueue, settings.strategy, seed=0)
    warm = warm_observations(space, settings.warm_start, settings.direction) if settings.warm_start else []
    if warm and settings.strategy != "forest":
        log.warning(f"hydra.sweeper.warm_start: only the forest learns from earlier trials; strategy="
                    f"{settings.strategy} ignores the {len(warm)} read")
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.storage, sweep_dir, settings.study, settings.storage_timeout_s)
    trials: list[Trial] = []
    try:
        with DriverLease(sweep_dir) as lease:
            space, n_total = _space_and_total(settings, space, store, context, sweep_dir,
                                              workers or settings.batch_size or 1)
            seed = store.claim(lambda: _check_identity(store, space, context, settings, sweep_dir))
            sweep = _Sweep(settings, space, sweep_dir, store, lease, seed, n_total,
                           job_dir_for, validate, now(), hand_number,
                           enqueued=enqueued(space, settings.enqueue, settings.strategy, seed),
                           warm=warm, mirror=_open_mirror(settings, space, sweep_dir, lease.id),
                           objectives=objectives)
            _log_resume(store.trials(), sweep.n_total, settings.repeats)
            if started is not None:
                started()
            try:
                with _Heartbeat(settings, sweep_dir, lease.id):
                    concurrency = settings.batch_size or 1
                    if settings.asynchronous and concurrency > 1:
                        _run_async(sweep, launch, concurrency)
                    else:
                        _run_batches(sweep, launch, concurrency)
            finally:
                if sweep.mirror is not None:
                    sweep.mirror.close(store)
    finally:
        try:
            trials = store.trials()
        finally:
            store.close()
        if trials:
            _export(sweep_dir, space, settings, trials, echo, parse_objectives(settings.objectives,
                                                                               settings.constraints))
    return trials


def _space_and_total(settings: SweepSettings, space: SearchSpace, store: TrialStore, context: str,
                     sweep_dir: Path, workers: int) -> tuple[SearchSpace, int]:
    """The space the trials sweep and their total: with ``hydra.sweeper.lr_find``, the head rate's
    range from the LR finder (recorded, or found now) and ``n_trials`` within ``budget_minutes``,
    and the time estimate logged before the first trial."""
    if settings.lr_find is None:
        return space, _total(settings, space)
    space, found = lr_range.resolve(settings, space, store, context, sweep_dir, workers)
    n_total = lr_range.within_budget(found, settings, _total(settings, space), workers)
    log.info(lr_range.estimate_line(found, lr_range.left(store, n_total), workers))
    return space, n_total


class _Heartbeat:
    """A thread that beats this driver's heartbeat every ``heartbeat_s / 4``, on its own store
    connection: the main thread may sit in a launcher call for as long as a batch runs."""

    def __init__(self, settings: SweepSettings, sweep_dir: Path, driver: str) -> None:
        self.settings, self.sweep_dir, self.driver = settings, sweep_dir, driver
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fastlab-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        s = self.settings
        store = None
        while not self.stop.wait(s.heartbeat_s / 4):
            try:
                if store is None:
                    store = open_store(s.storage, self.sweep_dir, s.study, s.storage_timeout_s)
                store.beat(self.driver)
            except Exception as e:  # the main thread meets the same store and says so
                log.debug(f"heartbeat: {e}")
        if store is not None:
            store.close()


def _job_overrides(sweep: _Sweep, number: int, params: dict[str, Any]) -> list[str]:
    """A trial's job: its values (and, with repeats, its run's seed), and the overrides that hand
    it its trial number."""
    seed = [f"{sweep.settings.repeat_key}={sweep.repeat_of[number]}"] if number in sweep.repeat_of else []
    return [*sweep.space.overrides(params), *seed, *sweep.hand_number(number)]


def _run_batches(sweep: _Sweep, launch: Launch, size: int) -> None:
    """Batch-synchronous: claim up to ``size`` trials, launch them at once, record them."""
    while True:
        runs = _claim(sweep, size)
        if not runs:
            if not _wait_for_others(sweep):
                return
            continue
        overrides = [_job_overrides(sweep, number, params) for number, params, _ in runs]
        _log_launch(runs)
        outcomes = launch(overrides, runs[0][2])
        if len(outcomes) != len(runs):
            raise SweepError(f"the launcher returned {len(outcomes)} results for {len(runs)} jobs; check "
                             "the hydra/launcher settings")
        for run, outcome in zip(runs, outcomes, strict=True):
            _record(sweep, run[0], outcome)


def _run_async(sweep: _Sweep, launch: Launch, concurrency: int) -> None:
    """No batch barrier: keep ``concurrency`` trials running, one launch call each, claiming the
    next one whenever one ends. A launcher that fails stops new launches; the trials still running
    are waited for and recorded before the error goes on."""
    running: dict[Future, tuple[int, dict[str, Any], int]] = {}
    error: BaseException | None = None
    with ThreadPoolExecutor(concurrency, thread_name_prefix="fastlab-launch") as pool:
        while True:
            free = concurrency - len(running)
            if free > 0 and error is None:
                # one job per launch call: each trial starts when a worker frees up
                for run in _claim(sweep, free):
                    _log_launch([run])
                    overrides = [_job_overrides(sweep, run[0], run[1])]
                    running[pool.submit(launch, overrides, run[2])] = run
            if not running:
                if error is not None or not _wait_for_others(sweep):
                    break
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                try:
                    outcomes = future.result()
                except BaseException as e:  # the trial stays running in the store: a resume reruns it
                    error = error or e
                    continue
                if len(outcomes) != 1:
                    error = error or SweepError(f"the launcher returned {len(outcomes)} results for 1 job; "
                                                "check the hydra/launcher settings")
                    continue
                _record(sweep, run[0], outcomes[0])
    if error is not None:
        raise error


def _wait_for_others(sweep: _Sweep) -> bool:
    """With nothing to claim: whether other drivers still run trials of the study (then wait a
    little: one may die and leave its trial to run again). False when every trial has finished."""
    trials = sweep.store.trials(metrics=False)
    others = [t for t in trials if t.status == "running"]
    if not others:
        return False
    time.sleep(POLL_S)
    return True


def _claim(sweep: _Sweep, count: int) -> list[tuple[int, dict[str, Any], int]]:
    """Up to ``count`` trials claimed for this driver: (number, params, job number), in one
    transaction. Orphaned trials first (recorded from their job when it finished, else run again),
    then failed ones to retry, then new proposals. Their composition is checked before they
    launch; a typo releases them again and stops the sweep."""
    runs = sweep.store.claim(lambda: _claim_in_transaction(sweep, count))
    if runs and sweep.mirror is not None:  # outside the store's transaction: the mirror may be slow
        sweep.mirror.sync(sweep.store)
    if runs and sweep.validate is not None:
        # Each shape once: the driver composing every trial would leave the workers idle while it does.
        fresh = {_shape(params): sweep.space.overrides(params) for _, params, _ in runs}
        fresh = {shape: o for shape, o in fresh.items() if shape not in sweep.checked}
        if fresh:
            try:
                sweep.validate(list(fresh.values()))
            except BaseException:
                sweep.store.forget(number for number, _, _ in runs)
                raise
            sweep.checked.update(fresh)
    return runs


def _claim_in_transaction(sweep: _Sweep, count: int) -> list[tuple[int, dict[str, Any], int]]:
    store, settings = sweep.store, sweep.settings
    trials = store.trials(metrics=False)
    rerun: list[Trial] = []
    recovered = False
    for t in trials:
        if t.status != "running" or sweep.lease.alive(t.driver, t.heartbeat_at, settings.heartbeat_s):
            continue
        if _recover_finished(store, sweep.sweep_dir, t, sweep.objectives):
            recovered = True
        else:
            rerun.append(t)
    if settings.retry_failed:
        rerun += [t for t in trials if t.status == "failed" and t.number not in sweep.retried
                  and (t.finished_at or "") <= sweep.started]
    if recovered:
        trials = store.trials(metrics=False)
    finished = [t for t in trials if t.status in FINISHED and t.number not in {r.number for r in rerun}]
    failed = [t for t in finished if t.status == "failed"]
    allowed_failures = math.floor(settings.max_failure_rate * sweep.n_total * settings.repeats)
    if len(failed) > allowed_failures:
        raise SweepError(
            f"sweep stopped: {len(failed)} of {len(finished)} trials failed, more than "
            f"max_failure_rate={settings.max_failure_rate} of n_trials={sweep.n_total} allows "
            f"(last error: {_last_line(failed[-1].error)}); fix the task and rerun with "
            "hydra.sweeper.retry_failed=true, or raise hydra.sweeper.max_failure_rate"
        )
    rerun.sort(key=lambda t: t.number)
    rerun = rerun[:count]
    runs = [(t.number, t.params) for t in rerun]
    placed = {t.number: (t.config, t.repeat) for t in rerun if t.repeat is not None}
    first = len(trials) and max(t.number for t in trials) + 1
    if settings.repeats == 1:
        n_new = max(0, min(count - len(rerun), sweep.n_total - len(trials)))
        runs += _new_runs(sweep, trials, first, n_new, rerun)
    else:
        more = _runs_of_configs(sweep, trials, first, count - len(rerun), rerun)
        runs += [(number, params) for number, params, _ in more]
        placed.update({number: where for number, _, where in more})
    if not runs:
        return []
    sweep.repeat_of.update({number: repeat for number, (_, repeat) in placed.items()})
    sweep.retried.update(t.number for t in rerun if t.status == "failed")
    # Past the highest job dir on disk too: a job dir is never reused, whatever the store says.
    next_job = max(store.get("next_job") or 0, _highest_job_dir(sweep.sweep_dir) + 1)
    jobs = list(range(next_job, next_job + len(runs)))
    store.start([(number, params, _relative(sweep.job_dir_for(job), sweep.sweep_dir))
                 for (number, params), job in zip(runs, jobs, strict=True)],
                next_job=next_job + len(runs), driver=sweep.lease.id, placed=placed)
    for t in rerun:
        log.info(f"trial {t.number}: run again ({'failed before' if t.status == 'failed' else 'its driver stopped'})")
    return [(number, params, job) for (number, params), job in zip(runs, jobs, strict=True)]


def _record(sweep: _Sweep, number: int, outcome: Outcome) -> None:
    """Record one job's outcome for trial ``number`` (fastlab-train's metrics.json tells a failed
    run from a diverged one, and a pruned one from a completed one)."""
    job_dir = outcome.job_dir
    metrics = _read_metrics(job_dir)
    status, value, error = outcome.status, outcome.value, outcome.error
    if status == "diverged" and metrics and metrics.get("status") == "failed":
        status = "failed"
    if status == "completed" and metrics and metrics.get("status") == "pruned":
        status = "pruned"
    judged, stop = None, None
    if sweep.objectives is not None and status in ("completed", "pruned"):
        judged, status, value, error = _judge(sweep.objectives, outcome, metrics, status)
    elif status == "completed" and outcome.unnumbered:
        needs = needs_a_number(sweep.settings)
        if needs is None:  # grid and random: completed without a value, what it returned kept as text
            judged = {RETURNED: outcome.text}
        else:  # the sweep cannot go on without numbers: one line now, not after max_failure_rate
            what = "nothing (None)" if outcome.text is None else repr(outcome.text)
            status = "failed"
            error = stop = (f"the task returned {what}, not a number, and {needs} needs one: return the objective "
                            "as a float, or sweep with hydra.sweeper.strategy=grid or random (no pruner), which "
                            "take any return")
    elif status == "completed" and value is None:
        status, error = "failed", (f"the task returned {outcome.returned!r}, not a number: return the objective as "
                                   "a float, or name the objectives with hydra.sweeper.objectives")
    kept = sweep.store.finish(number, status=status, value=value, metrics=metrics,
                              job_dir=None if job_dir is None else _relative(job_dir, sweep.sweep_dir),
                              error=error, driver=sweep.lease.id, objectives=judged)
    if sweep.mirror is not None:
        sweep.mirror.sync(sweep.store)
    shown = f"{value:.6g}" if value is not None else _last_line(error) if error else _returned_text(judged)
    if kept:
        log.info(f"trial {number}: {status} {shown}")
    else:
        log.warning(f"trial {number}: {status} {shown}, but another driver took the trial over (this "
                    "driver missed its heartbeat); its run is the one recorded")
    if stop is not None:
        raise SweepError(f"sweep stopped: {stop}")


def _returned_text(judged: dict[str, Any] | None) -> str:
    """How the log shows a completed trial without a value: what its task returned."""
    if not judged or RETURNED not in judged:
        return ""
    text = judged[RETURNED]
    return "(no objective returned)" if text is None else f"(returned {_last_line(text)[:80]!r})"


def _judge(objectives: Objectives, outcome: Outcome, metrics: dict[str, Any] | None,
           status: str) -> tuple[dict[str, Any] | None, str, float | None, str | None]:
    """(the trial's objectives, status, value, error) under ``hydra.sweeper.objectives``: its value is
    its first objective's; a first objective that is missing fails the trial with one line, and one
    that is not finite is a divergence."""
    first = objectives.names[0]
    judged = objectives.judge(outcome.returned, metrics)
    value = judged["values"][first]
    if value is not None:
        return judged, status, value, outcome.error
    raw = (outcome.returned or {}).get(first, (metrics or {}).get("final", {}).get(first))
    if isinstance(raw, int | float) and not isinstance(raw, bool):  # NaN or inf
        return judged, "diverged", None, outcome.error
    return judged, "failed", None, (f"the trial gives no objective {first!r}: return it in a mapping "
                                    "({name: value}) or write it into metrics.json, or fix hydra.sweeper.objectives")


def _log_launch(runs: Sequence[tuple[int, dict[str, Any], int]]) -> None:
    numbers = ", ".join(str(n) for n, _, _ in runs)
    jobs = [j for _, _, j in runs]
    where = f"job {jobs[0]}" if len(jobs) == 1 else f"jobs {jobs[0]}-{jobs[-1]}"
    log.info(f"launching trial{'s' if len(runs) > 1 else ''} {numbers} ({where})")


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
                f"{trials_db(sweep_dir)} holds a sweep over {what}; rerun with the same "
                "ones, or use a new hydra.sweep.dir"
            )
    stored = store.get("direction")
    if stored is not None and started and stored != settings.direction:
        raise SweepError(
            f"{trials_db(sweep_dir)} holds a sweep to {stored} its objective, not to "
            f"{settings.direction} it; rerun with hydra.sweeper.direction="
            f"{stored}, or use a new hydra.sweep.dir"
        )
    store.set("direction", settings.direction)
    # what fastlab-meta reads the trials' objectives by (a sweep of one objective records none)
    objectives = {str(k): v for k, v in _flat_objectives(settings.objectives).items()}
    stored = store.get("objectives")
    if objectives or stored:
        if stored is not None and started and stored != objectives:
            raise SweepError(f"{trials_db(sweep_dir)} holds a sweep of the objectives {stored}, not {objectives}; "
                             "rerun with the same hydra.sweeper.objectives, or use a new hydra.sweep.dir")
        store.set("objectives", objectives)
    seed = settings.seed if settings.seed is not None else store.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    store.set("seed", seed)
    return int(seed)


def _flat_objectives(objectives: dict[str, Any]) -> dict[str, str]:
    """``hydra.sweeper.objectives`` as {name: direction}, dotted names flat, in order."""
    parsed = parse_objectives(objectives, ())
    return {} if parsed is None else dict(zip(parsed.names, parsed.directions, strict=True))


def _recover_finished(store: TrialStore, sweep_dir: Path, trial: Trial, objectives: Objectives | None = None) -> bool:
    """Record a trial a dead driver left ``running`` although its job had finished: fastlab-train's
    ``metrics.json`` in the job dir says how it ended. Returns whether it was recorded; failed
    ones, and jobs that wrote no metrics.json, run again."""
    if not trial.job_dir:
        return False
    metrics = _read_metrics(str(sweep_dir / trial.job_dir))
    status = metrics.get("status") if metrics else None
    value = metrics.get("objective") if metrics else None
    judged = None
    if objectives is not None and status in ("completed", "pruned"):
        judged, status, value, _ = _judge(objectives, Outcome(status), metrics, status)
    if status in ("completed", "pruned") and isinstance(value, int | float) and math.isfinite(value):
        store.finish(trial.number, status=status, value=float(value), metrics=metrics, job_dir=None, error=None,
                     objectives=judged)
    elif status == "diverged":
        store.finish(trial.number, status="diverged", value=None, metrics=metrics, job_dir=None, error=None)
    else:
        return False
    log.info(f"trial {trial.number}: {status} (its job finished before its driver stopped; from its metrics.json)")
    return True


def _open_mirror(settings: SweepSettings, space: SearchSpace, sweep_dir: Path, driver: str) -> Any:
    """``hydra.sweeper.mirror``'s writer (optuna-dashboard's view of the study) for this driver
    (``driver``: its lease id, as the store records who runs a trial), or None."""
    if not settings.mirror:
        return None
    from fastlab.sweep.mirror import open_mirror  # imported when asked for: Optuna is optional

    return open_mirror(settings, space, sweep_dir, driver)


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
    sweep: _Sweep,
    trials: Sequence[Trial],
    first: int,
    count: int,
    rerun: Sequence[Trial],
) -> list[tuple[int, dict[str, Any]]]:
    """Numbers and params of ``count`` new trials, numbered from ``first``: the enqueued ones
    first, then the strategy's (the forest learning from the warm start's trials too)."""
    if count == 0:
        return []
    numbers = list(range(first, first + count))
    observations = sweep.warm + [
        Observation(t.params, t.value if t.status == "completed" else None, t.objectives)
        for t in trials
        if t.status in ("completed", "diverged")
    ]
    # Pending: the trials about to re-run, and any still marked running but not in this batch.
    pending = [t.params for t in rerun] + [t.params for t in trials if t.status == "running"]
    params = propose(sweep.space, sweep.settings, sweep.seed, numbers, observations, pending, sweep.enqueued,
                     len(sweep.warm))
    return list(zip(numbers, params, strict=True))


def _runs_of_configs(sweep: _Sweep, trials: Sequence[Trial], first: int, count: int,
                     rerun: Sequence[Trial]) -> list[tuple[int, dict[str, Any], tuple[int, int]]]:
    """Up to ``count`` new runs of a sweep with ``repeats``, numbered from ``first``: (number,
    params, (config, repeat)). The runs a configuration still lacks come first (a resumed sweep
    runs the missing seeds only), then new configurations, proposed from the means of the
    configurations so far; ``n_trials`` counts configurations."""
    n = sweep.settings.repeats
    by_config: dict[int, list[Trial]] = {}
    for t in trials:
        if t.config is not None:
            by_config.setdefault(t.config, []).append(t)
    out: list[tuple[int, dict[str, Any], tuple[int, int]]] = []
    for config in sorted(by_config):
        have = {t.repeat for t in by_config[config]}
        for repeat in range(n):
            if repeat not in have and len(out) < count:
                out.append((first + len(out), dict(by_config[config][0].params), (config, repeat)))
    n_configs = max(by_config, default=-1) + 1
    wanted = min(math.ceil(max(0, count - len(out)) / n), sweep.n_total - n_configs)
    if wanted <= 0:
        return out
    observations, pending = _config_observations(by_config, rerun)
    numbers = list(range(n_configs, n_configs + wanted))
    proposed = propose(sweep.space, sweep.settings, sweep.seed, numbers, sweep.warm + observations, pending,
                       sweep.enqueued, len(sweep.warm))
    for config, params in zip(numbers, proposed, strict=True):
        for repeat in range(n):
            if len(out) < count:
                out.append((first + len(out), params, (config, repeat)))
    return out


def _config_observations(by_config: dict[int, list[Trial]],
                         rerun: Sequence[Trial]) -> tuple[list[Observation], list[dict[str, Any]]]:
    """What the strategies see of a sweep with repeats: each configuration with a finished run as
    the mean of its completed runs (None when all of them diverged), the others as pending."""
    again = {t.number for t in rerun}
    observations, pending = [], []
    for runs in by_config.values():
        done = [t for t in runs if t.status in ("completed", "diverged") and t.number not in again]
        if not done:
            pending.append(runs[0].params)
            continue
        values = [t.value for t in done if t.status == "completed" and t.value is not None]
        observations.append(Observation(runs[0].params, sum(values) / len(values) if values else None,
                                        mean_objectives([t.objectives for t in done])))
    return observations, pending


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
    objectives: Objectives | None = None,
) -> None:
    """Write trials.csv and best.yaml, then echo the best-trials table (the Pareto front's, with
    several objectives)."""
    rows, spread = by_configuration(trials)  # with repeats: one row per configuration, its runs' mean
    sign = settings.sign if settings.direction is not None else 0.0  # 0: no direction, nothing ranked
    best = best_trials(rows, sign, 1, settings.pruned)
    overrides = space.overrides(best[0].params) if best else None
    write_exports(sweep_dir, trials, space.names, sign, settings.direction, overrides,
                  settings.pruned, objectives, space.overrides)
    if settings.top_k:
        echo(best_table(rows, space.names, sign, settings.top_k, settings.pruned, objectives, spread))
    echo(f"trials: {sweep_dir / 'trials.csv'}  best: {sweep_dir / 'best.yaml'}")


def _log_resume(trials: Sequence[Trial], n_total: int, repeats: int = 1) -> None:
    if not trials:
        log.info(f"new sweep of {n_total} trials")
        return
    if trials[0].config is not None:  # repeats: n_trials counts configurations
        finished: dict[int, int] = {}
        for t in trials:
            finished[t.config] = finished.get(t.config, 0) + (t.status in FINISHED)
        done = sum(n == repeats for n in finished.values())
        log.info(f"resuming: {done} of {n_total} configurations finished, {len(finished) - done} with runs "
                 "left to run")
        return
    done = sum(t.status in FINISHED for t in trials)
    running = sum(t.status == "running" for t in trials)
    log.info(f"resuming: {done} of {n_total} trials finished, {running} left running (run again unless "
             "another driver still runs them)")


def _highest_job_dir(sweep_dir: Path) -> int:
    with os.scandir(sweep_dir) as entries:  # no stat per entry: it runs at every claim
        numbers = [int(e.name) for e in entries if e.name.isdigit() and e.is_dir()]
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
