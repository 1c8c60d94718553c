"""``fastlab-predict RUN_DIR_OR_BUNDLE FILES... [--top-k K]``: labels and probabilities as JSON.

Prints a JSON list with one object per file, in the order given:
``{"file": ..., "label": ..., "top": [{"label": ..., "prob": ...}, ...]}`` (a regression model
gives ``"value"`` and an empty ``top``). Every file is decoded before any is predicted, so a bad
file ends the command with one line naming it, exit status 2, and nothing printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from fastlab.errors import FastlabError
from fastlab.inference import Predictor, check_top_k


def predict_files(source: str, files: list[str], top_k: int = 3, device: str = "cpu") -> list[dict]:
    check_top_k(top_k)  # before loading the model: a typo should fail at once
    predictor = Predictor.load(source, device)
    return [{"file": f, **r} for f, r in zip(files, predictor.predict_many(files, top_k))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-predict",
        description="Predict image files with a trained run dir or an exported bundle; prints JSON.")
    parser.add_argument("model", metavar="RUN_DIR_OR_BUNDLE", help="a fastlab-train run dir or a fastlab-export bundle")
    parser.add_argument("files", metavar="FILES", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to list (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    args = parser.parse_args(argv)
    try:
        results = predict_files(args.model, args.files, args.top_k, args.device)
    except FastlabError as e:
        print(f"fastlab-predict: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
