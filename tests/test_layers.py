"""No import circle among fastlab's modules (``scripts/import_report.py``, the measure the design
doc quotes). The layers themselves are import-linter's contract in pyproject.toml, which
``scripts/test.sh`` checks with ``lint-imports`` before the tests run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_circle_and_no_import_climbs_the_layers():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_report.py")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "import circles: 0", out.stdout
    assert "imports that climb the layers: 0" in lines, out.stdout
