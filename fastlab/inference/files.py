"""The two saved-model formats inference reads, and the bundle it writes; nothing is unpickled.

- a run dir's ``model.pt``, written and read by ``fastlab.models.zoo`` only (``read_model``:
  ``torch.load(weights_only=True)`` of ``{"state_dict", "meta"}``);
- a bundle (``meta.json`` and its model file), whose files :mod:`fastlab.portable.bundle` reads and
  writes; here its ``model.safetensors`` becomes tensors and a checked ``ModelMeta``, and tensors
  become a bundle. An ONNX bundle (``model.onnx``) runs without PyTorch
  (``fastlab.portable.OnnxPredictor``) and is refused here with one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fastlab.models.meta import ModelMeta
from fastlab.models.zoo import MODEL_FILE, read_model
from fastlab.portable.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_META,
    BUNDLE_ONNX,
    BUNDLE_VERSION,
    BUNDLE_WEIGHTS,
    ONNX,
    read_bundle,
    weights_format,
    write_bundle_files,
)
from fastlab.portable.errors import InferenceError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_META", "BUNDLE_ONNX", "BUNDLE_VERSION", "BUNDLE_WEIGHTS", "CHECKPOINT",
           "read_model_file", "write_bundle"]

CHECKPOINT = MODEL_FILE


def _load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    return read_model(path, InferenceError)


def _load_bundle(root: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    doc, blob = read_bundle(root)
    if weights_format(doc) == ONNX:
        raise InferenceError(f"'{root}' is an ONNX bundle, which runs without PyTorch: predict or serve it with "
                             "fastlab-predict / fastlab-serve; for anything else use the run dir or its default "
                             "bundle (fastlab-export RUN OUT)")
    try:
        from safetensors.torch import load as load_safetensors
    except ImportError:
        raise InferenceError("reading a bundle needs safetensors: pip install 'fastlab[serve]'") from None
    try:
        state = load_safetensors(blob)
    except Exception as e:  # SafetensorError: a header or length that does not parse
        raise InferenceError(f"cannot read bundle weights '{root / str(doc.get('weights'))}' ({type(e).__name__}: "
                             f"{e}): re-export the run with fastlab-export") from None
    return state, ModelMeta.from_dict(doc.get("meta"), str(root / BUNDLE_META), InferenceError)


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
    """Write ``out/model.safetensors`` then ``out/meta.json`` (:func:`fastlab.portable.bundle.write_bundle_files`)."""
    try:
        from safetensors.torch import save as save_safetensors
    except ImportError:
        raise InferenceError("fastlab-export needs safetensors: pip install 'fastlab[serve]'") from None
    # safetensors wants contiguous tensors that share no memory (a language model's decoder is
    # tied to its embedding): clone each one.
    blob = save_safetensors({k: v.detach().cpu().contiguous().clone() for k, v in state.items()
                             if isinstance(v, torch.Tensor)})
    return write_bundle_files(out, blob, meta.to_dict(), source)
