"""Benchmark what a study trial costs beyond its training: the quick study's sweep, timed.

Runs the sweep of ``scripts/study.sh quick`` (``+study=lr_ratio``, joblib with one worker per core,
one thread per worker) into a temporary dir and reports:

- the sweep's wall time (from the command's start to its end, the driver's start-up included);
- worker-seconds per trial: wall time x workers / trials, what a trial costs a worker;
- the mean training seconds per trial, ``metrics.json["seconds"]["train"]`` (the epochs' training
  loops alone), read from ``trials.db``;
- their ratio (target <= 3, aim <= 1.5): 1 would mean a trial costs nothing but its training;
- where the rest goes: fastlab-train's own set-up, validation and outputs
  (``seconds.total - seconds.train``), and what is left (Hydra's per-job set-up, the launcher,
  the sweep's start-up and exit, spread over its trials).

The glyph source model (``outputs/models/glyphs16.pt``) is made first when missing, as
``scripts/study.sh`` does; its time is not counted.

    .venv/bin/python scripts/bench_trials.py                 # 320 trials, as the quick study
    .venv/bin/python scripts/bench_trials.py --trials 64 schedule.epochs=2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ["+experiment=pretrain_glyphs", "data.size=16", "arch.channels=[16,32,64]", "arch.head_hidden=64",
            "schedule.epochs=4", "save_as=glyphs16", "trainer.plots=false", "trainer.save_model=false",
            "trainer.progress=none", "hydra.run.dir=outputs/runs/study_pretrain"]


def train_command() -> list[str]:
    return [sys.executable, "-m", "fastlab.cli.train"]


def ensure_source_model() -> None:
    if (ROOT / "outputs" / "models" / "glyphs16.pt").exists():
        return
    print("bench: pretraining the glyph source model (once, not timed)", flush=True)
    subprocess.run([*train_command(), *PRETRAIN], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def trial_seconds(sweep_dir: Path) -> list[tuple[float, float]]:
    """``metrics.json["seconds"]`` (``total``, ``train``) of every completed trial, from
    ``trials.db``: ``total`` is fastlab-train's whole job, ``train`` its training loops."""
    from fastlab.sweep.store import TrialStore

    with TrialStore(sweep_dir / "trials.db") as store:
        trials = store.trials()
    return [(t.metrics["seconds"]["total"], t.metrics["seconds"]["train"]) for t in trials
            if t.status == "completed" and t.metrics and t.metrics.get("seconds")]


def bench(trials: int, workers: int, overrides: list[str]) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = Path(tmp) / "sweep"
        cmd = [*train_command(), "-m", "+study=lr_ratio", f"hydra.sweep.dir={sweep_dir}",
               f"hydra.sweeper.n_trials={trials}", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}",
               *overrides]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
            raise SystemExit(f"bench: the sweep failed: {' '.join(cmd)}")
        seconds = trial_seconds(sweep_dir)
    per_trial = wall * workers / trials
    total = statistics.fmean(s[0] for s in seconds)
    train = statistics.fmean(s[1] for s in seconds)
    return {"wall": wall, "per_trial": per_trial, "train": train, "ratio": per_trial / train,
            "in_train": total - train, "outside": per_trial - total, "completed": len(seconds)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=320, help="trials in the sweep (default 320, the quick study's)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="joblib workers (default: one per core)")
    p.add_argument("overrides", nargs="*", help="extra fastlab-train overrides for the sweep")
    args = p.parse_args()
    ensure_source_model()
    r = bench(args.trials, args.workers, args.overrides)
    print(f"quick study sweep: {args.trials} trials ({r['completed']} completed), {args.workers} workers")
    print(f"  wall time                  {r['wall']:8.1f} s")
    print(f"  worker-seconds per trial   {r['per_trial']:8.3f} s")
    print(f"  training seconds per trial {r['train']:8.3f} s  (metrics.json seconds.train, mean)")
    print(f"    fastlab-train besides    {r['in_train']:8.3f} s  (seconds.total - train: set-up, validation, outputs)")
    print(f"    the rest                 {r['outside']:8.3f} s  (Hydra's job set-up, the launcher, start-up and exit)")
    print(f"  ratio                      {r['ratio']:8.2f}    (target <= 3, aim <= 1.5)")
    print(f"target ratio <= 3: {'met' if r['ratio'] <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
