"""Image folders bigger than memory: fastlab's data.cache against a plain torch DataLoader and fastai.

    .venv/bin/python scripts/bench_data.py [--quick] [--json outputs/bench/bench_data.json]
        [--fastai-python /tmp/venv-fastai/bin/python] [--root outputs/bench/data]

Two generated JPEG folders (made once under ``--root``, seeded, 10 class folders each; reused by
later runs): ``small``, 20,000 images of 160 px decoded at 128, and ``pets``, 2,000 photos of
Pets' size (400-500 x 300-500 px) decoded at 224. Each is measured at N (half of it, a folder of
links) and 2N images, split 80/20, batches of 64, on the CPU. Every row runs in a process of its
own, so its peak resident memory is its own:

- ``fastlab disk``: ``data.cache=disk`` into a fresh cache: ``prepare`` is the build (decode on
  every core into the cache, then the channel statistics streamed over it), ``reuse`` a second
  ``DataBunch.from_config`` that finds the cache (and streams the statistics again), then its
  first training epoch, five times. ``verify`` (the median) is what checking the reused cache
  against its checksums cost the reader: a cache of one window (64 MiB) is hashed as it is opened;
  a larger one by a thread beside the statistics pass (``check``: its CPU seconds, on another
  core), the reader waiting only for windows the thread had not finished. It is shown as a share
  of the process's first epoch (what a run reads after opening its cache), of the later reuses'
  first epochs (the median: the process warm) and of the fastest epoch (the loader warm too: the
  strictest share).
- ``fastlab memory``: ``data.cache=memory``: the whole set decoded into one tensor, then its
  statistics.
- ``fastlab none``: ``data.cache=none``: ``prepare`` is listing the files and the statistics (one
  decode of the training images on every core; a pretrained body's statistics would spare it),
  then every epoch decodes and resizes from the files in two worker processes
  (``trainer.workers=2``).
- ``torch DataLoader``: what a user writes first: torchvision's ``ImageFolder`` (Pillow decode,
  ``convert("RGB")``) with ``Resize((S, S))`` and ``PILToTensor``, in a ``DataLoader(batch_size=64,
  shuffle=True, num_workers=2)``, each batch scaled and normalised as fastlab's are.
- ``fastai``: ``ImageDataLoaders.from_folder(valid_pct=0.2, item_tfms=Resize(S, method="squish"),
  batch_tfms=Normalize, num_workers=2)`` in another interpreter (``--fastai-python``, made by
  ``scripts/fastai_venv.sh``); without one its rows say why they are missing.

An epoch is one pass over the training loader with no model (the data path alone). ``peak RSS``
is the row's own process (``VmHWM``), ``workers`` the largest of its worker processes (sampled
during the epoch). ``--quick`` makes tiny folders and measures pets at 2N only. A last
table decodes the pets photos with threads (fastlab's ``decode_stream``), worker processes and one
thread, to show which parallelises Pillow better here. Figures are printed, never asserted; the
load average at the start and the end says how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper module

from bench_report import markdown_table, write_figures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FASTAI_HELPER = Path(__file__).resolve().parent / "bench_data_fastai.py"
BS, CLASSES, SEED = 64, 10, 0
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# name: (2N images, generated side range (w lo, w hi, h lo, h hi), decoded side)
FULL = {"small": (20_000, (160, 160, 160, 160), 128), "pets": (2_000, (400, 500, 300, 500), 224)}
QUICK = {"small": (400, (160, 160, 160, 160), 64), "pets": (120, (400, 500, 300, 500), 96)}
SIDES = ("fastlab disk", "fastlab memory", "fastlab none", "torch DataLoader", "fastai")


# ------------------------------------------------------------------------------ the folders


def make_folder(root: Path, n: int, sides: tuple[int, int, int, int]) -> Path:
    """``root/full/<class>/<i>.jpg``: ``n`` seeded JPEGs (smooth random colour fields, which
    decode like photos do, not like flat colour), and ``root/half`` with links to the first half.
    Made once: a folder whose marker file says it is complete is reused."""
    marker = root / "complete.json"
    want = {"n": n, "sides": list(sides), "seed": SEED}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return root
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(SEED)
    for part in ("full", "half"):
        for c in range(CLASSES):
            (root / part / f"c{c}").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(n):
        w, h = int(rng.integers(sides[0], sides[1] + 1)), int(rng.integers(sides[2], sides[3] + 1))
        field = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        path = root / "full" / f"c{i % CLASSES}" / f"{i:06d}.jpg"
        Image.fromarray(field).resize((w, h), Image.Resampling.BICUBIC).save(path, quality=90)
        if i < n // 2:
            link = root / "half" / f"c{i % CLASSES}" / path.name
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
    marker.write_text(json.dumps(want))
    print(f"made {n} images in {root} in {time.perf_counter() - start:.0f} s", flush=True)
    return root


# --------------------------------------------------------------------- one row, in its own process


def hwm_kb(pid: str = "self") -> int:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0])
    except (OSError, IndexError):  # a worker that has just exited
        return 0


def workers_hwm_kb() -> int:
    """The largest peak RSS among this process's living children (a loader's workers)."""
    pids = []
    for children in Path("/proc/self/task").glob("*/children"):
        pids += children.read_text().split()
    return max((hwm_kb(p) for p in pids), default=0)


VERIFY_REPEATS = 5  # reuses of a disk row, each with its first epoch (and as many epochs more)
WORKERS_KB = [0]  # sampled while an epoch runs: the workers are gone by the end


def peaks() -> dict:
    main, workers = hwm_kb() / 1024, WORKERS_KB[0] / 1024
    return {"peak_rss_mb": round(main, 1), "workers_peak_mb": round(workers, 1) if workers else None}


def epoch(batches, normalize=None) -> tuple[float, int]:
    """Seconds for one pass and the images it handed out (the workers' memory sampled on the way)."""
    start, n = time.perf_counter(), 0
    for i, (xb, _) in enumerate(batches):
        if normalize is not None:
            xb = normalize(xb)
        n += len(xb)
        if i % 16 == 1:
            WORKERS_KB[0] = max(WORKERS_KB[0], workers_hwm_kb())
    return time.perf_counter() - start, n


def row_fastlab(spec: dict) -> dict:
    import torch

    from fastlab.data.images import cache
    from fastlab.data.images.bunch import DataBunch
    from fastlab.data.images.sources import FolderData
    from fastlab.data.place import Place, Storage

    torch.set_num_threads(spec["threads"])
    cfg = FolderData(path=spec["path"], size=spec["size"], bs=BS, cache=spec["mode"], valid_pct=0.2)
    out = {}
    place = Place(Storage(cache_root=Path(spec["cache"]), workers=2))
    start = time.perf_counter()
    data = DataBunch.from_config(cfg, place=place)
    data.mean  # noqa: B018 - the channel statistics (deferred for disk and none) belong to prepare
    out["prepare_s"] = time.perf_counter() - start
    if spec["mode"] == "disk":
        reuses, verifies, checks, firsts = [], [], [], []
        for _ in range(VERIFY_REPEATS):
            start, verify0, check0 = time.perf_counter(), cache.stats.verify_s, cache.stats.check_s
            data = DataBunch.from_config(cfg, place=place)
            data.mean  # noqa: B018 - reads every row: the check has ended by the time it returns
            reuses.append(time.perf_counter() - start)
            verifies.append(cache.stats.verify_s - verify0)  # what the check cost the reader
            checks.append(cache.stats.check_s - check0)  # the check's own hashing, beside it
            firsts.append(epoch(data.train))  # the first epoch read from the reused cache
        out["reuse_s"], out["verify_s"], out["check_s"] = reuses[0], median(verifies), median(checks)
        out["built"], out["reused"] = cache.stats.built, cache.stats.reused
        # the process's first epoch is what a run reads after opening its cache; the shares are also
        # taken against the later reuses' first epochs and the fastest epoch, once the process and
        # the loader are warm: a first epoch's start-up must not make the check look cheap
        (seconds, n), out["warm_epoch_s"] = firsts[0], median([s for s, _ in firsts[1:]])
        out["verify_epoch_s"] = min([s for s, _ in firsts] + [epoch(data.train)[0] for _ in range(VERIFY_REPEATS)])
    else:
        seconds, n = epoch(data.train)
    return {**out, "epoch_s": seconds, "images": n, **peaks()}


def share(r: dict) -> str:
    """The verify's share of the row's first epoch, of a warm process's first epoch and of its
    fastest epoch, e.g. ``4.1%, 7.0%, 9.8%``."""
    return ", ".join(f"{100 * r['verify_s'] / r[e]:.1f}%" for e in ("epoch_s", "warm_epoch_s", "verify_epoch_s"))


def row_torch(spec: dict) -> dict:
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    size = spec["size"]
    folder = datasets.ImageFolder(spec["path"], transform=transforms.Compose(
        [transforms.Resize((size, size)), transforms.PILToTensor()]))
    order = torch.randperm(len(folder), generator=torch.Generator().manual_seed(42)).tolist()
    train = Subset(folder, order[:len(folder) - int(0.2 * len(folder))])
    dl = DataLoader(train, batch_size=BS, shuffle=True, num_workers=2, drop_last=True)
    prepare = time.perf_counter() - start
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    seconds, n = epoch(dl, lambda xb: (xb.float().div_(255) - mean) / std)
    return {"prepare_s": prepare, "epoch_s": seconds, "images": n, **peaks()}


def row_decode(spec: dict) -> dict:
    """Images per second decoding ``spec["path"]``'s photos with threads, processes, one thread."""
    from fastlab.data.images.decode import decode_stream, decode_workers, load_image

    paths = sorted(Path(spec["path"]).rglob("*.jpg"))
    size, workers = spec["size"], decode_workers()
    out = {"images": len(paths), "workers": workers}
    for name in ("threads", "processes", "one thread"):
        start = time.perf_counter()
        if name == "threads":
            for _ in decode_stream(paths, size, summary=False):
                pass
        elif name == "processes":
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(load_image, paths, [size] * len(paths), chunksize=16):
                    pass
        else:
            for p in paths:
                load_image(p, size)
        out[name] = len(paths) / (time.perf_counter() - start)
    return out


ROWS = {"fastlab": row_fastlab, "torch": row_torch, "decode": row_decode}


def run_row(kind: str, spec: dict, python: str = sys.executable, script: Path = Path(__file__)) -> dict:
    """One row in a fresh process; a failure is the row's reason, not the benchmark's end."""
    proc = subprocess.run([python, str(script), "--row", kind, json.dumps(spec)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"unavailable": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------ the run


def measure_set(name: str, root: Path, n: int, size: int, args, cache_root: Path) -> list[dict]:
    rows = []
    parts = (("half", n // 2), ("full", n)) if not (args.quick and name == "pets") else (("full", n),)
    for part, count in parts:
        path = str(root / part)
        common = {"path": path, "size": size, "threads": args.threads}
        for side in SIDES:
            if side.startswith("fastlab"):
                mode = side.split()[1]
                # a fresh cache folder per row: the build is what is timed
                res = run_row("fastlab", {**common, "mode": mode, "cache": str(cache_root / f"{name}-{part}-{time.time_ns()}")})
            elif side == "torch DataLoader":
                res = run_row("torch", common)
            elif args.fastai_python:
                res = run_row("fastai", common, args.fastai_python, FASTAI_HELPER)
            else:
                res = {"unavailable": "no --fastai-python given"}
            rows.append({"set": name, "side": side, "n": count, "size": size, **res})
            print(f"  {name} {count} {side}: {summary(rows[-1])}", flush=True)
    return rows


def summary(r: dict) -> str:
    if "unavailable" in r:
        return f"unavailable: {r['unavailable']}"
    verify = (f", verify {1000 * r['verify_s']:.2f} ms ({share(r)} of the first epoch, a warm first epoch, the "
              f"fastest; a thread's check beside it {1000 * r['check_s']:.2f} ms)" if "verify_s" in r else "")
    return (f"prepare {r['prepare_s']:.1f} s, epoch {r['epoch_s']:.1f} s ({r['images'] / r['epoch_s']:.0f} img/s), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB{verify}")


def table(rows: list[dict]) -> str:
    out = [["set", "side", "images", "prepare s", "reuse s", "verify ms (% of first, warm first, fastest epoch)",
            "check beside ms", "epoch s", "epoch img/s", "peak RSS MB", "workers MB"]]
    for r in rows:
        head = [f"{r['set']} ({r['size']} px)", r["side"], str(r["n"])]
        if "unavailable" in r:
            out.append(head + [f"unavailable: {r['unavailable']}"] + [""] * 7)
            continue
        verify = f"{1000 * r['verify_s']:.2f} ({share(r)})" if "verify_s" in r else ""
        check = f"{1000 * r['check_s']:.2f}" if "check_s" in r else ""
        out.append(head + [f"{r['prepare_s']:.1f}", f"{r['reuse_s']:.2f}" if "reuse_s" in r else "", verify, check,
                           f"{r['epoch_s']:.1f}", f"{r['images'] / r['epoch_s']:.0f}", f"{r['peak_rss_mb']:.0f}",
                           f"{r['workers_peak_mb']:.0f}" if r.get("workers_peak_mb") else ""])
    return markdown_table(out)


def growth(rows: list[dict]) -> str:
    """Peak RSS at 2N less at N, per set and side: what holding the data costs."""
    out = [["set", "side", "N", "peak RSS at 2N - at N (MB)", "the decoded images at N (MB)"]]
    for r2 in rows:
        r1 = next((r for r in rows if r["set"] == r2["set"] and r["side"] == r2["side"] and r["n"] < r2["n"]), None)
        if r1 is None or "unavailable" in r1 or "unavailable" in r2:
            continue
        out.append([r2["set"], r2["side"], str(r1["n"]), f"{r2['peak_rss_mb'] - r1['peak_rss_mb']:+.0f}",
                    f"{r1['n'] * 3 * r1['size'] ** 2 / 2**20:.0f}"])
    return markdown_table(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny folders: see every row come out")
    ap.add_argument("--json", default="outputs/bench/bench_data.json")
    ap.add_argument("--root", default=None, help="where the generated folders live (default outputs/bench/data)")
    ap.add_argument("--fastai-python", default=None, help="an interpreter with fastai (scripts/fastai_venv.sh)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads per row")
    ap.add_argument("--row", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        print(json.dumps(ROWS[args.row[0]](json.loads(args.row[1]))))
        return
    sets = QUICK if args.quick else FULL
    root = Path(args.root or ("outputs/bench/data-quick" if args.quick else "outputs/bench/data")).resolve()
    cache_root = root.parent / "caches"  # the timed builds' caches, removed at the end
    load0 = os.getloadavg()
    start = time.perf_counter()
    rows = []
    for name, (n, sides, size) in sets.items():
        folder = make_folder(root / name, n, sides)
        rows += measure_set(name, folder, n, size, args, cache_root)
    decode = {**run_row("decode", {"path": str(root / "pets" / "full"), "size": sets["pets"][2]}),
              "size": sets["pets"][2]}
    shutil.rmtree(cache_root, ignore_errors=True)  # the timed builds' caches: GBs
    res = {"rows": rows, "decode": decode, "quick": args.quick, "bs": BS, "seconds": time.perf_counter() - start,
           "load_start": load0, "load_end": os.getloadavg(), "cpus": len(os.sched_getaffinity(0)),
           "platform": platform.platform(), "threads": args.threads}
    print()
    print(table(rows))
    print()
    print(growth(rows))
    print()
    if "unavailable" in decode:
        print(f"decoding: unavailable: {decode['unavailable']}")
    else:
        print(markdown_table([[f"decoding {decode['images']} pets photos at {decode['size']} px", "images/s"],
                              *[[f"{k} ({decode['workers']})" if k != "one thread" else k, f"{decode[k]:.0f}"]
                                for k in ("threads", "processes", "one thread")]]))
    print(f"\n{len(os.sched_getaffinity(0))} CPUs; load average {load0[0]:.2f} at the start, "
          f"{res['load_end'][0]:.2f} at the end; {res['seconds']:.0f} s in all")
    write_figures(res, args.json)


if __name__ == "__main__":
    main()
