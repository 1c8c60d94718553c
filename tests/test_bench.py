"""scripts/bench.py, bench_aug.py and bench_data.py --quick, and bench_cache_check.py on two
sizes: every part runs and the table and JSON come out (figures are not judged here: speed targets are checked by reading a full run's
output, never by timed tests)."""

from __future__ import annotations

import json
import re
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


def test_bench_aug_quick_prints_every_side_at_both_sizes(tmp_path: Path) -> None:
    # No --fastai-python: fastai's rows say why they are missing, the others must have figures.
    out = tmp_path / "bench_aug.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_aug.py"), "--quick", "--device", "cpu",
                           "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for size in (32, 128):
        for side in ("fastlab", "torchvision"):  # a row with a figure: "| cpu | 32 px | fastlab | 1234 (...)"
            assert re.search(rf"\| cpu +\| {size} px +\| {side} +\| [1-9]\d* ", proc.stdout), proc.stdout
        assert re.search(rf"\| cpu +\| {size} px +\| fastai +\| unavailable: no --fastai-python given", proc.stdout)
    rows = json.loads(out.read_text())["rows"]
    got = {(r["size"], r["side"]): r for r in rows}
    for size in (32, 128):
        assert got[size, "fastlab"]["images_per_s"] > 0 and got[size, "torchvision"]["images_per_s"] > 0
        assert got[size, "torchvision"]["ratio"] > 0 and "unavailable" in got[size, "fastai"]


def test_bench_data_quick_prints_every_side_and_the_memory_growth(tmp_path: Path) -> None:
    # No --fastai-python: fastai's rows say why they are missing, the others must have figures.
    out = tmp_path / "bench_data.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_data.py"), "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for side in ("fastlab disk", "fastlab memory", "fastlab none", "torch DataLoader"):
        assert re.search(rf"\| small \(64 px\) +\| {side} +\| 400 +\| [\d.]+ ", proc.stdout), proc.stdout
    assert re.search(r"\| small \(64 px\) +\| fastai +\| 400 +\| unavailable: no --fastai-python given", proc.stdout)
    assert "peak RSS at 2N - at N" in proc.stdout and "threads (" in proc.stdout
    res = json.loads(out.read_text())
    rows = {(r["set"], r["side"], r["n"]): r for r in res["rows"]}
    disk = rows["small", "fastlab disk", 400]
    # built once, then reused (and checked) five times; a cache of one window is checked as it is
    # opened, so no thread checked beside the reader
    assert disk["built"] == 1 and disk["reused"] == 5 and disk["epoch_s"] > 0 and disk["peak_rss_mb"] > 50
    assert 0 < disk["verify_s"] and disk["check_s"] == 0
    assert 0 < disk["verify_epoch_s"] <= min(disk["epoch_s"], disk["warm_epoch_s"])
    assert rows["pets", "torch DataLoader", 120]["images"] > 0 and res["decode"]["threads"] > 0
    assert not (tmp_path / "outputs" / "bench" / "caches").exists()  # the timed builds' caches are removed


def test_bench_cache_check_measures_a_cache_of_one_window_and_one_of_two(tmp_path: Path) -> None:
    out = tmp_path / "bench_cache_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_cache_check.py"), "--sizes", "64,256",
                           "--threads", "2", "--repeats", "2", "--json", str(out), "--root",
                           str(tmp_path / "data-quick")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["size"]: r for r in json.loads(out.read_text())["rows"]}
    assert "verify % of epoch" in proc.stdout and rows[64]["reused"] == rows[256]["reused"] == 2
    # 5 MB: one window, checked as it is opened; 79 MB: two, the second by the thread beside the reader
    assert rows[64]["windows"] == 1 and rows[64]["check_s"] == 0 and rows[64]["verify_s"] > 0
    assert rows[256]["windows"] == 2 and rows[256]["check_s"] > 0 and rows[256]["verify_s"] > 0
