"""The fault-injection suite: every case in ``cases.CASES`` must end in a correct resume or one
clear error, with nothing lost (see ``scripts/fault_report.py`` for the same cases as a table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.suite import CASES


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    # One folder for the module: cases share the uninterrupted reference runs they compare to.
    return tmp_path_factory.mktemp("faults")


def half_written(folder: Path) -> list[str]:
    """Files a writer never finished: fastlab writes ``.<name>.<pid>[.<hex>].tmp`` beside a file
    and renames it into place once whole, so one still there after a case is a write that was
    neither completed nor cleaned up on the next start."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
@pytest.mark.slow
def test_fault(case, workdir: Path) -> None:
    before = set(half_written(workdir))
    result = case(workdir)  # the case asserts its own outcome: a resume equal to an unbroken run, or one error
    assert result.outcome and "\n" not in result.outcome, result
    # Nothing lost on top of what the case checks: no half-written file left behind by it.
    assert sorted(set(half_written(workdir)) - before) == [], result
