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


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
@pytest.mark.slow
def test_fault(case, workdir: Path) -> None:
    result = case(workdir)
    assert result.lost == "none"
