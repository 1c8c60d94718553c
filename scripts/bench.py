"""Every speed figure from one command: prints a table and writes JSON.

    .venv/bin/python scripts/bench.py [--quick] [--json outputs/bench/bench.json]

1. loop: fastlab's Learner against a hand-written PyTorch loop (same model, data, batch and
   one-cycle schedule), alternating repeats in one process: the digits CNN and resnet18 at 32 px,
   on the CPU and, when CUDA is there, on the GPU (bf16 autocast for resnet18).  Target: ratio
   <= 1.03 on CPU, <= 1.05 on GPU.
2. process: `fastlab-train` with its defaults as a user runs it, split into start-up (interpreter,
   imports, config composition: timed as `--cfg job`), training, and the rest (data, model,
   validation, outputs, exit). Target: start-up <= 3 s.
3. lr_find: one LR range test (100 iterations) on the digits CNN.
4. sweep: N short trials (random search) with the basic launcher and with joblib at 2 workers:
   trials per minute and the speed-up over one-thread trials run one at a time (and over
   trials that each use every core). Target: >= 1.8x on 2 cores.
5. memory: peak resident memory of the `fastlab-train` process (and peak CUDA memory).

``--quick`` shrinks every part so the whole runs in about a minute on 2 CPU cores (CI runs it);
its figures are for the table's shape, not for quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark modules

from bench_loop import fresh_model, run_fastlab, run_plain  # noqa: E402
from bench_report import markdown_table, write_figures  # noqa: E402
from bench_search import _timed  # noqa: E402

from fastlab.data import DataBunch  # noqa: E402
from fastlab.data.images.sources import DigitsData  # noqa: E402
from fastlab.learner import Learner  # noqa: E402
from fastlab.tasks.classify import CLASSIFY  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bench_loop(arch: str, device: str, epochs: int, repeats: int) -> dict:
    data = DataBunch.from_config(DigitsData(size=32, bs=64)).to(device)
    run_plain(fresh_model(arch, data, 0), data, 1)  # warm-up for both sides
    run_fastlab(fresh_model(arch, data, 0), data, 1)
    times: dict[str, list[float]] = {"fastlab": [], "plain": []}
    for r in range(repeats):
        for name in (("fastlab", "plain") if r % 2 == 0 else ("plain", "fastlab")):
            fn = run_fastlab if name == "fastlab" else run_plain
            times[name].append(fn(fresh_model(arch, data, r), data, epochs))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"arch": arch, "device": device, "s_per_epoch": med, "ratio": med["fastlab"] / med["plain"],
            "target": 1.03 if device == "cpu" else 1.05}


def bench_process(tmp: Path, overrides: list[str]) -> dict:
    # start-up: what a run pays before its first line of training code (interpreter, imports,
    # composing the config), timed as `--cfg job`, which stops right there
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fastlab.cli.train", "--cfg", "job", *overrides], cwd=tmp, capture_output=True,
                   check=True)
    startup = time.perf_counter() - start
    run_dir = tmp / "process"
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "fastlab.cli.train", f"hydra.run.dir={run_dir}", "trainer.progress=none",
                           *overrides], cwd=tmp, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"fastlab-train failed:\n{proc.stderr[-2000:]}")
    peak_kb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    seconds = json.loads((run_dir / "metrics.json").read_text())["seconds"]
    return {"wall": wall, "train": seconds["train"], "startup": startup,
            # data, model, validation, outputs and plots, and exiting
            "rest": wall - startup - seconds["train"], "peak_rss_mb": peak_kb / 1024,
            "target_startup": 3.0, "overrides": overrides}


def bench_lr_find(device: str, num_it: int) -> dict:
    data = DataBunch.from_config(DigitsData(size=32, bs=64)).to(device)
    learn = Learner(fresh_model("cnn", data, 0), data, CLASSIFY.loss_func, CLASSIFY.metrics, progress="none")
    start = time.perf_counter()
    learn.lr_find(num_it=num_it)
    return {"seconds": time.perf_counter() - start, "iterations": num_it, "device": device}


def bench_sweep(tmp: Path, trials: int, overrides: list[str]) -> dict:
    common = [sys.executable, "-m", "fastlab.cli.train", "-m", "hydra/sweeper=fastlab", "hydra.sweeper.strategy=random",
              "hydra.sweeper.seed=0", f"hydra.sweeper.n_trials={trials}", "schedule.lr_max=tag(log, interval(1e-3, 3e-2))",
              "trainer.plots=false", "trainer.save_model=false", "trainer.progress=none", *overrides]
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = {}
    # basic: one trial at a time with torch's threads (all cores for one training), and with one
    # thread; joblib: two one-thread trials side by side
    for name, extra, env in (("basic", [], {}), ("basic1", [], one_thread),
                             ("joblib2", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], one_thread)):
        whole, sweep = _timed([*common, f"hydra.sweep.dir={tmp}/sweep-{name}", *extra], dict(os.environ, **env))
        out[name] = {"command_s": whole, "sweep_s": sweep, "trials_per_min": 60 * trials / sweep}
    out["speedup"] = out["basic1"]["sweep_s"] / out["joblib2"]["sweep_s"]
    out["speedup_vs_all_threads"] = out["basic"]["sweep_s"] / out["joblib2"]["sweep_s"]
    out["trials"], out["target"] = trials, 1.8
    return out


def table(res: dict) -> str:
    rows = [("part", "figure", "target", "met")]
    for r in res["loop"]:
        rows.append((f"loop {r['arch']} {r['device']}", f"ratio {r['ratio']:.3f} ({r['s_per_epoch']['fastlab']:.3f} "
                     f"vs {r['s_per_epoch']['plain']:.3f} s/epoch)", f"<= {r['target']}", "yes" if r["ratio"] <= r["target"] else "no"))
    p = res["process"]
    rows.append(("fastlab-train defaults", f"start-up {p['startup']:.2f} s, training {p['train']:.2f} s, "
                 f"rest {p['rest']:.2f} s, wall {p['wall']:.2f} s",
                 "start-up <= 3 s", "yes" if p["startup"] <= 3 else "no"))
    rows.append(("lr_find", f"{res['lr_find']['seconds']:.2f} s for {res['lr_find']['iterations']} iterations", "", ""))
    s = res["sweep"]
    rows.append((f"sweep of {s['trials']} trials", f"basic 1-thread {s['basic1']['trials_per_min']:.1f}/min, joblib(2) "
                 f"{s['joblib2']['trials_per_min']:.1f}/min: {s['speedup']:.2f}x", ">= 1.8x", "yes" if s["speedup"] >= 1.8 else "no"))
    rows.append(("", f"basic with all threads {s['basic']['trials_per_min']:.1f}/min: joblib(2) {s['speedup_vs_all_threads']:.2f}x",
                 "", ""))
    mem = f"peak RSS {p['peak_rss_mb']:.0f} MB"
    if "cuda_peak_mb" in res:
        mem += f", peak CUDA {res['cuda_peak_mb']:.0f} MB"
    rows.append(("memory", mem, "", ""))
    return markdown_table(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a minute-long run for CI (figures not for quoting)")
    ap.add_argument("--json", default="outputs/bench/bench.json", help="where to write the figures")
    args = ap.parse_args()
    q = args.quick
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    res: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                             "threads": torch.get_num_threads(), "platform": platform.platform(),
                             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
                 "quick": q, "loop": []}
    for device in devices:
        for arch in ("cnn",) if q else ("cnn", "resnet18"):
            print(f"loop: {arch} on {device} ...", file=sys.stderr, flush=True)
            # resnet18 on a CPU is ~10x the CNN's cost per epoch: fewer, shorter repeats
            heavy = arch == "resnet18" and device == "cpu"
            res["loop"].append(bench_loop(arch, device, epochs=1 if q or heavy else 3, repeats=2 if q else 3 if heavy else 5))
    with tempfile.TemporaryDirectory(prefix="fastlab-bench-") as tmp:
        print("process: fastlab-train ...", file=sys.stderr, flush=True)
        res["process"] = bench_process(Path(tmp), ["schedule.epochs=1", "data.size=16"] if q else [])
        print("lr_find ...", file=sys.stderr, flush=True)
        res["lr_find"] = bench_lr_find(devices[-1], num_it=20 if q else 100)
        print("sweep ...", file=sys.stderr, flush=True)
        small = ["data.size=16", "arch.channels=[16,32]", "arch.head_hidden=32", "schedule.epochs=1"]
        # trials of a few seconds each: joblib's fixed cost (starting its workers) is paid once
        res["sweep"] = bench_sweep(Path(tmp), trials=4 if q else 8, overrides=small if q else ["schedule.epochs=6"])
    if torch.cuda.is_available():
        res["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(table(res))
    write_figures(res, args.json)


if __name__ == "__main__":
    main()
