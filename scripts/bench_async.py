"""Benchmark the batch barrier: one sweep of 24 trials whose durations spread 1-6x, 2 workers,
launched batch-synchronously (``hydra.sweeper.async=false``) and asynchronously (the default).

The trials are the sweeper tests' tiny app (``tests/sweep_apps/app.py``) sleeping
``base * (1 + 5x)`` seconds for a Sobol-drawn x in [0, 1], so what is measured is the scheduling
alone: the sweep's wall time (the command's start to its end, driver start-up included) and the
workers' busy fraction (the trials' own seconds / (workers x wall time)). Batch sizes are
left to their defaults: n_jobs at once asynchronously; batch-synchronously n_jobs x 4 for
random (the quick study's strategy) and n_jobs for forest. Beside each wall time it prints the
wall time the same trials would take with no overhead at all (no start-up, no launch cost), so
that what the schedule itself allows is told apart from what the machinery costs.

    .venv/bin/python scripts/bench_async.py [--trials 24] [--base 0.5] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "sweep_apps" / "app.py"


def list_schedule(durations: list[float], workers: int) -> float:
    """When the last of ``durations`` ends if each starts, in order, on the first free worker."""
    free = [0.0] * workers
    for d in durations:
        free[free.index(min(free))] += d
    return max(free)


def ideal(durations: list[float], workers: int, batch: int | None) -> float:
    """The sweep's wall time without any overhead: asynchronous (``batch`` None) or in batches of
    ``batch``, each waiting for its slowest trial (within a batch joblib hands a worker its next
    trial as soon as it is free)."""
    if batch is None:
        return list_schedule(durations, workers)
    return sum(list_schedule(durations[i:i + batch], workers) for i in range(0, len(durations), batch))


def run(sweep_dir: Path, asynchronous: bool, args: argparse.Namespace) -> tuple[float, float, float]:
    """(wall seconds, busy fraction, wall seconds without overhead) of one sweep."""
    sys.path.insert(0, str(ROOT))
    from fastlab.sweep.store import read_sweep

    cmd = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=joblib",
           f"hydra.launcher.n_jobs={args.workers}",
           f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.strategy={args.strategy}",
           "hydra.sweeper.n_initial=4", "hydra.sweeper.seed=0", f"hydra.sweeper.async={str(asynchronous).lower()}",
           f"sleep={args.base}", "spread=5", "x=interval(0,1)"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=sweep_dir.parent,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert len(trials) == args.trials and all(t.status == "completed" for t in trials)
    durations = [args.base * (1 + 5 * t.params["x"]) for t in trials]  # in trial order
    batch = None if asynchronous else args.workers * (4 if args.strategy in ("grid", "random") else 1)
    return wall, sum(durations) / (args.workers * wall), ideal(durations, args.workers, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--base", type=float, default=0.5, help="the shortest trial's seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategy", default="random",
                        help="random (the study's: batch-synchronous hands 4 trials per worker at once) or "
                             "forest (one per worker)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastlab-bench-async-") as tmp:
        sync_wall, sync_busy, sync_ideal = run(Path(tmp) / "sync", False, args)
        async_wall, async_busy, async_ideal = run(Path(tmp) / "async", True, args)
    print(f"{args.trials} trials, durations {args.base:g}-{6 * args.base:g} s, {args.workers} workers ({args.strategy}; batch size left to its default)")
    print(f"  batch-synchronous   wall {sync_wall:6.1f} s   workers busy {sync_busy:5.1%}   "
          f"without overhead {sync_ideal:5.1f} s")
    print(f"  asynchronous        wall {async_wall:6.1f} s   workers busy {async_busy:5.1%}   "
          f"without overhead {async_ideal:5.1f} s")
    speedup = sync_wall / async_wall
    print(f"  speed-up {speedup:.2f}x  (target >= 1.3x: {'met' if speedup >= 1.3 else 'NOT met'}); the "
          f"schedules alone, without start-up and launch overhead: {sync_ideal / async_ideal:.2f}x")


if __name__ == "__main__":
    main()
