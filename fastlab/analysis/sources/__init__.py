"""Reading trials: every source fastlab-meta analyses, into one ``TrialsTable``.

:func:`read_trials` reads a fastlab sweep dir (``trials.db`` or the PostgreSQL study its
``storage.json`` names: :mod:`fastlab.analysis.sources.sweep`), any Hydra multirun dir (job dirs with
``.hydra/overrides.yaml`` and ``metrics.json``: :mod:`fastlab.analysis.sources.multirun`), an MLflow
experiment (``mlflow:EXPERIMENT``: :mod:`fastlab.analysis.sources.mlflow`) or an Optuna study
(``optuna:STORAGE_URL#STUDY``: :mod:`fastlab.analysis.sources.optuna`). The table itself is
:mod:`fastlab.analysis.sources.table`; which way is better, :mod:`fastlab.analysis.sources.direction`.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastlab.analysis.errors import MetaError
from fastlab.analysis.sources.table import TrialsTable
from fastlab.sweepdir import is_sweep_dir

SOURCES = ("mlflow:", "optuna:")


def tracker_source(path: str | Path) -> str | None:
    """``path``'s prefix when it names a tracker's study (``mlflow:``, ``optuna:``), else None."""
    text = str(path) if isinstance(path, str) else None
    return next((p for p in SOURCES if text is not None and text.startswith(p)), None)


def default_out(path: str | Path) -> Path:
    """Where the report goes without ``--out``: ``PATH/meta``; for a tracker's study
    ``outputs/meta/<mlflow|optuna>-<study>``."""
    prefix = tracker_source(path)
    if prefix is None:
        return Path(path) / "meta"
    name = str(path).rpartition("#")[2] if "#" in str(path) else str(path)[len(prefix):]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "study"
    return Path("outputs") / "meta" / f"{prefix[:-1]}-{safe}"


def read_trials(path: str | Path, metric: str | None = None) -> TrialsTable:
    """The trials of the sweep in ``path``: ``trials.db`` when there is one, else the job dirs;
    or, for ``mlflow:EXPERIMENT[#PARENT]`` and ``optuna:STORAGE_URL[#STUDY]``, that tracker's
    study. ``metric`` (``--metric``) is the response: the MLflow metric (default ``objective``);
    for a dir, one of a sweep's objectives or a number of the trials' ``metrics.json``
    (:mod:`fastlab.analysis.sources.objectives`; default the objective, a sweep's first).

    Raises
    ------
    MetaError
        ``path`` does not exist, is a single run rather than a sweep, or holds no trials;
        ``metric`` given for an Optuna study, or one the trials do not have.
    """
    from fastlab.analysis.sources.multirun import read_multirun
    from fastlab.analysis.sources.sweep import read_trials_db

    prefix = tracker_source(path)
    if prefix == "mlflow:":
        from fastlab.analysis.sources.mlflow import read_mlflow

        return read_mlflow(str(path)[len(prefix):], metric)
    if prefix == "optuna:":
        if metric is not None:
            raise MetaError(f"--metric is not for an Optuna study ({path}): it records its own "
                            "objective; leave --metric out")
        from fastlab.analysis.sources.optuna import read_optuna

        return read_optuna(str(path)[len(prefix):])
    path = Path(path)
    if not path.exists():
        raise MetaError(f"{path} does not exist: pass a sweep dir (hydra.sweep.dir of a multirun, "
                        "e.g. outputs/sweeps/<date>/<time>), mlflow:EXPERIMENT or "
                        "optuna:STORAGE_URL#STUDY")
    if not path.is_dir():
        raise MetaError(f"{path} is not a directory: pass a sweep dir, not a file in it")
    if is_sweep_dir(path):  # SQLite, or PostgreSQL
        return read_trials_db(path, metric)
    if (path / ".hydra" / "overrides.yaml").is_file():
        raise MetaError(f"{path} is a single run, not a sweep: pass the multirun dir that holds "
                        "the job dirs 0/ 1/ ... (its parent, for a job dir)")
    return read_multirun(path, metric)
