"""data.cache: images decoded once into a cache file (disk) or from their files every epoch (none)
train exactly as images held in memory do: the same batches, the same CPU history and weights, the
same resume. A cache is reused by a later run, made anew when a file changes or is added, never
read half-made after a build that died, and a run's memory does not grow with the data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastlab.config import TrainerConfig, to_run_config
from fastlab.data.images import cache as cache_mod
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.lazy import DiskImages
from fastlab.data.images.sources import FolderData, NameReData
from fastlab.data.images.stream import StreamLoader
from fastlab.data.place import Place, Storage
from fastlab.errors import ConfigError, DataError
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread
from tests.run.test_resume import same_run, stopped_then_resumed

ROOT = Path(__file__).resolve().parents[2]


def bunch(path: Path, cache_root: Path, mode: str, **kwargs) -> DataBunch:
    place = Place(Storage(cache_root=cache_root, workers=kwargs.pop("workers", 0)))
    return DataBunch.from_config(FolderData(path=str(path), size=16, bs=8, cache=mode, **kwargs), seed=3, place=place)


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(a, b) -> None:
    got_a, got_b = batches(a), batches(b)
    assert len(got_a) == len(got_b) == len(a)
    for (xa, ya), (xb, yb) in zip(got_a, got_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("mode,workers", [("disk", 0), ("none", 0), ("none", 2)])
def test_a_disk_or_file_loader_hands_out_the_memory_loaders_batches(tmp_path, image_dirs, mode, workers) -> None:
    # presized: training images at 20 px, validation images resized to 16 (their own cache)
    mem = bunch(image_dirs["per_class"], tmp_path, "memory", presize=20)
    lazy = bunch(image_dirs["per_class"], tmp_path, mode, presize=20, workers=workers)
    assert isinstance(lazy.train, StreamLoader) and type(mem.train).__name__ == "TensorLoader"
    assert (lazy.mean, lazy.std, lazy.size, lazy.classes) == (mem.mean, mem.std, mem.size, mem.classes)
    assert lazy.train_items == mem.train_items and lazy.valid_items == mem.valid_items
    assert len(lazy.train) == len(mem.train) and lazy.train.x.shape == mem.train.x.shape
    for _ in range(2):  # two passes: each draws its own order from the same seeded generator
        same_batches(mem.train, lazy.train)
    same_batches(mem.valid, lazy.valid)
    assert torch.equal(mem.train.generator.get_state(), lazy.train.generator.get_state())
    assert torch.equal(lazy.valid.x[[3, 1]], mem.valid.x[[3, 1]]) and torch.equal(lazy.train.x[:5], mem.train.x[:5])
    # the loader contract: device, channels_last, a batch read half-way and then a whole pass
    lazy.to("cpu")
    lazy.train.channels_last = True
    xb, _ = next(iter(lazy.train))
    assert xb.is_contiguous(memory_format=torch.channels_last) and xb.dtype == torch.float32
    lazy.train.channels_last = False
    it = iter(lazy.valid)
    next(it)
    del it
    same_batches(mem.valid, lazy.valid)


def test_cached_and_file_runs_train_as_the_memory_run(tmp_path, image_dirs) -> None:
    base = ["data=folder", f"data.path={image_dirs['per_class']}", f"paths.cache={tmp_path / 'cache'}",
            "data.bs=16"]
    with one_thread():
        train(compose_cfg(*base, "data.cache=memory"), tmp_path / "memory")
        built = cache_mod.stats.built
        train(compose_cfg(*base, "data.cache=disk"), tmp_path / "disk")
        assert cache_mod.stats.built == built + 1
        train(compose_cfg(*base, "data.cache=none", "trainer.workers=2"), tmp_path / "none")
    same_run(tmp_path / "memory", tmp_path / "disk")
    same_run(tmp_path / "memory", tmp_path / "none")


@pytest.mark.parametrize("mode", ["disk", "none"])
def test_a_stopped_cached_run_resumes_to_the_same_weights_and_history(tmp_path, image_dirs, mode) -> None:
    overrides = ["data=folder", f"data.path={image_dirs['per_class']}", f"paths.cache={tmp_path / 'cache'}",
                 f"data.cache={mode}", "data.bs=8", "trainer.checkpoint_every_n_steps=3", "trainer.workers=0"]
    with one_thread():
        train(compose_cfg(*overrides), tmp_path / "reference")
        run_dir, position = stopped_then_resumed(tmp_path, 14, *overrides)
    assert position["epoch"] == 1 and position["batch"] == 3  # 9 batches an epoch: saved after the 12th
    same_run(tmp_path / "reference", run_dir)


def copy_images(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_the_cache_is_reused_and_made_anew_when_a_file_changes_or_is_added(tmp_path, image_dirs, caplog) -> None:
    data = copy_images(image_dirs["per_class"], tmp_path / "images")
    caplog.set_level("INFO", logger="fastlab")
    first = bunch(data, tmp_path / "cache", "disk")
    assert "decoded 90 images into cache" in caplog.text
    before = (cache_mod.stats.built, cache_mod.stats.reused)
    caplog.clear()
    again = bunch(data, tmp_path / "cache", "disk")
    assert (cache_mod.stats.built, cache_mod.stats.reused) == (before[0], before[1] + 1)
    assert "reusing cache" in caplog.text and "decoded" not in caplog.text
    assert again.train.x.cache.path == first.train.x.cache.path
    # rewrite one image (other pixels, a later modification time): a new cache holds the new pixels
    item = first.train_items[0]
    Image.new("RGB", (16, 16), (255, 0, 0)).save(data / item)
    os.utime(data / item, ns=(time.time_ns() + 10**9,) * 2)
    changed = bunch(data, tmp_path / "cache", "disk")
    assert cache_mod.stats.built == before[0] + 1 and changed.train.x.cache.path != first.train.x.cache.path
    k = changed.train_items.index(item)
    assert changed.train.x[k][0].float().mean() > 250 and changed.train.x[k][1].float().mean() < 5
    # an added file: another key again
    shutil.copy(data / item, data / Path(item).parent / "added.png")
    added = bunch(data, tmp_path / "cache", "disk")
    assert cache_mod.stats.built == before[0] + 2 and len(added.train_items) + len(added.valid_items) == 91


def test_a_build_that_fails_midway_leaves_nothing_that_is_read(tmp_path, image_dirs, monkeypatch) -> None:
    real = cache_mod.decode_stream

    def dies_midway(*args, **kwargs):
        for i, x in enumerate(real(*args, **kwargs)):
            if i == 40:
                raise KeyboardInterrupt  # a kill the process could still see
            yield x

    monkeypatch.setattr(cache_mod, "decode_stream", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        bunch(image_dirs["per_class"], tmp_path, "disk")
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr(cache_mod, "decode_stream", real)
    built = cache_mod.stats.built
    same_batches(bunch(image_dirs["per_class"], tmp_path, "memory").train, bunch(image_dirs["per_class"], tmp_path, "disk").train)
    assert cache_mod.stats.built == built + 1


KILLED_BUILD = """
import itertools, sys, time
from pathlib import Path
from fastlab.data.images import decode
from fastlab.data.place import Place, Storage
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.sources import FolderData
real = decode.load_image
count = itertools.count()  # decode_stream's threads call slow at once: next() is one atomic step
def slow(path, size):
    if next(count) == 20:
        print("building", flush=True)
    time.sleep(0.05)
    return real(path, size)
decode.load_image = slow
DataBunch.from_config(FolderData(path=sys.argv[1], size=16, bs=8, cache="disk"), seed=3,
                      place=Place(Storage(cache_root=Path(sys.argv[2]))))
print("finished", flush=True)
"""


def test_a_build_killed_by_a_signal_is_built_again_and_never_read_half_made(tmp_path, image_dirs) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(image_dirs["per_class"]), str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert line == "building", proc.stderr.read()[-2000:]
    left = list(tmp_path.glob(".*.tmp"))
    assert left and not list(tmp_path.glob("*.json"))  # a half-written array under its temporary name, no .json
    built = cache_mod.stats.built
    disk = bunch(image_dirs["per_class"], tmp_path, "disk")
    assert cache_mod.stats.built == built + 1 and not any(p.exists() for p in left)
    info = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert info["n"] == 90 and info["bad"] == {}
    same_batches(bunch(image_dirs["per_class"], tmp_path, "memory").train, disk.train)


def test_auto_keeps_small_sets_in_memory_and_goes_to_disk_above_max_resident_gb(tmp_path, image_dirs) -> None:
    assert Storage(max_resident_gb=1.0).mode("auto", 1000, 64) == "memory"
    assert Storage(max_resident_gb=0.01).mode("auto", 1000, 64) == "disk"  # 12 MB > 10 MB
    assert Storage(max_resident_gb=0.0).mode("memory", 10**9, 512) == "memory"
    small = bunch(image_dirs["per_class"], tmp_path, "auto")
    assert isinstance(small.train.x, torch.Tensor) and not list(tmp_path.glob("*.npy"))
    big = DataBunch.from_config(FolderData(path=str(image_dirs["per_class"]), size=16, bs=8), seed=3,
                                place=Place(Storage(cache_root=tmp_path, max_resident_gb=0.0)))
    assert isinstance(big.train.x, DiskImages)
    same_batches(small.train, big.train)


def test_skipped_bad_files_are_kept_out_of_a_cache_and_stop_a_run_that_says_error(tmp_path, image_dirs) -> None:
    data = copy_images(image_dirs["per_class"], tmp_path / "images")
    (data / "one" / "broken.png").write_bytes(b"not an image")
    skipped = bunch(data, tmp_path / "cache", "disk", on_bad_file="skip")
    assert "one/broken.png" not in skipped.train_items + skipped.valid_items
    assert len(skipped.train_items) + len(skipped.valid_items) == 90
    same_batches(bunch(data, tmp_path / "cache", "memory", on_bad_file="skip").train, skipped.train)
    reused = cache_mod.stats.reused
    with pytest.raises(DataError, match="broken.png") as e:
        bunch(data, tmp_path / "cache", "disk")
    assert cache_mod.stats.reused == reused + 1 and "\n" not in str(e.value)
    with pytest.raises(DataError, match="broken.png"):  # error: the build stops at the file
        bunch(data, tmp_path / "other", "disk")
    assert not list((tmp_path / "other").glob("*.json"))
    files = bunch(data, tmp_path / "cache", "none", on_bad_file="skip")
    assert files.train_items == skipped.train_items


@pytest.mark.parametrize("override,fragment", [
    ("data.cache=ram", "data.cache='ram' is not known: use auto, memory, disk or none"),
    ("trainer.workers=-1", "trainer.workers must be an integer >= 0 or null, got -1"),
])
def test_bad_cache_settings_are_one_line(override, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as e:
        to_run_config(compose_cfg(override))
    assert "\n" not in str(e.value)
    assert TrainerConfig().workers is None and Storage().cache_root == Path("outputs/cache")


RSS = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from fastlab.data.place import Place, Storage
from fastlab.data.images.bunch import DataBunch
from fastlab.data.images.sources import NameReData
def anon_kb():
    return int(open("/proc/self/status").read().split("RssAnon:")[1].split()[0])
path, cache, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
data = DataBunch.from_config(NameReData(path=str(path), size=SIDE, bs=32, cache=mode),
                             place=Place(Storage(cache_root=cache)))
peak = anon_kb()
for loader in (data.train, data.valid):
    for xb, yb in loader:
        peak = max(peak, anon_kb())
print(peak)
"""
# glibc keeps freed blocks below thresholds that rise with each large free: resident memory would
# then measure the allocator's leftovers (tens of MiB, varying run to run) instead of what is
# alive. Fixed thresholds make it measure what is alive, to a fraction of a MiB.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
SIDE = 96


def write_images(folder: Path, n: int, side: int = SIDE) -> Path:
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        arr = torch.randint(0, 256, (side // 8, side // 8, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(arr).resize((side, side)).save(folder / f"c{i % 2}_{i}.jpg", quality=80)
    return folder


def peak_rss_kb(path: Path, cache: Path, mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", RSS.replace("SIDE", str(SIDE)), str(path), str(cache), mode],
                         cwd=ROOT, check=True, capture_output=True, text=True, env={**os.environ, **MALLOC}).stdout
    return int(out.split()[-1])


def test_training_memory_from_a_disk_cache_does_not_grow_with_the_data(tmp_path) -> None:
    small, big = write_images(tmp_path / "small", 1000), write_images(tmp_path / "big", 2000)
    for folder in (small, big):  # built here; the measured runs reuse the caches
        DataBunch.from_config(NameReData(path=str(folder), size=SIDE, cache="disk"),
                              place=Place(Storage(cache_root=tmp_path / "cache")))
    disk_small, disk_big = (peak_rss_kb(f, tmp_path / "cache", "disk") for f in (small, big))
    # 1,000 more images are 27 MiB more in memory; read from the cache, a pass holds a batch or two
    # (what grows is the list of file names and labels: about 1 KiB an image)
    assert disk_big - disk_small < 4 * 1024, (disk_small, disk_big)
    # the measurement sees data held in memory: the same pass over the big set in memory
    assert peak_rss_kb(big, tmp_path / "cache", "memory") - disk_big > 40 * 1024


def test_a_file_that_breaks_in_a_worker_stops_the_pass_with_one_line(tmp_path, image_dirs) -> None:
    data = copy_images(image_dirs["per_class"], tmp_path / "images")
    good = next((data / "two").glob("*.jpg")).read_bytes()
    (data / "two" / "truncated.jpg").write_bytes(good[: len(good) // 2])  # its header reads, its pixels do not
    # given statistics: no pass over the files before training, the workers meet the file first
    files = bunch(data, tmp_path / "cache", "none", workers=2, mean=[0.5] * 3, std=[0.25] * 3)
    with pytest.raises(DataError, match="truncated.jpg") as e:
        for _ in files.train:
            pass
        for _ in files.valid:
            pass
    assert "\n" not in str(e.value) and "data.on_bad_file=skip" in str(e.value)
