"""What makes a disk cache under ``paths.cache`` another one: a removed file, another
``data.size`` or ``data.presize``, another decoder version; and the same files at the same
side find the cache again. Parallel trials building one cache wait for one build: two processes
ask for it at once, one decodes, the other waits on the build's lock and reuses what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastlab.data.images import cache as cache_mod
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.sources import FolderData
from fastlab.data.place import Place, Storage
from tests.conftest import one_thread

ROOT = Path(__file__).resolve().parents[2]


def disk_bunch(path: Path, root: Path, size: int = 16, presize: int | None = None) -> DataBunch:
    cfg = FolderData(path=str(path), size=size, presize=presize, bs=8, cache="disk")
    return DataBunch.from_config(cfg, seed=3, place=Place(Storage(cache_root=root, workers=0)))


def caches(root: Path) -> set[str]:
    """The finished caches in ``root`` (a ``.json`` says a cache is whole)."""
    return {p.stem for p in root.glob("*.json")}


def counts() -> tuple[int, int]:
    return cache_mod.stats.built, cache_mod.stats.reused


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def test_a_removed_file_makes_another_cache_and_putting_it_back_finds_the_first(tmp_path, image_dirs) -> None:
    data = tmp_path / "images"
    shutil.copytree(image_dirs["per_class"], data)  # copytree keeps modification times (copy2)
    root = tmp_path / "cache"
    first = disk_bunch(data, root)
    key = first.train.x.cache.key
    moved = data / first.valid_items[0]
    aside = tmp_path / moved.name
    shutil.move(moved, aside)  # a rename keeps its size and modification time
    built, reused = counts()
    fewer = disk_bunch(data, root)
    assert counts() == (built + 1, reused)
    assert fewer.train.x.cache.key != key and fewer.train.x.cache.n == 89 and caches(root) == {key, fewer.train.x.cache.key}
    assert first.valid_items[0] not in fewer.valid_items + fewer.train_items
    shutil.move(aside, moved)
    back = disk_bunch(data, root)
    assert counts() == (built + 1, reused + 1) and back.train.x.cache.key == key


def test_another_size_or_presize_makes_another_cache_and_the_same_one_is_reused(tmp_path, image_dirs) -> None:
    data, root = image_dirs["per_class"], tmp_path / "cache"
    at16 = disk_bunch(data, root, size=16)
    built, reused = counts()
    at20 = disk_bunch(data, root, size=20)
    assert counts() == (built + 1, reused) and at20.train.x.cache.key != at16.train.x.cache.key
    assert at20.train.x.cache.row_shape == (3, 20, 20)
    # presize=24: training images decoded at 24, validation images resized to 16 into a cache keyed
    # by its parent's; presize=20 finds the size-20 cache and resizes its rows into another
    pre24 = disk_bunch(data, root, size=16, presize=24)
    assert counts() == (built + 3, reused)
    pre20 = disk_bunch(data, root, size=16, presize=20)
    assert counts() == (built + 4, reused + 1)  # reused: the size-20 decode; built: its rows at 16
    assert pre20.train.x.cache.key == at20.train.x.cache.key != pre24.train.x.cache.key
    assert pre20.valid.x.cache.key != pre24.valid.x.cache.key and pre20.valid.x.cache.row_shape == (3, 16, 16)
    # size=12 with presize=20: the same decode, another resized cache
    pre20_12 = disk_bunch(data, root, size=12, presize=20)
    assert counts() == (built + 5, reused + 2) and pre20_12.valid.x.cache.row_shape == (3, 12, 12)
    assert len(caches(root)) == 6
    # asking again for each finds it: nothing decoded or resized twice
    for size, presize in ((16, None), (20, None), (16, 24), (16, 20), (12, 20)):
        disk_bunch(data, root, size=size, presize=presize)
    assert counts()[0] == built + 5 and len(caches(root)) == 6


def test_another_decoder_version_makes_another_cache(tmp_path, image_dirs, monkeypatch) -> None:
    data, root = image_dirs["per_class"], tmp_path / "cache"
    old = disk_bunch(data, root)
    assert json.loads((root / f"{old.train.x.cache.key}.json").read_text())["decoder"] == cache_mod.DECODER_VERSION
    monkeypatch.setattr(cache_mod, "DECODER_VERSION", cache_mod.DECODER_VERSION + 1)  # a decoder that changed
    built, reused = counts()
    new = disk_bunch(data, root)
    assert counts() == (built + 1, reused) and new.train.x.cache.key != old.train.x.cache.key
    assert json.loads((root / f"{new.train.x.cache.key}.json").read_text())["decoder"] == cache_mod.DECODER_VERSION
    assert torch.equal(new.train.x[:4], old.train.x[:4])  # this stand-in decodes the same pixels


# Process A decodes; as its first image is read it says "building" and waits for a line on stdin.
# Process B asks for the same cache: as it reaches the cache's lock it says whether the lock was
# taken ("busy"), then waits on it. Each ends with what its cache did, as one JSON line.
TRIAL = """
import contextlib, fcntl, json, sys, threading
from pathlib import Path
from fastlab.data.images import cache, decode
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.sources import FolderData
from fastlab.data.place import Place, Storage

role, data, root = sys.argv[1:4]
if role == "first":
    real, first = decode.load_image, threading.Lock()
    def held(path, size):
        if first.acquire(blocking=False):  # the first image only: the build is under way
            print("building", flush=True)
            sys.stdin.readline()
        return real(path, size)
    decode.load_image = held
else:
    real_lock = cache._locked
    @contextlib.contextmanager
    def probed(path):
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                busy = False
            except BlockingIOError:
                busy = True
        print(json.dumps({"busy": busy}), flush=True)
        with real_lock(path):
            yield
    cache._locked = probed
bunch = DataBunch.from_config(FolderData(path=data, size=16, bs=8, cache="disk"), seed=3,
                              place=Place(Storage(cache_root=Path(root), workers=0)))
print(json.dumps({"built": cache.stats.built, "reused": cache.stats.reused, "decoded": cache.stats.decoded,
                  "key": bunch.train.x.cache.key, "first": bunch.train.x[:2].tolist()}), flush=True)
"""


def trial(role: str, data: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", TRIAL, role, str(data), str(root)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_trials_building_one_cache_wait_for_one_build(tmp_path, image_dirs) -> None:
    data, root = image_dirs["per_class"], tmp_path / "cache"
    a = trial("first", data, root)
    b = None
    try:
        assert a.stdout.readline().strip() == "building", a.stderr.read()[-2000:]
        assert not caches(root)  # A holds the lock and has written nothing whole yet
        b = trial("second", data, root)
        probe = b.stdout.readline().strip()
        assert probe and json.loads(probe) == {"busy": True}, probe + b.stderr.read()[-2000:]
        a.stdin.write("go\n")
        a.stdin.flush()
        out_a, err_a = a.communicate(timeout=120)
        out_b, err_b = b.communicate(timeout=120)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert a.returncode == 0 and b.returncode == 0, err_a[-2000:] + err_b[-2000:]
    got_a, got_b = json.loads(out_a.strip().splitlines()[-1]), json.loads(out_b.strip().splitlines()[-1])
    assert (got_a["built"], got_a["reused"], got_a["decoded"]) == (1, 0, 90)
    assert (got_b["built"], got_b["reused"], got_b["decoded"]) == (0, 1, 0)  # waited, then reused
    assert got_a["key"] == got_b["key"] and caches(root) == {got_a["key"]}
    assert got_a["first"] == got_b["first"]
