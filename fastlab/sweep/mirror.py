"""``hydra.sweeper.mirror=optuna:STORAGE_URL``: a live copy of the study for Optuna's tools.

Each driver writes the trials it runs (``Trial.driver`` is its lease id) into one Optuna study in
``STORAGE_URL`` (an SQLAlchemy URL: ``sqlite:///optuna.db``, ``postgresql://...``), named
``hydra.sweeper.study`` or else after the sweep dir (``store.study_name``), so
``optuna-dashboard STORAGE_URL`` shows the sweep as it runs and ``optuna.load_study`` reads it.
The driver only writes the mirror: the trial store stays the sweep's memory, and a mirror that
fails (a bad URL, a locked database, the network) logs one warning and is tried again later with
a growing pause, while the sweep goes on.

One Optuna trial per run of a fastlab trial, found again by its user attributes:

- ``fastlab_trial``: the fastlab trial number (Optuna numbers its trials itself; with several
  drivers the two orders differ), ``fastlab_started``: when that run started (the store's
  ``started_at``), ``fastlab_status``, ``fastlab_driver``, ``job_dir`` (absolute), and a failed
  run's ``fastlab_error``;
- params with their distributions (``_distribution``); a conditional key absent from a trial is
  not set on it (Optuna's own notion of a conditional param);
- running -> RUNNING; completed -> COMPLETE with one value per objective; pruned -> PRUNED with
  its reports (the objective after each epoch) as intermediate values; failed and diverged ->
  FAIL (Optuna refuses NaN values; ``fastlab_status`` tells them apart).

A trial run again keeps one Optuna trial where it can: the RUNNING trial of a driver that was
killed is taken over by the driver that runs the trial again (its ``job_dir`` and
``fastlab_started`` updated), so a resume after a kill leaves exactly one Optuna trial per fastlab
trial. A finished Optuna trial cannot change, so a failed trial run again with
``hydra.sweeper.retry_failed`` adds a new one: the *latest* Optuna trial of a fastlab number (its
highest Optuna number) is the one that matches ``trials.db``, the earlier ones are FAIL. A trial
that a driver recorded for a dead one (its job had finished) is written when a driver closes,
inside the store's claim; a driver's own run that finished before a sync wrote it is written
inside the claim too, so no two drivers ever write one run twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fastlab.sweep.errors import SweepError
from fastlab.sweep.objectives import parse_objectives
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import Dimension, Discrete, SearchSpace
from fastlab.sweep.store import FINISHED, Trial, TrialStore, study_name
from fastlab.sweepdir import trials_db
from fastlab.tracking.deadlines import sqlalchemy_connect_args

log = logging.getLogger(__name__)

PREFIX = "optuna:"
FORM = "give optuna:STORAGE_URL, e.g. hydra.sweeper.mirror=optuna:sqlite:///outputs/optuna.db"
TRIAL_ATTR = "fastlab_trial"
STARTED_ATTR = "fastlab_started"
STATUS_ATTR = "fastlab_status"
# After a failed write the mirror waits this long before it tries again, doubling up to MAX_PAUSE_S.
FIRST_PAUSE_S = 5.0
MAX_PAUSE_S = 300.0


def open_mirror(settings: SweepSettings, space: SearchSpace, sweep_dir: str | Path, driver: str) -> OptunaMirror:
    """The mirror ``settings.mirror`` names, for the driver ``driver`` (its lease id).

    A value of the wrong form, a mirror into the sweep's own ``trials.db``, or a missing optuna
    is a ``SweepError`` (one line); a storage that cannot be reached is a warning, and the
    mirror tries again at a later sync.
    """
    url = _storage_url(settings.mirror, Path(sweep_dir))
    try:
        import optuna
    except ImportError:
        raise SweepError("hydra.sweeper.mirror needs optuna and optuna-dashboard: pip install "
                         "'fastlab[optuna]' (or drop hydra.sweeper.mirror)") from None
    mirror = OptunaMirror(optuna, url, settings.study or study_name(sweep_dir), settings, space, Path(sweep_dir),
                          driver)
    mirror.attempt(mirror.connect)
    return mirror


def _storage_url(value: str | None, sweep_dir: Path) -> str:
    """The storage URL of ``optuna:STORAGE_URL``, or a ``SweepError`` saying how to write it."""
    url = str(value)[len(PREFIX):] if str(value).startswith(PREFIX) else ""
    if "://" not in url:
        raise SweepError(f"hydra.sweeper.mirror={value!r} is not a mirror: {FORM}")
    path = _sqlite_path(url)
    if path is not None and path.resolve() == trials_db(sweep_dir).resolve():
        raise SweepError(f"hydra.sweeper.mirror={value!r} is the sweep's own trials.db: {FORM} (another file)")
    return url


def _sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///PATH`` URL (None for other storages and in-memory ones)."""
    path = url.partition("?")[0][len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    return Path(path) if path and path != ":memory:" else None


def _objectives(settings: SweepSettings) -> list[tuple[str, str]]:
    """(name, direction) of each objective: ``hydra.sweeper.objectives``', else the one value the
    driver records."""
    objectives = parse_objectives(settings.objectives, settings.constraints)
    if objectives is None:
        return [("objective", str(settings.direction))]
    return list(zip(objectives.names, objectives.directions, strict=True))


def _values(trial: Trial, names: list[str] | None) -> list[float] | None:
    """A finished trial's value per objective (``names``, ``_objectives``' order; None: the one
    value), or None when it has none that Optuna takes (NaN and infinities are refused)."""
    if names is not None:
        judged = (trial.objectives or {}).get("values", {})
        values = [judged.get(name) for name in names]
    else:
        values = [trial.value]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def _distribution(optuna: Any, dim: Dimension) -> Any:
    """The Optuna distribution of a dimension: choice and glob are categorical; an arithmetic
    range of ints is an ``IntDistribution`` with its step (other ranges categorical);
    intervals are float or int, log-scaled as they are swept."""
    d = optuna.distributions
    if not isinstance(dim, Discrete):
        kind = d.IntDistribution if dim.integer else d.FloatDistribution
        return kind(dim.low, dim.high, log=dim.log)
    values = sorted(dim.values) if dim.form == "range" and all(_is_int(v) for v in dim.values) else []
    steps = {b - a for a, b in zip(values, values[1:])}
    if values and len(steps) <= 1 and 0 not in steps:
        return d.IntDistribution(values[0], values[-1], step=steps.pop() if steps else 1)
    return d.CategoricalDistribution([_choice(v) for v in dim.values])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(value: Any) -> Any:
    """A value as an Optuna categorical choice: None, bool, int, float and str as they are, a
    list or mapping as its JSON text."""
    return value if value is None or isinstance(value, bool | int | float | str) else json.dumps(value)


def _when(stamp: str | None) -> datetime | None:
    """A store timestamp (UTC, ISO 8601) as Optuna keeps its times: naive local time."""
    return datetime.fromisoformat(stamp).astimezone().replace(tzinfo=None) if stamp else None


class OptunaMirror:
    """Writes a sweep's trials into an Optuna study; see the module's docstring.

    ``sync(store)`` writes what changed since the last sync for this driver's trials;
    ``close(store)`` does so a last time and writes the finished trials no live driver wrote.
    Neither raises: a failure is one warning, and the next sync after a pause tries again.
    """

    def __init__(self, optuna: Any, url: str, name: str, settings: SweepSettings, space: SearchSpace,
                 sweep_dir: Path, driver: str) -> None:
        self.optuna, self.url, self.name = optuna, url, name
        self.settings, self.sweep_dir, self.driver = settings, sweep_dir, driver
        self.distributions = {dim.name: _distribution(optuna, dim) for dim in space.dims}
        self.objectives = _objectives(settings)  # read once: every sync asks each trial's values
        self.names = [name for name, _ in self.objectives] if settings.objectives else None
        self.fingerprint = space.fingerprint()
        self.storage: Any = None
        self.study_id: int | None = None
        self.disabled = False  # the study holds another sweep: nothing more is written
        self.written: dict[int, tuple] = {}  # number -> the trial's (status, value, started_at, job_dir) as written
        self.ids: dict[int, tuple[str | None, int]] = {}  # number -> (started_at, Optuna trial id) of its run
        self.pause = 0.0  # seconds to wait after a failure (0: none failed)
        self.next_try = 0.0

    # -- the driver's calls ------------------------------------------------------------------

    def sync(self, store: TrialStore) -> None:
        """Write this driver's trials that changed since the last sync."""
        if time.monotonic() >= self.next_try:
            self.attempt(lambda: self._write_own(store))

    def close(self, store: TrialStore) -> None:
        """The last sync, then the finished trials no driver wrote (a dead driver's, recorded
        from its job), the latter inside the store's claim: one closing driver at a time."""
        def finish() -> None:
            self._write_own(store)
            if self._missing(store):
                _in_claim(store, lambda: self._write_missing(store))
        self.attempt(finish)

    def attempt(self, work: Callable[[], None]) -> None:
        """``work()``; a failure is one warning (the first of a run of failures) and a pause."""
        if self.disabled:
            return
        try:
            if self.storage is None:
                self.connect()
            if not self.disabled:
                work()
        except Exception as error:
            e = error.__cause__ or error  # Optuna wraps the database's own error, which says more
            if not self.pause:
                log.warning(f"hydra.sweeper.mirror: cannot write the Optuna study {self.name!r} at {self.url} "
                            f"({type(e).__name__}: {_first_line(e)}); the sweep goes on, and the mirror tries "
                            "again later")
            else:
                log.debug(f"hydra.sweeper.mirror: {type(e).__name__}: {_first_line(e)}")
            self.pause = min(MAX_PAUSE_S, 2 * self.pause or FIRST_PAUSE_S)
            self.next_try = time.monotonic() + self.pause
        else:
            if self.pause:
                log.info(f"hydra.sweeper.mirror: writing the Optuna study {self.name!r} again")
            self.pause = 0.0

    # -- the study ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the storage and create (or load) the study; refuse one holding another sweep."""
        if self.storage is not None:
            return
        optuna = self.optuna
        path = _sqlite_path(self.url)
        if path is not None:  # SQLite makes the file, not its folder
            path.parent.mkdir(parents=True, exist_ok=True)
        connect_args = sqlalchemy_connect_args(self.url)  # a database server's waits bounded
        storage = optuna.storages.RDBStorage(self.url, engine_kwargs={"connect_args": connect_args}
                                             if connect_args else None)
        objectives = self.objectives
        study = optuna.create_study(storage=storage, study_name=self.name, load_if_exists=True,
                                    directions=[direction for _, direction in objectives])
        held = study.user_attrs.get("fastlab_space")
        directions = [d.name.lower() for d in study.directions]
        if held not in (None, self.fingerprint) or directions != [d for _, d in objectives]:
            self.disabled = True
            log.warning(f"hydra.sweeper.mirror: the Optuna study {self.name!r} at {self.url} holds another "
                        "sweep (other keys or directions); nothing is mirrored: name another study with "
                        "hydra.sweeper.study, or delete that one")
            return
        if held is None:
            study.set_user_attr("fastlab_space", self.fingerprint)
            study.set_user_attr("fastlab_sweep_dir", str(self.sweep_dir.resolve()))
            with warnings.catch_warnings():  # experimental in Optuna 3.2 to 5 at least
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([name for name, _ in objectives])
        self.storage, self.study_id = storage, storage.get_study_id_from_name(self.name)
        log.info(f"hydra.sweeper.mirror: optuna-dashboard {self.url} shows this sweep as study {self.name!r}")

    def _index(self, running: bool) -> dict[Any, list[Any]]:
        """The study's Optuna trials (only the RUNNING ones with ``running``) by fastlab number,
        each number's in Optuna's order."""
        states = (self.optuna.trial.TrialState.RUNNING,) if running else None
        out: dict[Any, list[Any]] = {}
        for o in self.storage.get_all_trials(self.study_id, deepcopy=False, states=states):
            out.setdefault(o.user_attrs.get(TRIAL_ATTR), []).append(o)
        return out

    def _place(self, t: Trial, found: Sequence[Any]) -> Any:
        """The Optuna trial of the run ``t`` among ``found`` (the Optuna trials of its number):
        the one written for this run, else a RUNNING one to take over (an earlier run whose
        driver died), else None."""
        # A run still running in the store has no finished Optuna trial (one started in the same
        # second, finished, was an earlier run).
        own = [o for o in found if o.user_attrs.get(STARTED_ATTR) == t.started_at
               and (t.status in FINISHED or not o.state.is_finished())]
        taken = [o for o in found if o.state == self.optuna.trial.TrialState.RUNNING]
        return (own or taken or [None])[-1]

    # -- writing -----------------------------------------------------------------------------

    def _write_own(self, store: TrialStore) -> None:
        """Write this driver's trials whose state changed since they were last written."""
        changed = [t for t in store.trials(metrics=False)
                   if t.driver == self.driver and self.written.get(t.number) != _mark(t)]
        if not changed:
            return
        reports = store.reports() if self.settings.pruner != "none" and any(
            t.status in FINISHED for t in changed) else {}
        fresh = {t.number for t in changed if self.ids.get(t.number, (None,))[0] != t.started_at}
        for t in changed:
            if t.number not in fresh:
                self._update(self.ids[t.number][1], t, reports.get(t.number, {}))
                self.written[t.number] = _mark(t)
        new = [t for t in changed if t.number in fresh]
        # Runs not written yet: a RUNNING Optuna trial may wait to be taken over. A finished one
        # (it ended before a sync, or its sync failed) is what a closing driver writes for a dead
        # driver: it is looked up and written inside the store's claim, as the closing driver's
        # are, so the two never both find none and create one each.
        running = [t for t in new if t.status == "running"]
        if running:
            self._write_new(running, reports, self._index(running=True))
        finished = [t for t in new if t.status != "running"]
        if finished:
            _in_claim(store, lambda: self._write_new(finished, reports, self._index(running=False)))

    def _write_new(self, trials: list[Trial], reports: dict[int, dict[int, float]],
                   index: dict[Any, list[Any]]) -> None:
        """Write runs ``trials`` this driver has not written: take over their Optuna trial in
        ``index`` where there is one, else create it."""
        for t in trials:
            o = self._place(t, index.get(t.number, []))
            if o is None:
                trial_id = self.storage.create_new_trial(self.study_id, self._template(t, reports.get(t.number, {})))
            else:
                trial_id = self._id(o)
                self._update(trial_id, t, reports.get(t.number, {}))
            self.ids[t.number] = (t.started_at, trial_id)
            self.written[t.number] = _mark(t)

    def _id(self, o: Any) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, o.number)

    def _update(self, trial_id: int, t: Trial, reports: dict[int, float]) -> None:
        """Bring an existing Optuna trial up to the fastlab trial ``t`` (one another driver has
        finished already, with the same result, stays as it is)."""
        with contextlib.suppress(self.optuna.exceptions.UpdateFinishedTrialError):
            for key, value in self._attrs(t).items():
                self.storage.set_trial_user_attr(trial_id, key, value)
            if t.status in FINISHED:
                for epoch, value in sorted(reports.items()):
                    self.storage.set_trial_intermediate_value(trial_id, epoch, value)
                state, values = self._state(t)
                self.storage.set_trial_state_values(trial_id, state, values)

    def _template(self, t: Trial, reports: dict[int, float]) -> Any:
        """A new Optuna trial for ``t``, written in one go (``create_new_trial``'s template)."""
        state, values = self._state(t)
        finished = t.status in FINISHED
        params = {k: _choice(v) for k, v in t.params.items() if k in self.distributions}
        return self.optuna.trial.FrozenTrial(
            number=0, trial_id=0, state=state, value=None, values=values,
            datetime_start=_when(t.started_at),
            datetime_complete=(_when(t.finished_at) or datetime.now()) if finished else None,
            params=params, distributions={k: self.distributions[k] for k in params},
            user_attrs=self._attrs(t), system_attrs={}, intermediate_values=dict(reports) if finished else {})

    def _state(self, t: Trial) -> tuple[Any, list[float] | None]:
        """The Optuna state of a fastlab trial, with its values when COMPLETE."""
        states = self.optuna.trial.TrialState
        values = _values(t, self.names)
        if t.status == "running":
            return states.RUNNING, None
        if t.status == "pruned":
            return states.PRUNED, None
        if t.status == "completed" and values is not None:
            return states.COMPLETE, values
        return states.FAIL, None  # failed, diverged (NaN), or a completed trial without a value

    def _attrs(self, t: Trial) -> dict[str, Any]:
        attrs: dict[str, Any] = {TRIAL_ATTR: t.number, STARTED_ATTR: t.started_at, STATUS_ATTR: t.status,
                                 "fastlab_driver": t.driver}
        if t.job_dir:
            attrs["job_dir"] = str(self.sweep_dir / t.job_dir)  # an absolute one stays as it is
        if t.error:
            attrs["fastlab_error"] = _last_line(t.error)
        if t.objectives and t.objectives.get("violated"):  # hydra.sweeper.constraints it broke
            attrs["fastlab_violated"] = list(t.objectives["violated"])
        return attrs

    # -- at close: what no live driver wrote ---------------------------------------------------

    def _missing(self, store: TrialStore) -> list[tuple[Trial | None, Any]]:
        """What the Optuna study lacks of the finished trials: (trial, None) to create, (trial,
        its unfinished Optuna trial) to finish, and (None, Optuna trial) for a RUNNING one of an
        earlier run of a finished trial, which ends FAIL (superseded)."""
        index = self._index(running=False)
        out: list[tuple[Trial | None, Any]] = []
        for t in store.trials(metrics=False):
            if t.status not in FINISHED:
                continue
            found = index.get(t.number, [])
            o = self._place(t, found)
            if o is None or not o.state.is_finished():
                out.append((t, o))
            out += [(None, s) for s in found if s is not o and not s.state.is_finished()]
        return out

    def _write_missing(self, store: TrialStore) -> None:
        """Inside the store's claim: read again what is missing (another driver may just have
        written it) and write it."""
        missing = self._missing(store)
        reports = store.reports() if missing and self.settings.pruner != "none" else {}
        for t, o in missing:
            if t is None:
                with contextlib.suppress(self.optuna.exceptions.UpdateFinishedTrialError):
                    self.storage.set_trial_user_attr(self._id(o), STATUS_ATTR, "superseded")
                    self.storage.set_trial_state_values(self._id(o), self.optuna.trial.TrialState.FAIL)
            elif o is None:
                self.storage.create_new_trial(self.study_id, self._template(t, reports.get(t.number, {})))
            else:
                self._update(self._id(o), t, reports.get(t.number, {}))
        if missing:
            log.info(f"hydra.sweeper.mirror: wrote {len(missing)} trial(s) that no driver had written")


def _in_claim(store: TrialStore, work: Callable[[], None]) -> None:
    """``work()`` (writes to the Optuna study) inside the store's claim. Its error is raised once
    the claim has ended: the claim writes nothing to the store, and an error must not undo it."""
    errors: list[Exception] = []

    def run() -> None:
        try:
            work()
        except Exception as e:
            errors.append(e)
    store.claim(run)
    if errors:
        raise errors[0]


def _mark(t: Trial) -> tuple:
    return (t.status, t.value, t.started_at, t.job_dir)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""

