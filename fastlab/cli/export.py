"""``fastlab-export RUN_DIR OUT [--format safetensors|onnx]``: an inference bundle that needs
neither pickle nor the config.

``OUT/`` gets the model file and ``meta.json`` (format, version, the model file's sha256 and the
model's metadata as JSON: arch and its config, task, classes, and what the task reads with:
channels, size and normalisation of images, a text model's vocabulary, a table's procs, a
regression's y_range; plus the training config for provenance). The model file is
``model.safetensors`` (the weights; the default), or with ``--format onnx`` ``model.onnx``: the
image model as an ONNX graph (uint8 images in, dynamic batch axis), checked against PyTorch on a
seeded batch before it is written, which ``fastlab-predict`` and ``fastlab-serve`` run with
onnxruntime, without PyTorch. The bundle is written by ``fastlab.portable.bundle``, the one
writer of the format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastlab.cli import run_cli
from fastlab.inference import build_model, read_model_file, write_bundle
from fastlab.portable.bundle import ONNX, SAFETENSORS, write_bundle_files

FORMATS = (SAFETENSORS, ONNX)


def export(source: str | Path, out: str | Path, fmt: str = SAFETENSORS, echo=print) -> Path:
    """Write the bundle of ``source`` (a run dir, a ``model.pt`` or another bundle) to ``out``, its
    model as ``fmt`` (``safetensors`` or ``onnx``); ``echo`` tells the ONNX check's result."""
    state, meta = read_model_file(source)
    model = build_model(meta, state, str(source))  # refuse to export weights that would not load
    if fmt == SAFETENSORS:
        return write_bundle(out, state, meta, str(source))
    from fastlab.inference.onnx_export import export_onnx

    onnx = export_onnx(model, meta, str(source))  # checked before anything is written
    echo(f"checked model.onnx against PyTorch on a seeded batch of {onnx.check_batch}: largest absolute "
         f"difference {onnx.max_diff:.3g}")
    return write_bundle_files(out, onnx.blob, meta.to_dict(), str(source), ONNX, {"onnx": onnx.spec})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-export",
        description="Write an inference bundle (model.safetensors or model.onnx, + meta.json) from a run dir.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a fastlab-train run dir (or its model.pt)")
    parser.add_argument("out", metavar="OUT", help="the bundle folder to write")
    parser.add_argument("--format", choices=FORMATS, default=SAFETENSORS,
                        help="safetensors (default: the weights, run with PyTorch) or onnx (image models: a graph "
                             "onnxruntime runs without PyTorch; needs fastlab[onnx])")
    args = parser.parse_args(argv)
    out = run_cli("fastlab-export", lambda: export(args.run_dir, args.out, args.format))
    print(f"exported {args.run_dir} -> {out}")


if __name__ == "__main__":
    main()
