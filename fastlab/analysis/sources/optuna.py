"""Read an Optuna study as a trials table: ``fastlab-meta optuna:STORAGE_URL#STUDY``.

``STORAGE_URL`` is what ``optuna.create_study(storage=...)`` was given (``sqlite:///study.db``,
``postgresql://...``, or a journal file's path ``journal:PATH``); ``#STUDY`` may be left out when
the storage holds one study. The trials' params are the features, typed and scaled as their
distributions say (a ``log=True`` one is log-scaled; categorical choices are categories), and the
trial's value is the objective, better as the study's direction says. Status: COMPLETE is
completed, PRUNED pruned, FAIL failed, RUNNING and WAITING running: only completed trials are
analysed, the others counted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.table import TrialsTable, require_trials
from fastlab.errors import FastlabError

_STATUS = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}


def _storage(optuna: Any, url: str) -> Any:
    """The storage at ``url``, read as it is: a file that is not there is said, not made, and a
    database's tables are never made (``skip_table_creation``); a database server's connection
    has a deadline (``fastlab.tracking.deadlines``)."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal:"):]
        if not Path(path).is_file():
            raise MetaError(f"{path} does not exist: pass optuna:journal:PATH of a study's journal file")
        return JournalStorage(JournalFileBackend(path))
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.is_file():  # Optuna would make an empty database there
            raise MetaError(f"{path} does not exist: pass optuna:sqlite:///PATH#STUDY of the study's database")
    from fastlab.tracking.deadlines import sqlalchemy_connect_args

    connect_args = sqlalchemy_connect_args(url)  # a server's waits bounded
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args} if connect_args else None,
                                      skip_table_creation=True)


def _unread(url: str, e: Exception) -> MetaError:
    """One line for a storage that could not be read: a server that did not answer names the
    setting of the wait; any other failure its first line."""
    from fastlab.tracking.deadlines import db_wait, shown, timed_out

    if url.startswith(("postgresql", "mysql")) and timed_out(e):
        return MetaError(f"the Optuna storage's server {shown(url)} did not answer in time ({db_wait()}): "
                         "check the server, or pass optuna:STORAGE_URL#STUDY of a storage that answers")
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return MetaError(f"cannot open the Optuna storage {shown(url)} ({type(e).__name__}: {first}): pass "
                     "optuna:STORAGE_URL#STUDY, e.g. optuna:sqlite:///study.db#my_study")


def read_optuna(spec: str) -> TrialsTable:
    """The trials of ``spec`` (``STORAGE_URL#STUDY``, or ``STORAGE_URL`` with one study)."""
    try:
        import optuna
    except ImportError:
        raise MetaError("reading an Optuna study needs optuna: pip install optuna") from None
    url, _, name = spec.rpartition("#") if "#" in spec else (spec, "", "")
    if not url:
        raise MetaError("optuna: needs a storage URL, e.g. fastlab-meta 'optuna:sqlite:///study.db#my_study'")
    try:
        storage = _storage(optuna, url)
        names = optuna.get_all_study_names(storage=storage)
    except FastlabError:  # already one line (a missing file, a bad setting)
        raise
    except Exception as e:
        raise _unread(url, e) from None
    if not name:
        if len(names) != 1:
            raise MetaError(f"{url} holds {len(names)} studies ({', '.join(names) or 'none'}): name one, "
                            f"e.g. optuna:{url}#{names[0] if names else 'STUDY'}")
        name = names[0]
    if name not in names:
        raise MetaError(f"{url} has no study {name!r}: its studies are {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=name, storage=storage)
    if len(study.directions) != 1:
        raise MetaError(f"study {name!r} has {len(study.directions)} objectives: fastlab-meta analyses "
                        "one; it reads single-objective studies only")
    trials = study.get_trials(deepcopy=False)
    dists: dict[str, Any] = {}
    for t in trials:
        for key, dist in t.distributions.items():
            dists.setdefault(key, dist)
    names_ = tuple(dists)
    status = tuple(_STATUS.get(t.state.name, "running") for t in trials)
    values = [float(t.value) if s == "completed" and t.value is not None and math.isfinite(t.value) else math.nan
              for t, s in zip(trials, status)]
    log_scale = frozenset(k for k, d in dists.items() if getattr(d, "log", False))
    metric = (study.metric_names or ["value"])[0] if hasattr(study, "metric_names") else "value"
    return require_trials(TrialsTable(
        names=names_,
        params=tuple({k: _plain(v) for k, v in t.params.items()} for t in trials),
        values=np.asarray(values, dtype=float),
        status=status,
        numbers=tuple(t.number for t in trials),
        objective=metric,
        direction="maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize",
        log_scale=log_scale,
        scales_known=True,
        source="an Optuna study",
        path=f"optuna:{spec}",  # as typed: a Path would fold sqlite:/// into sqlite:/
    ))


def _plain(value: Any) -> Any:
    # numpy scalars (from a sampler) as Python numbers, so the encoder reads them as numbers
    return value.item() if hasattr(value, "item") else value
