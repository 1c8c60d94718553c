"""scripts/bench.py --quick: every part runs and the table and JSON come out (figures are not
judged here: speed targets are checked by reading a full run's output, never by timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("loop cnn cpu", "fastlab-train defaults", "lr_find", "sweep of 4 trials", "memory"):
        assert row in proc.stdout
    res = json.loads(out.read_text())
    assert res["loop"][0]["ratio"] > 0 and res["process"]["startup"] > 0 and res["process"]["train"] > 0 and res["process"]["rest"] > 0
    assert res["sweep"]["basic"]["trials_per_min"] > 0 and res["sweep"]["speedup"] > 0
    assert res["process"]["peak_rss_mb"] > 50
