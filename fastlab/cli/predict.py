"""``fastlab-predict RUN_DIR_OR_BUNDLE INPUTS... [--text TEXT] [--top-k K]``: predictions as JSON.

What an input is depends on the model's task (its ``TaskInference``):

- image tasks: image files; ``{"file", "label", "top": [...]}`` (classify), ``"value"`` (regress,
  with ``"points"`` for a points model), ``"pixels"`` and ``"mask_png"`` (segment; ``--masks DIR``
  also writes each mask as ``DIR/<stem>_mask.png``);
- text tasks: text files, or ``--text 'the text'``; a label and ``top`` (text_classify) or
  ``"next_words"`` (language_model);
- tabular: CSV files (a header row naming the input columns) or JSON files (an object per row),
  or ``--text '{"col": value, ...}'``; one result per row, with ``"row"`` (its CSV line).

``--tta [N]`` (image classify and regress models trained with an augmentation): each answer is
fast.ai's test-time augmentation, the mean over N (default 4) passes augmented as the model was
trained (``aug`` in its recorded config), mixed with the plain pass by 0.25; seeded by ``--seed``,
and each image draws the same N transforms, so its answer does not depend on the other inputs.

An ONNX bundle (``fastlab-export RUN OUT --format onnx``) of an image model is run by onnxruntime,
without importing PyTorch, and answers the same JSON (``--tta`` needs PyTorch).

Prints a JSON list, one object per input, in the order given. Every input is read before any
is predicted, so a bad one ends the command with one line naming it, exit status 2, and nothing
printed on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

from fastlab.cli import run_cli
from fastlab.portable import OnnxPredictor, Predicting, is_onnx_bundle
from fastlab.portable.decode import check_top_k
from fastlab.portable.errors import InferenceError
from fastlab.rundir import atomic_path


def load_predictor(source: str, device: str = "cpu", threads: int | None = None) -> Predicting:
    """The predictor of ``source``: an ONNX bundle on onnxruntime (PyTorch is not imported), else
    the PyTorch ``Predictor`` of a run dir, ``model.pt`` or bundle. ``threads``: threads per
    forward pass (default: the runtime's own)."""
    if is_onnx_bundle(source):
        return OnnxPredictor.load(source, device, threads)
    import torch

    from fastlab.inference import Predictor

    if threads is not None:
        torch.set_num_threads(threads)
    return Predictor.load(source, device)


def predict_files(source: str, files: list[str], top_k: int = 3, device: str = "cpu",
                  texts: list[str] = (), masks: str | None = None, tta: int | None = None,
                  seed: int = 0) -> list[dict]:
    """One result per input of ``files`` and ``texts`` (see the module docstring); ``tta``: that
    many augmented passes per input, mixed with the plain one (``Predictor.predict_many``)."""
    check_top_k(top_k)  # before loading the model: a typo should fail at once
    if not files and not texts:
        raise InferenceError("nothing to predict: give input files, or --text 'the text'")
    predictor = load_predictor(source, device)
    if tta is not None:
        predictor.tta_aug(tta)  # a model without augmentation is refused before any input is read
    named = [n for f in files for n in predictor.task.items_from_file(f)]
    named += [n for t in texts for n in predictor.task.items_from_text(t)]
    rows = predictor.predict_many([x for _, x in named], top_k, tta=tta, seed=seed)
    results = [{**names, **r} for (names, _), r in zip(named, rows)]
    if masks is not None:
        write_masks(results, Path(masks))
    return results


def write_masks(results: list[dict], out: Path) -> None:
    """Each result's ``mask_png`` as ``out/<stem>_mask.png`` (its path in ``"mask_file"``)."""
    out.mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(results):
        if "mask_png" in r:
            path = out / f"{Path(str(r.get('file', i))).stem}_mask.png"
            with atomic_path(path) as tmp:
                tmp.write_bytes(base64.b64decode(r["mask_png"]))
            r["mask_file"] = str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-predict",
        description="Predict inputs (image, text or table files, or --text) with a trained run dir or an "
                    "exported bundle; prints JSON.")
    parser.add_argument("model", metavar="RUN_DIR_OR_BUNDLE", help="a fastlab-train run dir or a fastlab-export bundle")
    parser.add_argument("files", metavar="INPUTS", nargs="*",
                        help="image files (PNG, JPEG, ...), text files, or CSV/JSON tables, as the model's task reads")
    parser.add_argument("--text", action="append", default=[],
                        help="a text to predict (text models) or a JSON row (tabular models); repeatable")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to list (default 3)")
    parser.add_argument("--masks", metavar="DIR", help="segmentation: also write each mask as DIR/<stem>_mask.png")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--tta", metavar="N", type=int, nargs="?", const=4, default=None,
                        help="test-time augmentation (image classify and regress models): each image's answer is "
                             "the mean over N passes (default 4) augmented as in training, mixed with the plain "
                             "pass (beta 0.25); put it after the inputs, or give N")
    parser.add_argument("--seed", type=int, default=0, help="seeds --tta's augmentations (default 0)")
    # intermixed: options may come between the inputs (fastlab-predict RUN --tta 8 a.png b.png)
    args = parser.parse_intermixed_args(argv)
    results = run_cli("fastlab-predict", lambda: predict_files(args.model, args.files, args.top_k, args.device,
                                                               args.text, args.masks, args.tta, args.seed))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
