"""``fastlab-export RUN_DIR OUT``: an inference bundle that needs neither pickle nor the config.

``OUT/`` gets ``model.safetensors`` (the weights) and ``meta.json`` (format, version, the
weights' sha256 and the model's metadata: arch and its config, task, classes, channels, size,
normalisation, and the training config for provenance). Both files are written atomically, the
weights first: ``meta.json`` names the weights' hash, so a reader never pairs it with other weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

from fastlab.errors import FastlabError
from fastlab.inference import (
    BUNDLE_FORMAT,
    BUNDLE_META,
    BUNDLE_VERSION,
    BUNDLE_WEIGHTS,
    InferenceError,
    build_model,
    read_model_file,
)
from fastlab.rundir import atomic_path, atomic_write_text


def export(source: str | Path, out: str | Path) -> Path:
    """Write the bundle of ``source`` (a run dir, a ``model.pt`` or another bundle) to ``out``."""
    try:
        from safetensors.torch import save as save_safetensors
    except ImportError:
        raise InferenceError("fastlab-export needs safetensors: pip install 'fastlab[serve]'") from None
    state, meta = read_model_file(source)
    build_model(meta, state, str(source))  # refuse to export weights that would not load
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InferenceError(f"OUT '{out}' is a file: give a folder name for the bundle")
    if out.is_dir() and any(out.iterdir()) and not (out / BUNDLE_META).is_file():
        raise InferenceError(f"OUT '{out}' is a folder with other files in it: give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous tensors that share no memory: clone each one.
    blob = save_safetensors({k: v.detach().cpu().contiguous().clone() for k, v in state.items()
                             if isinstance(v, torch.Tensor)})
    with atomic_path(out / BUNDLE_WEIGHTS) as tmp:
        tmp.write_bytes(blob)
    doc = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "weights": BUNDLE_WEIGHTS,
           "weights_sha256": hashlib.sha256(blob).hexdigest(), "source": str(Path(source).resolve()),
           "meta": meta.to_dict()}
    atomic_write_text(out / BUNDLE_META, json.dumps(doc, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-export",
        description="Write an inference bundle (model.safetensors + meta.json) from a run dir.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a fastlab-train run dir (or its model.pt)")
    parser.add_argument("out", metavar="OUT", help="the bundle folder to write")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.out)
    except FastlabError as e:
        print(f"fastlab-export: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"exported {args.run_dir} -> {out}")


if __name__ == "__main__":
    main()
