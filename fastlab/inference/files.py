"""The two saved-model formats inference reads, and the bundle it writes; nothing is unpickled.

- a run dir's ``model.pt``, written and read by ``fastlab.models.zoo`` only (``read_model``:
  ``torch.load(weights_only=True)`` of ``{"state_dict", "meta"}``);
- a bundle, read and written only here: ``model.safetensors`` (the weights) and ``meta.json``
  (``{"format": "fastlab-bundle", "version": 1, "weights": ..., "weights_sha256": ..., "source": ...,
  "meta": {...}}``, the meta being :meth:`ModelMeta.to_dict`: plain JSON, vocabularies and
  tabular procs included).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from fastlab.inference.errors import InferenceError
from fastlab.models.meta import ModelMeta
from fastlab.models.zoo import MODEL_FILE, read_model
from fastlab.rundir import atomic_path, atomic_write_text

BUNDLE_FORMAT, BUNDLE_VERSION = "fastlab-bundle", 1
BUNDLE_META, BUNDLE_WEIGHTS = "meta.json", "model.safetensors"
CHECKPOINT = MODEL_FILE


def _load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    return read_model(path, InferenceError)


def _load_bundle(root: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    meta_path = root / BUNDLE_META
    try:
        doc = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InferenceError(f"cannot read bundle metadata '{meta_path}' ({type(e).__name__}): "
                             "re-export the run with fastlab-export") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise InferenceError(f"'{meta_path}' is not a fastlab bundle: make one with fastlab-export RUN_DIR OUT")
    if doc.get("version") != BUNDLE_VERSION:
        raise InferenceError(f"bundle '{root}' has version {doc.get('version')}, this fastlab reads "
                             f"{BUNDLE_VERSION}: re-export the run with this fastlab")
    weights = root / str(doc.get("weights", BUNDLE_WEIGHTS))
    try:
        blob = weights.read_bytes()
    except OSError as e:
        raise InferenceError(f"cannot read bundle weights '{weights}' ({type(e).__name__}): "
                             "re-export the run with fastlab-export") from None
    if doc.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
        raise InferenceError(f"bundle weights '{weights}' do not match '{meta_path}' (sha256 differs): "
                             "re-export the run with fastlab-export")
    try:
        from safetensors.torch import load as load_safetensors
    except ImportError:
        raise InferenceError("reading a bundle needs safetensors: pip install 'fastlab[serve]'") from None
    try:
        state = load_safetensors(blob)
    except Exception as e:  # SafetensorError: a header or length that does not parse
        raise InferenceError(f"cannot read bundle weights '{weights}' ({type(e).__name__}: {e}): "
                             "re-export the run with fastlab-export") from None
    return state, ModelMeta.from_dict(doc.get("meta"), str(meta_path), InferenceError)


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Weights and metadata of a run dir, a ``model.pt``, or a bundle (its folder or ``meta.json``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InferenceError(f"'{path}' does not exist: pass a run dir (with model.pt) or a bundle made by fastlab-export")
    if p.is_dir():
        if (p / BUNDLE_META).is_file():
            return _load_bundle(p)
        if (p / CHECKPOINT).is_file():
            return _load_checkpoint(p / CHECKPOINT)
        raise InferenceError(f"'{path}' holds neither {CHECKPOINT} nor {BUNDLE_META}: pass a run dir trained with "
                             "trainer.save_model=true, or a bundle made by fastlab-export")
    if p.name == BUNDLE_META:
        return _load_bundle(p.parent)
    return _load_checkpoint(p)


def write_bundle(out: str | os.PathLike, state: dict[str, torch.Tensor], meta: ModelMeta, source: str) -> Path:
    """Write ``out/model.safetensors`` then ``out/meta.json``, each atomically: ``meta.json`` names
    the weights' hash, so a reader never pairs it with other weights."""
    try:
        from safetensors.torch import save as save_safetensors
    except ImportError:
        raise InferenceError("fastlab-export needs safetensors: pip install 'fastlab[serve]'") from None
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InferenceError(f"OUT '{out}' is a file: give a folder name for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / BUNDLE_META).is_file():
        raise InferenceError(f"OUT '{out}' is a folder with other files in it: give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous tensors that share no memory (a language model's decoder is
    # tied to its embedding): clone each one.
    blob = save_safetensors({k: v.detach().cpu().contiguous().clone() for k, v in state.items()
                             if isinstance(v, torch.Tensor)})
    with atomic_path(out / BUNDLE_WEIGHTS) as tmp:
        tmp.write_bytes(blob)
    doc = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "weights": BUNDLE_WEIGHTS,
           "weights_sha256": hashlib.sha256(blob).hexdigest(), "source": str(Path(source).resolve()),
           "meta": meta.to_dict()}
    atomic_write_text(out / BUNDLE_META, json.dumps(doc, indent=2) + "\n")
    return out
