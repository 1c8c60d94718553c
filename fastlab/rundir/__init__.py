"""Writing a run dir: atomic files, history.csv, plain-data checkpoints and provenance (the layout of
``model.pt`` is ``fastlab.models.zoo``'s)."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from fastlab.errors import OutputError

# A run dir's files, named here only (every writer and reader takes the name from here).
METRICS = "metrics.json"  # the run's result (fastlab.rundir.metrics_json)
HISTORY = "history.csv"  # one row per epoch
MODEL = "model.pt"  # the trained model (fastlab.models.zoo writes and reads it)
LAST = "last.pt"  # the checkpoint a resume continues from (fastlab.callbacks.checkpoint)
PROCESSES = "processes.json"  # per process that trained the run (fastlab.callbacks.checkpoint)
BEST = "best.pt"  # trainer.callbacks.save_best's model
LR_FIND = "lr_find.json"  # fastlab-lr-find's curve and suggestions
PLOTS = "plots"  # the run's PNGs
TENSORBOARD = "tensorboard"  # trainer.logger=[..., tensorboard]'s event files
INTERPRET = "interpret"  # fastlab-interpret's outputs

# Write errors that mean "no room": the disk is full, a quota or the file-size limit is reached.
NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds,
    so a reader (or a kill) never sees a half-written file. The writer creates the file, so it gets
    the usual permissions (mkstemp's would be owner-only). Running out of room is an
    ``OutputError`` naming ``path``; the old file, if any, is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in NO_ROOM:
            raise OutputError(f"cannot write '{path}': {e.strerror} (disk full or file-size limit): free space "
                              "and run again; nothing already written was changed") from None
        raise


def write_bytes_durably(path: Path, data: bytes) -> None:
    """Write and fsync, so that the rename that follows never publishes a file still in cache."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files (``.<name>.<pid>.<hex>.tmp``) that a killed writer left in
    ``folder``; a live process's are kept. Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.*.*.tmp"):
        try:
            pid = int(tmp.name.split(".")[-3])
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """``text`` to ``path``, never half-written; ``durable``: fsynced before the rename (a
    progress view that is rewritten soon may skip it: about 2 ms per write on a plain disk)."""
    with atomic_path(path) as tmp:
        if durable:
            write_bytes_durably(tmp, text.encode())
        else:
            tmp.write_bytes(text.encode())


def write_json(path: Path, obj: dict) -> None:
    # allow_nan=False: a NaN must already be null, so every JSON reader can parse the file.
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_history(path: Path, history: Sequence[dict], metric_names: Sequence[str], durable: bool = True) -> None:
    """``epoch,train_loss,valid_loss,<metrics...>,lr,seconds``, one row per epoch (``durable``:
    see ``atomic_write_text``)."""
    columns = ["epoch", "train_loss", "valid_loss", *metric_names, "lr", "seconds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue(), durable)


# The key a checkpoint's content digest is saved under (``save_checkpoint``); readers pop it
# (``checkpoint_digest_ok``) so no caller ever sees it.
INTEGRITY = "fastlab_integrity"
INTEGRITY_SCHEME = "sha256 over keys, scalars and tensor bytes, v1"


def content_digest(obj: object) -> str:
    """SHA-256 of a checkpoint's content: every key in sorted order, every scalar's repr, every
    tensor's dtype, shape and bytes. ``torch.load`` checks no checksum, so a flipped byte in a
    tensor loads silently; this digest, recorded when the file is written, names it instead."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def walk(o: object) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(f"D{len(o)}".encode())
            for k in sorted(o, key=repr):
                h.update(repr(k).encode())
                walk(o[k])
        elif isinstance(o, list | tuple):
            h.update(f"L{len(o)}".encode())
            for v in o:
                walk(v)
        else:
            h.update(repr(o).encode())

    walk(obj)
    return h.hexdigest()


def checkpoint_digest_ok(obj: object) -> bool:
    """Whether a loaded checkpoint matches the digest it was saved with; pops the digest from
    ``obj``. True for a file without one (written before digests, or by another tool)."""
    if not isinstance(obj, dict) or INTEGRITY not in obj:
        return True
    recorded = obj.pop(INTEGRITY)
    return isinstance(recorded, dict) and recorded.get("sha256") == content_digest(obj)


def save_checkpoint(path: Path, obj: dict) -> None:
    """``torch.save`` of plain data (tensors, numbers, strings, lists, dicts) only, so that
    ``torch.load(path, weights_only=True)`` can read it back without unpickling code, with the
    content's digest (:func:`content_digest`) beside it, checked when it is read back."""
    # Serialised in memory first: torch.save reports a failed write as a bare RuntimeError,
    # while a plain write raises OSError with its errno (disk full, file too large).
    import torch  # here: the sweep driver writes its files with this module, without torch

    buf = io.BytesIO()
    digest = {"sha256": content_digest(obj), "scheme": INTEGRITY_SCHEME}
    torch.save({**obj, INTEGRITY: digest}, buf)
    with atomic_path(path) as tmp:
        write_bytes_durably(tmp, buf.getvalue())


def versions() -> dict[str, str | None]:
    """Installed versions of what a result depends on (from package metadata: importing
    torchvision only to read its version would cost a second)."""
    from importlib.metadata import PackageNotFoundError, version

    def v(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    torch = sys.modules.get("torch")  # its own version string names the build (e.g. +cu130)
    out = {"python": platform.python_version(), "torch": torch.__version__ if torch else v("torch")}
    for dist in ("fastlab", "torchvision", "hydra-core", "omegaconf", "numpy", "scikit-learn"):
        out[dist] = v(dist)
    return out


def git_info() -> dict:
    """The commit of fastlab's own source tree and whether it had local changes; nulls for an
    install without a git checkout."""
    src = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}
