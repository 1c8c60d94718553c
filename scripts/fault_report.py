"""Run every fault case (tests/faults/suite.py) and print a table: case, outcome, data lost.

    python scripts/fault_report.py [--only NAME ...]

Exits non-zero when a case fails its checks. The same cases run under pytest in
``tests/faults`` (part of ``scripts/test.sh``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.cases import Result  # noqa: E402  (after the path is set)
from tests.faults.suite import CASES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or c.__name__ in args.only]
    results: list[tuple[Result, float]] = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="fastlab-faults-") as tmp:
        for case in cases:
            start = time.perf_counter()
            try:
                result = case(Path(tmp))
            except Exception as e:  # a failed check: report it and go on to the next case
                failed += 1
                last = traceback.format_exception_only(e)[-1].strip().splitlines()[0][:150]
                result = Result(case.__name__, f"FAILED: {last}", "see the failure")
            results.append((result, time.perf_counter() - start))
            print(f"{case.__name__}: done in {results[-1][1]:.1f} s", file=sys.stderr, flush=True)
    width = max(len(r.case) for r, _ in results)
    print(f"\n| {'case':<{width}} | outcome | data lost | seconds |")
    print(f"|{'-' * (width + 2)}|---------|-----------|---------|")
    for r, seconds in results:
        print(f"| {r.case:<{width}} | {r.outcome} | {r.lost} | {seconds:.1f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
