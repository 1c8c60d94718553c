"""The sweeper's settings: what ``hydra.sweeper.*`` holds besides the search space.

The plugin's config dataclass extends ``SweepSettings`` (adding ``_target_`` and ``params``), so the
fields, their defaults and their documentation live in one place.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from fastlab.pruning import PRUNERS
from fastlab.sweep.direction import DIRECTIONS, HOW_TO_SET
from fastlab.sweep.errors import SweepError

STRATEGIES = ("grid", "random", "forest")
# Strategies whose proposals do not read the trials' values: they sweep a task that returns nothing.
NUMBERLESS_STRATEGIES = ("grid", "random")
PRUNED_POLICIES = ("drop", "keep")

# Trials a random or forest sweep runs when ``n_trials`` is not set (a grid runs all its points).
DEFAULT_N_TRIALS = 20
# The keys of hydra.sweeper.lr_find.
LR_FIND_KEYS = {"param", "decades"}


@dataclass
class SweepSettings:
    """Settings of a fastlab sweep (``hydra.sweeper.<field>``)."""

    # grid: every combination, in order; random: scrambled Sobol points from `seed`;
    # forest: `n_initial` random trials, then a random-forest surrogate proposes by expected
    # improvement, with a fraction `random_fraction` of random proposals interleaved.
    strategy: str = "forest"
    # maximize or minimize the task function's return value (a float; NaN = diverged). None:
    # the direction of fastlab-train's task.objective; other apps must set it (see direction.py).
    direction: str | None = None
    # The total for the sweep, resumes included (None: the whole grid, or 20 trials otherwise).
    n_trials: int | None = None
    # Trials running at once (None: the joblib launcher's n_jobs, otherwise 1). With
    # asynchronous=true (the config key `async`) a new trial starts whenever one ends; with
    # async=false they are launched in batches of this size, each waiting for its slowest trial.
    batch_size: int | None = None
    # `hydra.sweeper.async`: no batch barrier (false: batch-synchronous launching, for launchers
    # that cannot run several launch calls at once).
    asynchronous: bool = True
    # Where the study lives: None = the sweep dir's trials.db (SQLite), or a postgresql:// URL
    # (psycopg 3) that many drivers, on one machine or many, share.
    storage: str | None = None
    # The study's name in a PostgreSQL storage (None: from the sweep dir's absolute path).
    study: str | None = None
    # A running trial whose driver has not beaten its heartbeat for this long is run again by
    # another driver (drivers on one host notice a dead one at once, by its lock file).
    heartbeat_s: float = 60.0
    # How long a driver retries a storage it cannot reach (a PostgreSQL restart) before it stops.
    storage_timeout_s: float = 120.0
    # Stop unpromising trials early: none, median or asha (fastlab-train reports its objective
    # after every epoch). asha: rungs at min_epochs * reduction_factor**k epochs, where the top
    # 1/reduction_factor go on; median: from min_epochs on, a trial worse than the median of the
    # others at the same epoch stops, once pruner_startup trials have finished.
    pruner: str = "none"
    min_epochs: int = 1
    reduction_factor: int = 3
    pruner_startup: int = 4
    # What the best-trials table, best.yaml and fastlab-meta do with pruned trials: drop them,
    # or keep them (fastlab-meta then adds their epochs run as a feature).
    pruned: str = "drop"
    # Seeds the Sobol sequence and the forest (None: drawn once and kept in trials.db).
    seed: int | None = None
    # forest: random trials before the surrogate takes over.
    n_initial: int = 8
    # forest: fraction of later proposals drawn at random, so the surrogate cannot get stuck.
    random_fraction: float = 0.2
    # Stop once more than this fraction of n_trials has failed (0: the first failure stops).
    max_failure_rate: float = 0.25
    # On resume, run failed trials again (for example after fixing a bug in the task).
    retry_failed: bool = False
    # Rows of the best-trials table printed at the end.
    top_k: int = 5
    # Conditional keys: {KEY: "EXPR"} sweeps KEY only in trials where EXPR, an expression over other
    # swept keys, holds (e.g. {schedule.wd: "schedule.opt == 'adamw'"}); elsewhere KEY keeps its
    # config value and is recorded as absent (fastlab.sweep.conditions).
    conditions: dict[str, Any] = field(default_factory=dict)
    # Configurations to run first ([{KEY: VALUE, ...}, ...]), counted in n_trials; the keys one
    # leaves out are drawn by the strategy (fastlab.sweep.prior).
    enqueue: list[Any] = field(default_factory=list)
    # Earlier sweeps (sweep dirs, or postgresql://...#STUDY) whose finished trials over the same
    # keys the forest learns from before this sweep's first trial: neither run nor counted.
    warm_start: list[Any] = field(default_factory=list)
    # A live copy of the study for Optuna's tools (optuna-dashboard): optuna:STORAGE_URL, e.g.
    # optuna:sqlite:///outputs/optuna.db; the driver only writes it (fastlab.sweep.mirror).
    mirror: str | None = None
    # Several objectives: {NAME: maximize|minimize, ...}, names read from the job's returned mapping
    # or its metrics.json (fastlab.sweep.objectives); the first is the trial's value. constraints:
    # ["EXPR", ...] over the same names; a trial that breaks one is infeasible.
    objectives: dict[str, Any] = field(default_factory=dict)
    # Runs per configuration: each with its own training seed (`repeat_key`=0..repeats-1); the
    # configuration's value is their mean, and n_trials counts configurations.
    repeats: int = 1
    repeat_key: str = "seed"
    constraints: list[Any] = field(default_factory=list)
    # The head rate's range from the LR finder (fastlab.sweep.lr_range): {param: KEY, decades: D}. On
    # a fresh sweep the driver runs the LR finder once on the sweep's config and sweeps KEY over
    # tag(log, interval(pick / 10**D, pick * 10**D)); the range is recorded in trials.db, so a
    # resume keeps it. KEY must not be swept or set otherwise. Typed Any, as budget_minutes: a bad
    # value is validate()'s one line, not OmegaConf's error report.
    lr_find: Any = None
    # With lr_find: the sweep's wall-clock budget in minutes; n_trials is capped to the trials the
    # LR finder's time estimate fits in it on the launcher's workers (None: no cap).
    budget_minutes: Any = None
    # Set by the sweep's driver on each job it launches (`hydra.sweeper.trial=N`, a Hydra override,
    # so the job's own config and override_dirname stay as they are): the job's trial number, by
    # which it reports to its study. Never set it yourself.
    trial: int | None = None

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> "SweepSettings":
        """The settings in a ``hydra.sweeper`` node (``async`` is the key of ``asynchronous``, a
        Python keyword; keys that are not settings, ``_target_`` and ``params``, are ignored)."""
        names = {f.name for f in fields(cls)}
        out = {k: v for k, v in dict(values).items() if k in names}
        if "async" in values:
            out["asynchronous"] = values["async"]
        return cls(**out)

    def validate(self) -> "SweepSettings":
        """Check every field; raise ``SweepError`` naming the bad one and the fix."""
        if self.strategy not in STRATEGIES:
            raise SweepError(
                f"hydra.sweeper.strategy={self.strategy!r} is unknown; use one of "
                f"{', '.join(STRATEGIES)}"
            )
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise SweepError(
                f"hydra.sweeper.direction={self.direction!r} is unknown; use maximize or minimize"
            )
        for name in ("n_trials", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SweepError(f"hydra.sweeper.{name}={value} must be at least 1 (or null)")
        if not isinstance(self.asynchronous, bool):
            raise SweepError(f"hydra.sweeper.async={self.asynchronous!r} must be true or false")
        for name, allowed in (("pruner", PRUNERS), ("pruned", PRUNED_POLICIES)):
            if getattr(self, name) not in allowed:
                raise SweepError(f"hydra.sweeper.{name}={getattr(self, name)!r} is unknown; use one of "
                                 f"{', '.join(allowed)}")
        if self.storage is not None and not str(self.storage).startswith(("postgresql://", "postgres://")):
            raise SweepError(f"hydra.sweeper.storage={self.storage!r} is not a storage: use null (the sweep "
                             "dir's trials.db) or a postgresql://user@host/db URL")
        for name, least in (("min_epochs", 1), ("pruner_startup", 0)):
            if getattr(self, name) < least:
                raise SweepError(f"hydra.sweeper.{name}={getattr(self, name)} must be at least {least}")
        if self.reduction_factor < 2:
            raise SweepError(f"hydra.sweeper.reduction_factor={self.reduction_factor} must be at least 2")
        for name in ("heartbeat_s", "storage_timeout_s"):
            if not getattr(self, name) > 0:
                raise SweepError(f"hydra.sweeper.{name}={getattr(self, name)} must be positive")
        if self.n_initial < 1:
            raise SweepError(f"hydra.sweeper.n_initial={self.n_initial} must be at least 1")
        for name in ("random_fraction", "max_failure_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SweepError(f"hydra.sweeper.{name}={value} must lie in [0, 1]")
        for name in ("enqueue", "warm_start", "constraints"):
            if isinstance(getattr(self, name), str | Mapping) or not isinstance(getattr(self, name), Sequence):
                raise SweepError(f"hydra.sweeper.{name}={getattr(self, name)!r} is not a list: give "
                                 + {"enqueue": "[{KEY: VALUE, ...}, ...]", "warm_start": "[SWEEP_DIR, ...]",
                                    "constraints": "[\"EXPR\", ...]"}[name])
        if self.mirror is not None and not (str(self.mirror).startswith("optuna:") and "://" in str(self.mirror)):
            raise SweepError(f"hydra.sweeper.mirror={self.mirror!r} is not a mirror: give optuna:STORAGE_URL, e.g. "
                             "hydra.sweeper.mirror=optuna:sqlite:///outputs/optuna.db")
        if not isinstance(self.objectives, Mapping):
            raise SweepError(f"hydra.sweeper.objectives={self.objectives!r} is not a mapping: give "
                             "{NAME: maximize|minimize, ...}, e.g. {accuracy: maximize, n_params: minimize}")
        if not isinstance(self.conditions, Mapping):
            raise SweepError(f"hydra.sweeper.conditions={self.conditions!r} is not a mapping: give "
                             "{KEY: \"EXPR\"}, e.g. {schedule.wd: \"schedule.opt == 'adamw'\"}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise SweepError(f"hydra.sweeper.repeats={self.repeats!r} must be a positive integer (runs per "
                             "configuration, each with its own seed): e.g. hydra.sweeper.repeats=3")
        if not isinstance(self.repeat_key, str) or not self.repeat_key.strip():
            raise SweepError(f"hydra.sweeper.repeat_key={self.repeat_key!r} is not a config key: e.g. seed")
        lr_find_setting(self.lr_find)
        if self.budget_minutes is not None:
            budget = self.budget_minutes
            if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget < math.inf:
                raise SweepError(f"hydra.sweeper.budget_minutes={budget!r} must be a positive number of minutes "
                                 "(or null): e.g. hydra.sweeper.budget_minutes=30")
            if self.lr_find is None:
                raise SweepError("hydra.sweeper.budget_minutes needs hydra.sweeper.lr_find, whose LR finder run "
                                 "gives the time estimate: set both, or cap the sweep with hydra.sweeper.n_trials")
        if self.top_k < 0:
            raise SweepError(f"hydra.sweeper.top_k={self.top_k} must be at least 0")
        return self

    @property
    def sign(self) -> float:
        """+1 to maximize, -1 to minimize: strategies always maximize ``sign * value``."""
        if self.direction is None:  # hydra_glue resolves it before the driver runs
            raise SweepError(f"hydra.sweeper.direction is not set; {HOW_TO_SET}")
        return 1.0 if self.direction == "maximize" else -1.0


def lr_find_setting(value: Any) -> tuple[str, float] | None:
    """``hydra.sweeper.lr_find`` as (the swept key the LR finder centres, decades each way), or None
    when it is off; a ``SweepError`` line naming the fix when it is malformed."""
    if value is None:
        return None
    example = "e.g. hydra.sweeper.lr_find='{param: schedule.lr_max, decades: 1}'"
    if not isinstance(value, Mapping):
        raise SweepError(f"hydra.sweeper.lr_find={value!r} is not a mapping: give {{param: KEY, decades: D}} "
                         f"or null, {example}")
    unknown = sorted(set(value) - LR_FIND_KEYS)
    if unknown:
        raise SweepError(f"hydra.sweeper.lr_find has unknown key(s) {unknown}: its keys are param and decades, "
                         f"{example}")
    param, decades = value.get("param"), value.get("decades", 1)
    if not isinstance(param, str) or not param.strip():
        raise SweepError(f"hydra.sweeper.lr_find.param={param!r} is not a config key: name the head rate, "
                         f"{example}")
    if isinstance(decades, bool) or not isinstance(decades, int | float) or not 0 < decades <= 5:
        raise SweepError(f"hydra.sweeper.lr_find.decades={decades!r} must be a number in (0, 5]: the range "
                         f"spans that many decades each way of the LR finder's pick, {example}")
    return param.strip(), float(decades)


def needs_a_number(settings: SweepSettings) -> str | None:
    """The setting that needs every trial to return its objective as a number (the forest
    proposes from the values, a pruner compares them, objectives and Optuna's mirror rank them),
    named as the user set it; None when the sweep can record trials whose task returned nothing
    (``grid`` and ``random`` alone)."""
    if settings.strategy not in NUMBERLESS_STRATEGIES:
        return f"hydra.sweeper.strategy={settings.strategy}"
    if settings.pruner != "none":
        return f"hydra.sweeper.pruner={settings.pruner}"
    if settings.objectives:
        return "hydra.sweeper.objectives"
    if settings.mirror:
        return "hydra.sweeper.mirror"
    return None


def trial_override(number: int) -> list[str]:
    """The Hydra override that hands a job its trial number (``SweepSettings.trial``)."""
    return [f"hydra.sweeper.trial={number}"]
