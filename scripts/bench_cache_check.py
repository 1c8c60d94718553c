"""What checking a reused decode-once cache costs, by the cache's size: fastlab's data.cache=disk.

    .venv/bin/python scripts/bench_cache_check.py [--sizes 64,256,384] [--threads 1,2]
        [--repeats 7] [--json outputs/bench/bench_cache_check.json] [--root outputs/bench/data-quick]

``bench_data.py --quick``'s ``small`` folder (400 generated JPEGs, made once under ``--root``) is
decoded at each side of ``--sizes`` into a fresh cache (5, 79 and 177 MB at 64, 256 and 384 px), then,
in a process of its own per torch thread count of ``--threads``, reused ``--repeats`` times: each
reuse is a ``DataBunch.from_config`` that finds the cache and streams the channel statistics over it
(``reuse``), then one training epoch read from it with no model (``epoch``). ``verify`` is what the
check cost the reader (opening the ``.json`` and header; hashing a window itself, or waiting for the
thread's): a cache of one window (64 MiB) is hashed as it is opened, a larger one by a thread beside
the statistics pass, whose CPU seconds are ``check``. With one torch thread a core is spare for the
check's thread; with two (this machine's cores) the statistics pass and the check share them.
Figures are medians over the reuses; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper modules

from bench_data import QUICK, make_folder, run_row  # noqa: E402
from bench_report import markdown_table, write_figures  # noqa: E402


def row(spec: dict) -> dict:
    """One size and thread count, reused ``repeats`` times, in this (fresh) process."""
    import torch

    from fastlab.data.images import cache
    from fastlab.data.images.bunch import DataBunch
    from fastlab.data.images.sources import FolderData
    from fastlab.data.place import Place, Storage

    torch.set_num_threads(spec["threads"])
    cfg = FolderData(path=spec["path"], size=spec["size"], bs=64, cache="disk", valid_pct=0.2)
    place = Place(Storage(cache_root=Path(spec["cache"]), workers=2))
    DataBunch.from_config(cfg, place=place).mean  # noqa: B018 - built by the caller: reused here
    verify, check, reuse, epoch = [], [], [], []
    for _ in range(spec["repeats"]):
        v0, c0, start = cache.stats.verify_s, getattr(cache.stats, "check_s", 0.0), time.perf_counter()
        data = DataBunch.from_config(cfg, place=place)
        data.mean  # noqa: B018 - reads every row: the check has ended when it returns
        reuse.append(time.perf_counter() - start)
        verify.append(cache.stats.verify_s - v0)
        check.append(getattr(cache.stats, "check_s", 0.0) - c0)
        start = time.perf_counter()
        for _ in data.train:
            pass
        epoch.append(time.perf_counter() - start)
    [meta] = Path(spec["cache"]).glob("*.json")
    sums = json.loads(meta.read_text())["checksums"]
    return {"mb": meta.with_suffix(".npy").stat().st_size / 1e6, "windows": len(sums.get("windows", [0])),
            "verify_s": median(verify), "check_s": median(check), "reuse_s": median(reuse),
            "epoch_s": median(epoch), "reused": cache.stats.reused}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256,384", help="sides the images are decoded at, one cache each")
    ap.add_argument("--threads", default="1,2", help="torch threads of the reusing process")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default="outputs/bench/bench_cache_check.json")
    ap.add_argument("--root", default="outputs/bench/data-quick", help="where the generated folder lives")
    ap.add_argument("--row", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        print(json.dumps(row(json.loads(args.row[1]))))
        return
    n, sides, _ = QUICK["small"]
    folder = make_folder(Path(args.root).resolve() / "small", n, sides) / "full"
    caches = Path(args.root).resolve().parent / "caches-check"
    load0, rows = os.getloadavg(), []
    for size in (int(s) for s in args.sizes.split(",")):
        cache = caches / str(size)
        shutil.rmtree(cache, ignore_errors=True)
        for threads in (int(t) for t in args.threads.split(",")):
            spec = {"path": str(folder), "size": size, "cache": str(cache), "threads": threads,
                    "repeats": args.repeats}
            rows.append({"size": size, "threads": threads, **run_row("check", spec, script=Path(__file__))})
            print(f"  {size} px, {threads} torch thread(s): {rows[-1]}", flush=True)
    shutil.rmtree(caches, ignore_errors=True)
    out = [["side", "cache MB", "windows", "torch threads", "verify ms", "check beside ms", "reuse ms", "epoch ms",
            "verify % of epoch"]]
    for r in rows:
        if "unavailable" in r:
            out.append([str(r["size"]), f"unavailable: {r['unavailable']}"] + [""] * 7)
            continue
        out.append([str(r["size"]), f"{r['mb']:.0f}", str(r["windows"]), str(r["threads"]),
                    f"{1000 * r['verify_s']:.2f}", f"{1000 * r['check_s']:.2f}", f"{1000 * r['reuse_s']:.1f}",
                    f"{1000 * r['epoch_s']:.1f}", f"{100 * r['verify_s'] / r['epoch_s']:.1f}%"])
    print()
    print(markdown_table(out))
    print(f"\n{len(os.sched_getaffinity(0))} CPUs; load average {load0[0]:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")
    write_figures({"rows": rows, "load_start": load0, "load_end": os.getloadavg(), "repeats": args.repeats}, args.json)


if __name__ == "__main__":
    main()
