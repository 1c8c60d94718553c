"""The bundle format (``fastlab-export``): its one reader and writer of files, without PyTorch.

A bundle is a folder with the model file and ``meta.json``::

    {"format": "fastlab-bundle", "version": 1, "weights": "model.safetensors" | "model.onnx",
     "weights_format": "safetensors" | "onnx", "weights_sha256": <hex of the model file>,
     "source": <exported path>, "meta": ModelMeta.to_dict(), "onnx": {...} (ONNX only)}

``weights_format`` is absent from bundles written before ONNX export, which are safetensors.
``onnx`` says what the graph takes and gives: ``{"input": <input name>, "output": <a
fastlab.portable.decode kind: probs, values or codes>, "opset": N}``. The model file goes first
and ``meta.json`` second, each atomically, so a reader never pairs a ``meta.json`` with other
weights. Turning the bytes into tensors (safetensors) is ``fastlab.inference.files``'s; running
them (ONNX) is :mod:`fastlab.portable.predictor`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fastlab.portable.errors import InferenceError
from fastlab.rundir import atomic_path, atomic_write_text

BUNDLE_FORMAT, BUNDLE_VERSION = "fastlab-bundle", 1
BUNDLE_META, BUNDLE_WEIGHTS, BUNDLE_ONNX = "meta.json", "model.safetensors", "model.onnx"
SAFETENSORS, ONNX = "safetensors", "onnx"
MODEL_FILES = {SAFETENSORS: BUNDLE_WEIGHTS, ONNX: BUNDLE_ONNX}


def bundle_root(path: str | os.PathLike) -> Path | None:
    """The bundle folder ``path`` names (the folder or its ``meta.json``), or None when it is none."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / BUNDLE_META).is_file():
        return p
    if p.name == BUNDLE_META and p.is_file():
        return p.parent
    return None


def read_bundle_doc(root: Path) -> dict:
    """``root/meta.json``, checked: a fastlab bundle of the version this fastlab reads."""
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
    if weights_format(doc) not in MODEL_FILES:
        raise InferenceError(f"bundle '{root}' holds a {weights_format(doc)!r} model, this fastlab reads "
                             f"{sorted(MODEL_FILES)}: re-export the run with this fastlab")
    return doc


def weights_format(doc: dict) -> str:
    return doc.get("weights_format", SAFETENSORS)


def read_bundle(root: Path) -> tuple[dict, bytes]:
    """``meta.json`` (checked) and the model file's bytes, whose sha256 must be the one it names."""
    doc = read_bundle_doc(root)
    weights = root / str(doc.get("weights", MODEL_FILES[weights_format(doc)]))
    try:
        blob = weights.read_bytes()
    except OSError as e:
        raise InferenceError(f"cannot read bundle weights '{weights}' ({type(e).__name__}): "
                             "re-export the run with fastlab-export") from None
    if doc.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
        raise InferenceError(f"bundle weights '{weights}' do not match '{root / BUNDLE_META}' (sha256 differs): "
                             "re-export the run with fastlab-export")
    return doc, blob


def is_onnx_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bundle whose model is ONNX (a bundle that does not read is left to
    the reader that says why)."""
    root = bundle_root(path)
    if root is None:
        return False
    try:
        return weights_format(read_bundle_doc(root)) == ONNX
    except InferenceError:
        return False


def write_bundle_files(out: str | os.PathLike, blob: bytes, meta: dict, source: str,
                       fmt: str = SAFETENSORS, extra: dict | None = None) -> Path:
    """Write ``out/<model file of fmt>`` (``blob``) then ``out/meta.json`` naming its hash, each
    atomically. ``out`` must be new, empty or a bundle already (which is replaced)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InferenceError(f"OUT '{out}' is a file: give a folder name for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / BUNDLE_META).is_file():
        raise InferenceError(f"OUT '{out}' is a folder with other files in it: give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    name = MODEL_FILES[fmt]
    with atomic_path(out / name) as tmp:
        tmp.write_bytes(blob)
    doc = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "weights": name,
           **({"weights_format": fmt} if fmt != SAFETENSORS else {}),
           "weights_sha256": hashlib.sha256(blob).hexdigest(), "source": str(Path(source).resolve()),
           "meta": meta, **(extra or {})}
    atomic_write_text(out / BUNDLE_META, json.dumps(doc, indent=2) + "\n")
    # A bundle of the other format written here before leaves its model file: remove it, so the
    # folder holds one model.
    for other, stale in MODEL_FILES.items():
        if other != fmt and (out / stale).is_file():
            (out / stale).unlink()
    return out
