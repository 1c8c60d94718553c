"""``fastlab-interpret RUN_DIR``: the interpretation of a trained model over its validation set
(``fastlab.interpret``), written to ``RUN_DIR/interpret/``."""

from __future__ import annotations

import argparse

from fastlab.cli import run_cli
from fastlab.interpret import interpret_run


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-interpret",
        description="What a trained run gets wrong, in its task's terms (top losses, confusion matrix, worst "
                    "masks, largest errors, hardest texts), written to RUN_DIR/interpret/.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run dir written by fastlab-train (with model.pt)")
    parser.add_argument("--k", type=_positive_int, default=9, help="how many top losses to show (default 9)")
    parser.add_argument("--min-val", type=_positive_int, default=1,
                        help="least count of a confused pair to report (default 1)")
    args = parser.parse_args(argv)
    run_cli("fastlab-interpret", lambda: interpret_run(args.run_dir, args.k, args.min_val))


if __name__ == "__main__":
    main()
