"""The head rate's range from the LR finder (``hydra.sweeper.lr_find``), and the sweep's time estimate.

A study on the user's own model cannot know beforehand where its head rate lies, so on a fresh
sweep the driver runs the LR finder once, in its own process, on the sweep's config (the app's
composed config, without the swept values), takes the suggestion ``fastlab-lr-find`` returns
(``valley``) and sweeps ``param`` over ``tag(log, interval(pick / 10**d, pick * 10**d))``. The
finder's curve goes to ``<sweep dir>/lr_find/`` (``lr_find.json``, ``plots/lr_find.png``); what it
found, the range and the time it measured go into ``trials.db`` (the ``sweep`` table's
``lr_find``), so a resumed sweep sweeps the same range and runs no finder.

The same run times a trial: the seconds to build the run, the finder's seconds per step (the
first stage's freezing: the head alone for ``fine_tune``) and a few steps with every group
training, times the steps a trial takes on average over the swept epochs. It is an estimate (a
step's cost also moves with the batch size and the image size); ``budget_minutes`` caps
``n_trials`` by it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastlab.sweep.errors import SweepError
from fastlab.sweep.settings import SweepSettings, lr_find_setting
from fastlab.sweep.space import Interval, SearchSpace
from fastlab.sweep.store import FINISHED, TrialStore
from fastlab.sweepdir import trials_db

log = logging.getLogger(__name__)

SUGGESTION = "valley"  # what fastlab-lr-find returns: the head rate it suggests
RUN_DIR = "lr_find"  # the finder's run dir inside the sweep dir (job dirs are numbers)
KEY = "lr_find"  # its record in trials.db's sweep table
# Steps timed with every layer group training (the finder's own steps may train the head alone):
# a few are enough for a mean, at rates too small to change anything (the finder restores the
# weights anyway).
UNFROZEN_STEPS = 10
# The range's ends are rounded to this many significant digits: readable in trials.csv's header
# of the space and in the report, and no rate needs more.
DIGITS = 3


@dataclass(frozen=True)
class LRRange:
    """What the LR finder found for a sweep, as ``trials.db`` records it.

    ``trial_s`` is the estimated seconds of one trial: ``setup_s`` (building the run) plus the
    mean steps of a trial's frozen and unfrozen epochs at ``frozen_step_s`` and
    ``unfrozen_step_s``, plus one validation pass (a sweep's trial validates at its end).
    ``config`` is a hash of the config the finder ran on, so a sweep whose config changed before
    its first trial runs the finder again.
    """

    param: str
    decades: float
    pick: float
    low: float
    high: float
    steps: int  # the finder's steps
    setup_s: float
    frozen_step_s: float
    unfrozen_step_s: float
    trial_s: float
    config: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any) -> LRRange | None:
        """The recorded range, or None for none, or a record this version cannot read (found again)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(**value)
        except TypeError:
            return None

    def matches(self, param: str, decades: float) -> bool:
        return self.param == param and self.decades == decades

    def space(self, space: SearchSpace) -> SearchSpace:
        """``space`` with ``param`` swept over the range, on a log scale, as its last dimension."""
        dim = Interval(name=self.param, key=self.param, low=self.low, high=self.high, log=True)
        return SearchSpace(dims=(*space.dims, dim), fixed=space.fixed, conditions=space.conditions,
                           order=space.order)

    def describe(self) -> str:
        return (f"{self.param} in [{self.low:.3g}, {self.high:.3g}] (log), {self.decades:g} decade(s) each way of "
                f"the LR finder's {SUGGESTION} pick {self.pick:.3g}")


def check_space(settings: SweepSettings, space: SearchSpace) -> None:
    """Refuse an ``lr_find`` param that the sweep also sets: the finder's range is its only value."""
    parsed = lr_find_setting(settings.lr_find)
    if parsed is None:
        return
    param = parsed[0]
    if param in space.names or any(f.lstrip("+~").split("=", 1)[0] == param for f in space.fixed):
        raise SweepError(f"{param} is swept by hydra.sweeper.lr_find (the range around the LR finder's pick) and "
                         f"also set by the sweep: drop {param} from hydra.sweeper.params and the command line, or "
                         "set hydra.sweeper.lr_find=null")


def resolve(settings: SweepSettings, space: SearchSpace, store: TrialStore, context: str, sweep_dir: Path,
            workers: int) -> tuple[SearchSpace, LRRange]:
    """The sweep's space with the LR finder's range, and that range: the one ``trials.db`` holds
    when the sweep has one for the same setting (and, before any trial ran, the same config),
    else found now and recorded (a driver that recorded one first wins)."""
    parsed = lr_find_setting(settings.lr_find)
    assert parsed is not None, "resolve() is for a sweep with hydra.sweeper.lr_find"
    param, decades = parsed
    digest = hashlib.sha256(context.encode()).hexdigest()[:16]
    recorded = LRRange.from_json(store.get(KEY))
    started = bool(store.trials(metrics=False))
    if recorded is not None and recorded.matches(param, decades) and (started or recorded.config == digest):
        log.info(f"LR finder: the range recorded in {trials_db(sweep_dir)}: {recorded.describe()}")
        return recorded.space(space), recorded
    if started:
        was = "no LR finder range" if recorded is None else f"{recorded.param} by {recorded.decades:g} decade(s)"
        raise SweepError(f"{trials_db(sweep_dir)} holds a sweep with {was}, not hydra.sweeper.lr_find="
                         f"{{param: {param}, decades: {decades:g}}}; rerun with the same setting, or use a new "
                         "hydra.sweep.dir")
    found = find_range(context, param, decades, sweep_dir / RUN_DIR, space, workers)
    kept = store.claim(lambda: _record(store, found))
    log.info(f"LR finder: {kept.describe()}; its curve: {sweep_dir / RUN_DIR}")
    return kept.space(space), kept


def _record(store: TrialStore, found: LRRange) -> LRRange:
    """In the claim's transaction: ``found``, unless another driver recorded its own meanwhile."""
    other = LRRange.from_json(store.get(KEY))
    if other is not None and other.matches(found.param, found.decades) and other.config == found.config:
        return other
    store.set(KEY, found.to_json())
    return found


def find_range(context: str, param: str, decades: float, run_dir: Path, space: SearchSpace,
               workers: int) -> LRRange:
    """Run the LR finder on ``context`` (the app's composed config as YAML), as ``fastlab-lr-find``
    does, with the threads a trial gets beside ``workers - 1`` others; time it.

    fastlab.run and torch are imported here, not with the module: a sweep without lr_find never
    loads them in its driver.
    """
    if not context.strip():
        raise SweepError("hydra.sweeper.lr_find runs the LR finder on the app's config, which this sweep was not "
                         "given: run it through fastlab-train -m, or set hydra.sweeper.lr_find=null")
    import torch
    from omegaconf import OmegaConf

    from fastlab.config import to_run_config
    from fastlab.errors import FastlabError
    from fastlab.lr_find import plot_lr_find
    from fastlab.run.plan import find_lr
    from fastlab.run.prepare import prepare
    from fastlab.run.resources import set_threads
    from fastlab.rundir import LR_FIND, PLOTS, write_json

    threads = torch.get_num_threads()
    learn = None
    try:
        run = to_run_config(OmegaConf.create(context))
        set_threads(run.trainer.threads, workers)
        log.info(f"LR finder: on the sweep's config, for the range of {param} (run dir {run_dir})")
        start = time.perf_counter()
        learn = prepare(run).learn
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        result = find_lr(learn, run.schedule)  # the finder's float(loss) each step waits for the GPU
        frozen_step_s = (time.perf_counter() - start) / max(1, len(result.lrs))
        # find_lr froze the schedule's first stage's groups: time the unfrozen steps apart
        unfrozen_step_s = _unfrozen_step_s(learn) if learn.frozen else frozen_step_s
        trial_s = _trial_seconds(run, learn, space, setup_s, frozen_step_s, unfrozen_step_s)
    except (FastlabError, ValueError) as e:  # ValueError: a curve too short for a suggestion
        raise SweepError(f"hydra.sweeper.lr_find: the LR finder cannot run on the sweep's config: {e}") from None
    finally:
        torch.set_num_threads(threads)
        # the trials, in this process or others on the same GPU, get the memory the finder held
        del learn
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    pick = float(result.suggestions[SUGGESTION])
    if not (math.isfinite(pick) and pick > 0):
        raise SweepError(f"hydra.sweeper.lr_find: the LR finder suggests no rate ({pick!r}); see its curve in "
                         f"{run_dir}, and sweep {param} over a range of your own (hydra.sweeper.lr_find=null)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / LR_FIND, result.to_json())
    plot_lr_find(result, run_dir / PLOTS / "lr_find.png")
    return LRRange(param=param, decades=decades, pick=pick, low=_round(pick / 10**decades),
                   high=_round(pick * 10**decades), steps=len(result.lrs), setup_s=setup_s,
                   frozen_step_s=frozen_step_s, unfrozen_step_s=unfrozen_step_s, trial_s=trial_s,
                   config=hashlib.sha256(context.encode()).hexdigest()[:16])


def _unfrozen_step_s(learn: Any) -> float:
    """Seconds per step with every group training: a short range test at tiny rates (it restores
    the weights, the optimiser and the random states, as every finder run does)."""
    learn.unfreeze()
    start = time.perf_counter()
    result = learn.lr_find(start_lr=1e-9, end_lr=1e-8, num_it=UNFROZEN_STEPS, stop_div=False)
    return (time.perf_counter() - start) / max(1, len(result.lrs))


def _trial_seconds(run: Any, learn: Any, space: SearchSpace, setup_s: float, frozen_step_s: float,
                   unfrozen_step_s: float) -> float:
    """A trial's estimated seconds: building the run, its schedule's frozen and unfrozen epochs
    (the mean over the swept ``schedule.epochs`` and ``schedule.freeze_epochs``, else the config's)
    of the training loader's batches, and one validation pass (at about a frozen step's cost per
    batch: a forward pass, as the head-only step nearly is). A step's cost is taken as the same
    at every swept batch size: an epoch sees the same images."""
    from fastlab.schedules import plan_stages

    s = run.schedule
    epochs = _mean(space, "schedule.epochs", s.epochs)
    freeze_epochs = _mean(space, "schedule.freeze_epochs", s.freeze_epochs)
    stages = plan_stages(s.name, epochs, [1.0] * len(learn.layer_groups), freeze_epochs)
    batches = learn.steps_per_epoch()
    train_s = sum(st.epochs * batches * (frozen_step_s if st.frozen else unfrozen_step_s) for st in stages)
    valid = getattr(learn.data, "valid", None)
    valid_s = (len(valid) if valid is not None else 0) * frozen_step_s
    return setup_s + train_s + valid_s


def _mean(space: SearchSpace, name: str, default: float) -> float:
    """The mean of a numeric swept dimension over a fine grid of its unit interval (what the
    random strategy's evenly spread trials average to), else ``default``."""
    dim = next((d for d in space.dims if d.name == name), None)
    if dim is None:
        return float(default)
    values = [dim.from_unit((i + 0.5) / 100) for i in range(100)]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return float(default)
    return sum(values) / len(values)


def _round(x: float) -> float:
    return float(f"{x:.{DIGITS}g}")


def within_budget(found: LRRange, settings: SweepSettings, n_total: int, workers: int) -> int:
    """``n_total``, capped to the trials ``budget_minutes`` fits on ``workers`` at ``found.trial_s``
    each; a budget that fits no trial is a ``SweepError`` line."""
    if settings.budget_minutes is None:
        return n_total
    budget_s = float(settings.budget_minutes) * 60
    fits = int(budget_s // found.trial_s) * workers
    if fits < 1:
        raise SweepError(f"hydra.sweeper.budget_minutes={settings.budget_minutes:g} fits no trial: one takes about "
                         f"{_duration(found.trial_s)} (an estimate from the LR finder's run); raise the budget")
    if fits < n_total:
        log.info(f"study: hydra.sweeper.budget_minutes={settings.budget_minutes:g} fits {fits} of the "
                 f"n_trials={n_total} trials on {workers} worker(s): running {fits}")
        return fits
    return n_total


def estimate_line(found: LRRange, n_trials: int, workers: int) -> str:
    """One line: about how long ``n_trials`` take on ``workers``, and where the figure comes from."""
    rounds = math.ceil(n_trials / workers)
    return (f"study: about {_duration(rounds * found.trial_s)} for {n_trials} trial{'s' if n_trials != 1 else ''} "
            f"on {workers} worker{'s' if workers != 1 else ''} (an estimate: a trial ~{_duration(found.trial_s)}, "
            f"from the LR finder's {found.steps} steps on this model)")


def left(store: TrialStore, n_total: int) -> int:
    """Trials of ``n_total`` not finished yet (what a resumed sweep still runs)."""
    done = sum(t.status in FINISHED for t in store.trials(metrics=False))
    return max(0, n_total - done)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
