"""Benchmark pruning: ASHA against no pruning on the ``tune`` study, over several sweep seeds.

Each seed runs ``fastlab-train -m +study=tune`` twice (joblib, one worker per core, one thread
each), with ``hydra.sweeper.pruner=none`` and ``=asha``, both at ``schedule.epochs`` epochs a trial
(default 9, so ASHA's rungs at 1 and 3 epochs leave room to stop), and reports per seed and on
average: the best objective reached (accuracy; completed trials only, the default policy) and the
trial-epochs spent (a completed trial's epochs, a pruned trial's epoch when it stopped). Targets:
ASHA within 1% of the best at <= 0.5x the trial-epochs.

    .venv/bin/python scripts/bench_prune.py [--seeds 0 1 2] [--epochs 9] [--trials 30]
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


def sweep(sweep_dir: Path, seed: int, pruner: str, args: argparse.Namespace) -> tuple[float, int, float, int]:
    """(best value, trial-epochs, wall seconds, pruned trials) of one sweep."""
    sys.path.insert(0, str(ROOT))
    from fastlab.sweep.store import read_sweep

    jobs = os.cpu_count() or 2
    cmd = [str(ROOT / ".venv" / "bin" / "fastlab-train"), "-m", "+study=tune", f"hydra.sweep.dir={sweep_dir}",
           "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"hydra.sweeper.seed={seed}",
           f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.pruner={pruner}",
           f"schedule.epochs={args.epochs}", "trainer.threads=1", "trainer.progress=none"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench_prune: the sweep failed:\n{proc.stderr[-2000:]}")
    trials = read_sweep(sweep_dir / "trials.db").trials
    done = [t for t in trials if t.status == "completed" and t.value is not None]
    pruned = [t for t in trials if t.status == "pruned"]
    epochs = len(done) * args.epochs + sum(int((t.metrics or {}).get("pruned", {}).get("epoch", args.epochs))
                                           for t in pruned)
    return max(t.value for t in done), epochs, wall, len(pruned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastlab-bench-prune-") as tmp:
        for seed in args.seeds:
            plain = sweep(Path(tmp) / f"none_{seed}", seed, "none", args)
            asha = sweep(Path(tmp) / f"asha_{seed}", seed, "asha", args)
            rows.append((seed, plain, asha))
            print(f"seed {seed}: none best {plain[0]:.4f} in {plain[1]} trial-epochs ({plain[2]:.0f} s); "
                  f"asha best {asha[0]:.4f} in {asha[1]} trial-epochs ({asha[2]:.0f} s, {asha[3]} pruned)",
                  flush=True)
    gap = statistics.mean((p[0] - a[0]) / p[0] for _, p, a in rows)
    spent = statistics.mean(a[1] / p[1] for _, p, a in rows)
    print(f"{args.trials} trials of {args.epochs} epochs, seeds {args.seeds}:")
    print(f"  asha's best is {gap:+.2%} below no pruning's on average (target within 1%: "
          f"{'met' if gap <= 0.01 else 'NOT met'})")
    print(f"  asha spent {spent:.2f}x the trial-epochs (target <= 0.5x: {'met' if spent <= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
