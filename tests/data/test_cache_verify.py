"""A decode-once cache is checked against the checksums its build recorded before it is reused: a
cache damaged after it was written (same size, other bytes) or a ``.json`` of the wrong shape is
built again with one warning naming the file, and the run trains as a clean one does; where it
cannot be built again it is refused with one line. ``paths.cache`` that cannot be a folder is one
line too."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastlab.data.images import cache as cache_mod
from fastlab.errors import ConfigError
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread
from tests.data.test_cache import bunch, copy_images, same_batches
from tests.run.test_resume import same_run

ROOT = Path(__file__).resolve().parents[2]


def damage(npy: Path, first_row: int, rows: int) -> None:
    """Overwrite ``rows`` rows from ``first_row`` with white, in place: the same size, other bytes
    (what a bad disk or a partial copy leaves; the file's modification time does not matter)."""
    info = json.loads(npy.with_suffix(".json").read_text())
    row_bytes = 1
    for d in info["row_shape"]:
        row_bytes *= d
    size = npy.stat().st_size
    with open(npy, "r+b") as f:
        f.seek(info["offset"] + first_row * row_bytes)
        f.write(b"\xff" * rows * row_bytes)
    assert npy.stat().st_size == size


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "cache" in r.getMessage()]


def test_a_damaged_cache_is_built_again_and_the_run_trains_as_a_clean_one(tmp_path, image_dirs, caplog) -> None:
    base = ["data=folder", f"data.path={image_dirs['per_class']}", f"paths.cache={tmp_path / 'cache'}",
            "data.cache=disk", "data.bs=16", "schedule.epochs=1"]
    with one_thread():
        train(compose_cfg(*base), tmp_path / "clean")
    [npy] = (tmp_path / "cache").glob("*.npy")
    damage(npy, 30, 12)
    caplog.set_level("INFO", logger="fastlab")
    before = (cache_mod.stats.built, cache_mod.stats.reused, cache_mod.stats.damaged)
    with one_thread():
        train(compose_cfg(*base), tmp_path / "damaged")
    assert (cache_mod.stats.built, cache_mod.stats.reused, cache_mod.stats.damaged) == (
        before[0] + 1, before[1], before[2] + 1)
    [line] = warnings(caplog)
    assert f"cache {npy} is damaged (rows 0-89 differ from the checksum" in line and "building it again" in line
    same_run(tmp_path / "clean", tmp_path / "damaged")
    # the cache built again is whole: the next run reuses it without a word
    caplog.clear()
    bunch(image_dirs["per_class"], tmp_path / "cache", "disk")
    assert not warnings(caplog) and "reusing cache" in caplog.text


def test_a_damaged_header_is_found_and_a_large_cache_names_the_rows_at_fault(tmp_path, image_dirs, caplog,
                                                                            monkeypatch) -> None:
    monkeypatch.setattr(cache_mod, "CHUNK_BYTES", 10 * 3 * 16 * 16)  # ten rows per checksum: 9 chunks
    data = copy_images(image_dirs["per_class"], tmp_path / "images")
    bunch(data, tmp_path / "cache", "disk")
    [npy] = (tmp_path / "cache").glob("*.npy")
    assert len(json.loads(npy.with_suffix(".json").read_text())["checksums"]["chunks"]) == 9
    caplog.set_level("INFO", logger="fastlab")
    damage(npy, 47, 1)
    same_batches(bunch(data, tmp_path / "cache", "memory").train, bunch(data, tmp_path / "cache", "disk").train)
    assert warnings(caplog) == [f"cache {npy} is damaged (rows 40-49 differ from the checksum recorded when it "
                                "was built): building it again"]
    caplog.clear()
    with open(npy, "r+b") as f:  # the array's header says another shape
        f.seek(20)
        f.write(b"X")
    same_batches(bunch(data, tmp_path / "cache", "memory").train, bunch(data, tmp_path / "cache", "disk").train)
    assert warnings(caplog) == [f"cache {npy} is damaged (its header differs from the checksum recorded when it "
                                "was built): building it again"]


def opened(images: Path, root: Path) -> cache_mod.CacheFile:
    """The cache of ``images`` at 16 px in ``root``: built, or reused with its check running."""
    return cache_mod.image_cache(sorted(p for p in images.rglob("*") if p.is_file()), 16, "error", root)


def windows_of(chunks: int, monkeypatch) -> int:
    """Caches of ten rows a chunk, ``chunks`` a window (90 images: 9 chunks; one window is checked
    when it is opened, more by a thread as they are read)."""
    monkeypatch.setattr(cache_mod, "CHUNK_BYTES", 10 * 3 * 16 * 16)
    monkeypatch.setattr(cache_mod, "VERIFY_WINDOW", chunks * 10 * 3 * 16 * 16)
    return chunks


@pytest.fixture(params=[3, 1], ids=["windows of 3 chunks", "of 1 chunk"])
def window_chunks(request, monkeypatch) -> int:
    return windows_of(request.param, monkeypatch)


def damaged_at_row_63(tmp_path, image_dirs, window_chunks) -> tuple[Path, Path, np.ndarray]:
    """A cache of 90 images in 9 chunks of ten rows, row 63 (chunk 6) overwritten: the images,
    the ``.npy`` and the rows it held when whole."""
    images = copy_images(image_dirs["per_class"], tmp_path / "images")
    clean = opened(images, tmp_path / "cache").read(range(90))
    [npy] = (tmp_path / "cache").glob("*.npy")
    assert len(json.loads(npy.with_suffix(".json").read_text())["checksums"]["windows"]) == 9 // window_chunks
    damage(npy, 63, 1)
    return images, npy, clean


ROWS_60_69 = "rows 60-69 differ from the checksum recorded when it was built"


def test_a_read_waits_for_the_check_of_its_chunks_and_never_hands_out_a_damaged_row(
        tmp_path, image_dirs, caplog, window_chunks) -> None:
    images, npy, clean = damaged_at_row_63(tmp_path, image_dirs, window_chunks)
    caplog.set_level("INFO", logger="fastlab")
    reused = opened(images, tmp_path / "cache")
    assert "reusing cache" in caplog.text and not warnings(caplog)
    # rows of the chunks before the damaged one: checked whole, handed out, nothing built
    built = cache_mod.stats.built
    np.testing.assert_array_equal(reused.read(range(60)), clean[:60])
    assert not warnings(caplog) and cache_mod.stats.built == built
    # a read that reaches past it waits for the check, which finds it: built again, then read
    np.testing.assert_array_equal(reused.read([89, 5, 63]), clean[[89, 5, 63]])
    assert warnings(caplog) == [f"cache {npy} is damaged ({ROWS_60_69}): building it again"]
    assert cache_mod.stats.built == built + 1
    np.testing.assert_array_equal(reused.read(range(90)), clean)
    caplog.clear()
    np.testing.assert_array_equal(opened(images, tmp_path / "cache").read(range(90)), clean)
    assert not warnings(caplog)


def _read_all(cache: cache_mod.CacheFile, out) -> None:
    out.put((cache.read(range(cache.n)), cache_mod.stats.damaged))


def test_a_process_forked_before_the_check_ends_checks_for_itself(tmp_path, image_dirs, window_chunks) -> None:
    images, npy, clean = damaged_at_row_63(tmp_path, image_dirs, window_chunks)
    reused = opened(images, tmp_path / "cache")
    damaged = cache_mod.stats.damaged
    fork = multiprocessing.get_context("fork")
    out = fork.Queue()
    child = fork.Process(target=_read_all, args=(reused, out))
    child.start()
    rows, child_damaged = out.get(timeout=120)
    child.join(60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(rows, clean)
    assert child_damaged == damaged + 1  # the child's own check found it and built it again
    np.testing.assert_array_equal(reused.read(range(90)), clean)


def test_a_reused_cache_handed_to_another_process_is_checked_first(tmp_path, image_dirs, caplog,
                                                                   window_chunks) -> None:
    images, npy, clean = damaged_at_row_63(tmp_path, image_dirs, window_chunks)
    caplog.set_level("INFO", logger="fastlab")
    copy = pickle.loads(pickle.dumps(opened(images, tmp_path / "cache")))
    # pickling waited for the whole check: the damage was found and built again before it left
    assert warnings(caplog) == [f"cache {npy} is damaged ({ROWS_60_69}): building it again"]
    assert copy._check is None
    np.testing.assert_array_equal(copy.read(range(90)), clean)


@pytest.mark.parametrize("per", [9, 3], ids=["one window", "windows of 3 chunks"])
def test_a_window_checksum_that_differs_from_rows_matching_their_own_is_damage_too(
        tmp_path, image_dirs, caplog, monkeypatch, per) -> None:
    window_chunks = windows_of(per, monkeypatch)
    images = copy_images(image_dirs["per_class"], tmp_path / "images")
    clean = opened(images, tmp_path / "cache").read(range(90))
    [npy] = (tmp_path / "cache").glob("*.npy")
    meta = npy.with_suffix(".json")
    info = json.loads(meta.read_text())
    info["checksums"]["windows"][-1] ^= 1  # the .json's last window checksum, not the rows, is wrong
    meta.write_text(json.dumps(info))
    caplog.set_level("INFO", logger="fastlab")
    np.testing.assert_array_equal(opened(images, tmp_path / "cache").read(range(90)), clean)
    first = 90 - 10 * window_chunks
    assert warnings(caplog) == [f"cache {npy} is damaged (rows {first}-89 differ from the checksum recorded when "
                                "it was built): building it again"]
    assert json.loads(meta.read_text())["checksums"] == {**info["checksums"], "windows": [
        *info["checksums"]["windows"][:-1], info["checksums"]["windows"][-1] ^ 1]}


@pytest.mark.parametrize("fault", ["cut short", "gone"])
def test_an_array_cut_short_or_gone_beside_its_json_is_built_again(tmp_path, image_dirs, caplog, fault) -> None:
    memory = bunch(image_dirs["per_class"], tmp_path / "cache", "memory")
    bunch(image_dirs["per_class"], tmp_path / "cache", "disk")
    [npy] = (tmp_path / "cache").glob("*.npy")
    size = npy.stat().st_size
    if fault == "cut short":
        with open(npy, "r+b") as f:
            f.truncate(size - 100)
    else:
        npy.unlink()
    caplog.set_level("INFO", logger="fastlab")
    same_batches(memory.train, bunch(image_dirs["per_class"], tmp_path / "cache", "disk").train)
    why = f"{size - 100} bytes where its .json says {size}" if fault == "cut short" else \
        "cannot be read: No such file or directory"
    assert warnings(caplog) == [f"cache {npy} is damaged ({why}): building it again"]
    assert npy.stat().st_size == size


def _set(info: dict, key: str, value) -> dict:
    return {**info, key: value}


BAD_JSON = {
    "a list": lambda info: [info],
    "null": lambda info: None,
    "not JSON": lambda info: '{"format": "fastlab-image-cache", "n"',
    "no offset": lambda info: {k: v for k, v in info.items() if k != "offset"},
    "no checksums": lambda info: {k: v for k, v in info.items() if k != "checksums"},
    "bad a list": lambda info: _set(info, "bad", []),
    "offset a string": lambda info: _set(info, "offset", "128"),
    "another n": lambda info: _set(info, "n", info["n"] + 1),
    "chunks short": lambda info: _set(info, "checksums", {**info["checksums"], "chunks": []}),
    "unknown checksum": lambda info: _set(info, "checksums", {**info["checksums"], "kind": "md5"}),
}


@pytest.mark.parametrize("name", BAD_JSON)
def test_a_json_of_the_wrong_shape_is_damaged_and_built_again(tmp_path, image_dirs, caplog, name) -> None:
    memory = bunch(image_dirs["per_class"], tmp_path / "cache", "memory")
    bunch(image_dirs["per_class"], tmp_path / "cache", "disk")
    [meta] = (tmp_path / "cache").glob("*.json")
    bad = BAD_JSON[name](json.loads(meta.read_text()))
    meta.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    caplog.set_level("INFO", logger="fastlab")
    built = cache_mod.stats.built
    same_batches(memory.train, bunch(image_dirs["per_class"], tmp_path / "cache", "disk").train)
    assert cache_mod.stats.built == built + 1
    [line] = warnings(caplog)
    assert line.startswith(f"cache {meta} is damaged (") and line.endswith("): building it again"), line
    assert json.loads(meta.read_text())["checksums"]["kind"] == cache_mod.CHECKSUM  # whole again


def test_paths_cache_that_cannot_be_a_folder_is_one_line(tmp_path, image_dirs) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    for where in (a_file, a_file / "under"):
        with pytest.raises(ConfigError, match=f"paths.cache '{where}' cannot be a folder: '{a_file}' is a file"):
            bunch(image_dirs["per_class"], where, "disk")
    proc = subprocess.run(
        [sys.executable, "-m", "fastlab.cli.train", f"hydra.run.dir={tmp_path / 'run'}", "data=folder",
         f"data.path={image_dirs['per_class']}", f"paths.cache={a_file / 'under'}", "data.cache=disk",
         "data.size=16", "trainer.progress=none", "trainer.plots=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1] == (f"fastlab-train: error: paths.cache '{a_file / 'under'}' cannot be a folder: '{a_file}' "
                         "is a file; set paths.cache to a folder (or move the file)")


BUILD = """
import resource, sys
from pathlib import Path
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.sources import FolderData
from fastlab.data.place import Place, Storage
from fastlab.errors import FastlabError
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    data = DataBunch.from_config(FolderData(path=sys.argv[1], size=16, bs=8, cache="disk"),
                                 place=Place(Storage(cache_root=Path(sys.argv[2]))))
    data.mean  # reads every row: a cache of more than one window is checked as it is read
except FastlabError as e:
    sys.exit(f"error: {e}")
"""


def test_a_damaged_cache_that_cannot_be_built_again_is_refused_with_one_line(tmp_path, image_dirs) -> None:
    cache = tmp_path / "cache"
    bunch(image_dirs["per_class"], cache, "disk")
    [npy] = cache.glob("*.npy")
    damage(npy, 3, 1)
    # a file-size limit below the array's size: the build fails as on a full disk
    proc = subprocess.run([sys.executable, "-c", BUILD, str(image_dirs["per_class"]), str(cache),
                           str(npy.stat().st_size // 2)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cache {npy} is damaged (rows 0-89 differ from the checksum") and \
        "cannot be built again" in line and "run again with room in paths.cache" in line, line
    # nothing damaged is left to be read: no .json, and the next run with room builds it whole
    assert not list(cache.glob("*.json")) and not list(cache.glob(".*.tmp"))
    built = cache_mod.stats.built
    bunch(image_dirs["per_class"], cache, "disk")
    assert cache_mod.stats.built == built + 1
