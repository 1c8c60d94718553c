"""``model.pt`` and the model zoo: the one writer and reader of a trained model's checkpoint.

``model.pt`` (and ``best.pt``, and a zoo entry) is ``{"state_dict": CPU tensors, "meta":
ModelMeta.to_dict()}`` (:func:`model_checkpoint`, :func:`write_model`); :func:`read_checkpoint`
reads it as plain data and :func:`read_model` as weights and a checked ``ModelMeta``.

The zoo holds pretrained bodies saved by fastlab runs (``save_as``) under ``paths.models``.
Nothing is downloaded: a zoo entry is made by training a source task once, e.g.
``fastlab-train +experiment=pretrain_glyphs``. Loading uses ``torch.load(weights_only=True)``
only, so a checkpoint cannot run code.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastlab.errors import ConfigError, FastlabError
from fastlab.models.meta import ModelMeta
from fastlab.rundir import MODEL, checkpoint_digest_ok, save_checkpoint

log = logging.getLogger("fastlab")
# Arch settings that say how a body is loaded or trained, never its tensors' shapes: a difference
# in them cannot be why a checkpoint does not fit (arch.groups only regroups the same weights).
NOT_SHAPES = ("pretrained", "groups")
MODEL_FILE = MODEL  # a run dir's trained model (fastlab.rundir names a run dir's files)


def zoo_path(name_or_path: str, models_dir: str | Path) -> Path:
    """A file path as given, or ``models_dir/<name>.pt`` for a zoo name."""
    as_path = Path(name_or_path).expanduser()
    if as_path.suffix == ".pt" or "/" in name_or_path:
        if not as_path.is_file():
            raise ConfigError(f"arch.pretrained='{name_or_path}' is not a file: give an existing .pt file or a zoo name")
        return as_path
    path = Path(models_dir) / f"{name_or_path}.pt"
    if not path.is_file():
        raise ConfigError(f"arch.pretrained='{name_or_path}': no checkpoint at {path}; make it with "
                          f"fastlab-train +experiment=pretrain_{name_or_path}, or give a file path")
    return path


def load_plain(path: Path, error: type[FastlabError] = ConfigError, what: str = "a model.pt written by fastlab-train"):
    """``torch.load(weights_only=True)``: a file holding pickled code is refused unrun, a truncated
    or foreign one with one line (as ``error``) naming it."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # no code named: random bytes, or a pickle of no torch format
            raise error(f"cannot read checkpoint '{path}' ({type(e).__name__}): it is truncated or not a torch "
                        f"checkpoint; use {what}") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"cannot read checkpoint '{path}': refused, it holds more than weights and plain data "
                    f"({first[:120]}); fastlab loads weights only") from None
    except Exception as e:  # RuntimeError (not a zip), EOFError (truncated), OSError, ...
        raise error(f"cannot read checkpoint '{path}' ({type(e).__name__}): it is truncated or not a "
                    f"torch checkpoint; use {what}") from None
    if not checkpoint_digest_ok(obj):  # torch.load checks no checksum: a flipped byte loads
        raise error(f"checkpoint '{path}' is damaged: its content differs from the SHA-256 recorded "
                    f"when fastlab wrote it (a bad disk or an interrupted copy); use {what}, or "
                    "copy it again from where it was made")
    return obj


def read_checkpoint(path: Path, error: type[FastlabError] = ConfigError) -> dict:
    """``{"state_dict", "meta"}`` from a fastlab checkpoint, as plain data (``meta`` a dict),
    refusing anything else with one line (as ``error``). ``weights_only=True``: a file holding
    pickled code is refused unrun."""
    ckpt = load_plain(path, error)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) or "meta" not in ckpt:
        raise error(f"cannot read checkpoint '{path}': it has no state_dict and meta, so it is not a fastlab "
                    "checkpoint; use a model.pt written by fastlab-train")
    return ckpt


def read_model(path: Path, error: type[FastlabError] = ConfigError) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """The weights and the checked ``ModelMeta`` (of its task's type) of a ``model.pt`` or
    ``best.pt``; anything else is one ``error`` line."""
    ckpt = read_checkpoint(path, error)
    return ckpt["state_dict"], ModelMeta.from_dict(ckpt["meta"], str(path), error)


def model_checkpoint(model: nn.Module, meta: ModelMeta | Mapping[str, Any], **extra: Any) -> dict:
    """What ``model.pt`` (and ``best.pt``, a zoo entry) holds: CPU weights and the meta as plain
    data, with ``extra`` beside its fields (``best.pt``'s epoch and monitored value). ``meta`` is
    the run's ``ModelMeta``, or a plain dict of a Learner built by hand."""
    plain = meta.to_dict() if isinstance(meta, ModelMeta) else dict(meta)
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": {**plain, **extra}}


def write_model(path: Path, checkpoint: dict) -> None:
    """Write a :func:`model_checkpoint` to ``path``, atomically and as plain data only (so
    :func:`read_checkpoint` reads it with ``weights_only=True``)."""
    save_checkpoint(Path(path), checkpoint)


@dataclass
class LoadReport:
    path: Path
    loaded: list[str]  # body tensors taken from the checkpoint
    new: list[str]  # tensors initialised fresh (the new head)

    def summary(self) -> str:
        return (f"pretrained {self.path}: loaded {len(self.loaded)} body tensors, "
                f"{len(self.new)} new (the head for this task)")


def load_pretrained(model: nn.Module, ckpt: dict, path: Path, arch_name: str, arch_config: dict) -> LoadReport:
    """Copy the checkpoint's body into ``model`` (the head stays new: it belongs to the new
    task). A checkpoint of another architecture, or of the same one built differently, is refused
    with the mismatches listed; only the tensors are compared, so ``arch.groups`` never matters."""
    meta = ckpt["meta"]
    if meta.get("arch") != arch_name:
        raise ConfigError(f"checkpoint '{path}' is a {meta.get('arch')!r} but arch.name={arch_name!r}: "
                          f"use arch={meta.get('arch')} or a checkpoint of {arch_name}")
    source = ckpt["state_dict"]
    target = model.state_dict()
    body_keys = [k for k in target if k.startswith("body.")]
    missing = [k for k in body_keys if k not in source]
    wrong = [f"{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}" for k in body_keys
             if k in source and source[k].shape != target[k].shape]
    if missing or wrong:
        theirs = meta.get("arch_config", {})
        differ = {k: (theirs.get(k), v) for k, v in arch_config.items()
                  if k in theirs and theirs[k] != v and k not in NOT_SHAPES}
        detail = "; ".join([*(f"missing {k}" for k in missing[:3]), *wrong[:3]])
        raise ConfigError(f"checkpoint '{path}' does not fit this {arch_name} (checkpoint vs run: "
                          f"arch settings {differ or 'same'}, in channels {meta.get('n_in')}; {detail}): "
                          "use the same arch settings and image channels as the checkpoint")
    model.load_state_dict({k: source[k] for k in body_keys}, strict=False)
    report = LoadReport(path, body_keys, [k for k in target if k not in body_keys])
    log.info(report.summary())
    return report
