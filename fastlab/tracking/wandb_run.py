"""Where a W&B run goes, what it is called, and how it starts without ever blocking a run.

Both W&B writers use it: a run's ``fastlab.callbacks.wandb.WandbLogger`` and a sweep's summary
run (``fastlab.sweep.trackers``). No wandb import at module level (config.py's layer).

- **One W&B run per dir.** A run's id is a hash of its host and absolute run dir (a sweep's
  summary run: of its sweep dir), started with ``resume="allow"``: a resumed run
  (``trainer.resume``), an ``auto_bs`` retry or a sweep run again logs into the run it already
  has, as with MLflow.
- **A sweep is a group.** Each trial's run has ``group`` = :func:`sweep_group` (the sweep dir's
  name and a short hash of its absolute path: stable across resumes, told apart from another
  sweep dir of the same name) and ``job_type`` ``trial``; the summary run has the same group and
  ``job_type`` ``summary``.
- **Never a prompt, never a long wait.** ``trainer.wandb.mode`` (else ``$WANDB_MODE``, else
  online). An online run with no W&B credentials (``wandb login``, ``$WANDB_API_KEY``) fails at
  once with a line saying so, instead of W&B's interactive login prompt, which would wait on a
  terminal for ever; an unreachable server fails after W&B's ``init_timeout``
  (``$WANDB_INIT_TIMEOUT``, 90 s by default). The caller turns either into one warning. A server
  that dies during the run cannot hold its end: ``run.finish()`` waits at most
  :data:`FINISH_TIMEOUT` seconds for the last uploads (``$WANDB_FINISH_TIMEOUT`` wins; W&B's own
  default waits for ever), then W&B marks the run crashed and the local files keep everything.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

JOB_TRIAL = "trial"
JOB_SUMMARY = "summary"
OFFLINE_MODES = ("offline", "dryrun", "disabled")  # W&B's own spellings that need no login
FINISH_TIMEOUT = 60.0  # seconds a run's end waits for its last uploads to a server
FINISH_TIMEOUT_ENV = "WANDB_FINISH_TIMEOUT"  # W&B's own variable for its finish_timeout setting


def _digest(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def run_id(path: str | os.PathLike) -> str:
    """The W&B run id of the run (or sweep) dir ``path``: the same for the same dir on this host."""
    return f"fl-{_digest(f'{socket.gethostname()}:{Path(path).resolve()}', 16)}"


def sweep_group(sweep_dir: str | os.PathLike) -> str:
    """The W&B group of a sweep's runs, e.g. ``lr-3fa2c1d0``: the sweep dir's name and a hash of
    its absolute path."""
    path = Path(sweep_dir).resolve()
    return f"{path.name}-{_digest(str(path), 8)}"


def resolved_mode(mode: str | None) -> str:
    """``trainer.wandb.mode``, else ``$WANDB_MODE``, else ``online``."""
    return mode or os.environ.get("WANDB_MODE") or "online"


def _check_login(wandb: Any) -> None:
    # wandb.init would ask on a terminal (and wait) or raise its own hint; a run must do neither.
    if wandb.run is not None:  # logged in already (and login() would say False after an init)
        return
    try:
        found = wandb.login(prompt=False, verify=False)
    except TypeError:  # a wandb before login(prompt=...): let init find out
        return
    if not found:
        raise RuntimeError("no W&B credentials: run `wandb login` or set WANDB_API_KEY, or log offline "
                           "with trainer.wandb.mode=offline (sync later with `wandb sync`)")


def start_run(project: str, entity: str | None, mode: str | None, *, path: str | os.PathLike, name: str,
              config: Mapping[str, Any], group: str | None = None, job_type: str | None = None,
              tags: Sequence[str] = ()) -> Any:
    """``wandb.init`` of the W&B run of ``path`` (a run dir or a sweep dir; see the module's
    docstring) in ``project``/``entity``; returns the W&B run. Raises what W&B raises, or
    ``RuntimeError`` for an online run without credentials."""
    import wandb

    if resolved_mode(mode) not in OFFLINE_MODES and os.environ.get("WANDB_DISABLED", "").lower() not in ("true", "1"):
        _check_login(wandb)
    # reinit="create_new": never hand back another run active in this process (a notebook's own,
    # or an earlier trial's left open by a failure), which wandb.init does by default
    # the user's $WANDB_FINISH_TIMEOUT is read by W&B itself; a setting passed here would override it
    settings = None if FINISH_TIMEOUT_ENV in os.environ else wandb.Settings(finish_timeout=FINISH_TIMEOUT)
    return wandb.init(project=project, entity=entity, mode=mode, id=run_id(path), resume="allow", name=name,
                      group=group, job_type=job_type, tags=list(tags) or None, config=dict(config),
                      reinit="create_new", settings=settings)


def log_files(run: Any, name: str, kind: str, entries: Sequence[tuple[str, Path]]) -> None:
    """Log ``entries`` (``(name in the artifact, a file or a dir)``; missing and empty ones left
    out) as one artifact ``name`` of type ``kind`` of ``run``; nothing when none exist."""
    import wandb

    entries = [(n, p) for n, p in entries if p.is_file() or (p.is_dir() and any(p.iterdir()))]
    if not entries:
        return
    artifact = wandb.Artifact(name, type=kind)
    for entry, path in entries:
        if path.is_file():
            artifact.add_file(str(path), name=entry)
        else:
            artifact.add_dir(str(path), name=entry)
    run.log_artifact(artifact)
