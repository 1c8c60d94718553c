"""``fastlab-export RUN_DIR OUT``: an inference bundle that needs neither pickle nor the config.

``OUT/`` gets ``model.safetensors`` (the weights) and ``meta.json`` (format, version, the
weights' sha256 and the model's metadata as JSON: arch and its config, task, classes, and what
the task reads with: channels, size and normalisation of images, a text model's vocabulary, a
table's procs, a regression's y_range; plus the training config for provenance). The bundle is
written by ``fastlab.inference.write_bundle``, the one writer of the format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastlab.cli import run_cli
from fastlab.inference import build_model, read_model_file, write_bundle


def export(source: str | Path, out: str | Path) -> Path:
    """Write the bundle of ``source`` (a run dir, a ``model.pt`` or another bundle) to ``out``."""
    state, meta = read_model_file(source)
    build_model(meta, state, str(source))  # refuse to export weights that would not load
    return write_bundle(out, state, meta, str(source))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-export",
        description="Write an inference bundle (model.safetensors + meta.json) from a run dir.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a fastlab-train run dir (or its model.pt)")
    parser.add_argument("out", metavar="OUT", help="the bundle folder to write")
    args = parser.parse_args(argv)
    out = run_cli("fastlab-export", lambda: export(args.run_dir, args.out))
    print(f"exported {args.run_dir} -> {out}")


if __name__ == "__main__":
    main()
