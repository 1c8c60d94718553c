"""A sweep dir's layout: where its trial store lives. The one module that knows those names.

A fastlab sweep dir holds its study either in ``trials.db`` (SQLite, the default) or, for a study
in PostgreSQL, in ``storage.json``, which says where (``{"storage": URL, "study": NAME}``). The
trial store (``fastlab.sweep.store``) reads and writes them through these functions; readers
(fastlab-meta, the trackers) find a sweep dir with :func:`is_sweep_dir` and :func:`sweep_dir_of`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TRIALS_DB = "trials.db"
STORAGE_FILE = "storage.json"


def trials_db(sweep_dir: str | os.PathLike) -> Path:
    """The SQLite trial store of ``sweep_dir`` (whether or not it exists)."""
    return Path(sweep_dir) / TRIALS_DB


def storage_file(sweep_dir: str | os.PathLike) -> Path:
    """The file that names the PostgreSQL study of ``sweep_dir`` (whether or not it exists)."""
    return Path(sweep_dir) / STORAGE_FILE


def is_sweep_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the dir of a fastlab sweep: it holds ``trials.db`` or ``storage.json``."""
    return trials_db(path).is_file() or storage_file(path).is_file()


def sweep_dir_of(run_dir: str | os.PathLike) -> Path | None:
    """The fastlab sweep dir a job runs in: the nearest folder above ``run_dir`` that is one."""
    for parent in Path(run_dir).resolve().parents:
        if is_sweep_dir(parent):
            return parent
    return None


def read_pointer(sweep_dir: str | os.PathLike) -> dict[str, str] | None:
    """``{"storage": URL, "study": NAME}`` of a sweep dir whose study lives in PostgreSQL, else None."""
    path = storage_file(sweep_dir)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_pointer(sweep_dir: str | os.PathLike, storage: str, study: str) -> None:
    """Record in ``sweep_dir`` where its PostgreSQL study lives (atomically; unchanged text is not
    written again)."""
    path = storage_file(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"storage": storage, "study": study}, indent=1)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".{STORAGE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
