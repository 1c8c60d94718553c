"""Fault cases of the decode-once image cache (``data.cache=disk``): a cache damaged after it was
written (same size, other bytes), found by its checksums when a later run reuses it. Same form as
``cases.py``: each case asserts what it checks and returns a ``Result``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import NAMES, _digit_images
from tests.faults.cases import Result, assert_same_run, ok, run, train_cmd


def _digit_folder(folder: Path) -> Path:
    """90 PNGs of digits 0-2 in one folder per class (made once per fault run)."""
    if not folder.exists():
        for i, (img, label) in enumerate(_digit_images(30, (0, 1, 2))):
            path = folder / NAMES[label] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(path)
    return folder


def damaged_cache(tmp: Path) -> Result:
    images, cache = _digit_folder(tmp / "cache_digits"), tmp / "damaged_cache" / "cache"
    overrides = ("data=folder", f"data.path={images}", "data.cache=disk", f"paths.cache={cache}",
                 "schedule.epochs=1")
    clean = tmp / "damaged_cache" / "clean"
    ok(run(train_cmd(clean, *overrides), cwd=tmp))
    [npy] = cache.glob("*.npy")
    info = json.loads(npy.with_suffix(".json").read_text())
    size = npy.stat().st_size
    with open(npy, "r+b") as f:  # ten rows turned white in place: the same size, other bytes
        f.seek(info["offset"] + 20 * 3 * 16 * 16)
        f.write(b"\xff" * 10 * 3 * 16 * 16)
    assert npy.stat().st_size == size
    again = tmp / "damaged_cache" / "again"
    proc = run(train_cmd(again, *overrides), cwd=tmp)
    ok(proc)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "is damaged" in ln]
    assert len(lines) == 1 and str(npy) in lines[0] and "building it again" in lines[0], lines
    assert_same_run(clean, again)
    line = lines[0].split(" - ", 1)[-1].replace(str(cache), "<paths.cache>")
    return Result("damaged_cache", f"10 rows of the cache .npy overwritten (same size): rebuilt, none lost; "
                                   f"one warning: {line}; same weights and history.csv as a clean run")


CASES = [damaged_cache]
