"""Benchmark the sweeper: how fast ``forest`` finds a good config, and what joblib buys.

Part 1 (``search``, a few minutes on 2 cores): on a cheap objective shaped like a training response
surface, count the trials ``random`` and ``forest`` need until one lands within 1% of the optimum,
over several seeds. Target: forest needs at most half as many as random.

Part 2 (``speedup``, needs ``fastlab-train``): the wall-clock time of the same sweep of short real
trainings with Hydra's basic launcher (one job at a time) and with joblib (2 workers).
Target: >= 1.7x.

    .venv/bin/python scripts/bench_search.py search --seeds 10
    .venv/bin/python scripts/bench_search.py speedup --skip-default-threads schedule.epochs=6
"""

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import SearchSpace, parse_space
from fastlab.sweep.strategies import Observation, propose

ROOT = Path(__file__).resolve().parents[1]

# The response surface: accuracy against log10(lr) and the discriminative-lr ratio. It rises
# slowly from too-small rates, falls steeply towards divergence (NaN past 10**-0.7), and prefers a
# ratio near 2.6 (ULMFiT's factor), less sharply.
BEST_LOG_LR, BEST_RATIO = -2.5, 2.6
WIDTH_BELOW, WIDTH_ABOVE, WIDTH_RATIO = 0.8, 0.4, 0.8  # decades of lr; ln units of the ratio
DIVERGES_ABOVE = -0.7
PEAK, FLOOR, NOISE = 0.95, 0.10, 0.005
SPACE_OVERRIDES = ["lr=tag(log, interval(1e-5, 1.0))", "ratio=tag(log, interval(1.0, 10.0))"]


def true_accuracy(lr: float, ratio: float) -> float:
    """The noise-free objective (maximum PEAK at BEST_LOG_LR, BEST_RATIO); NaN = diverged."""
    x = math.log10(lr)
    if x > DIVERGES_ABOVE:
        return math.nan
    width = WIDTH_BELOW if x < BEST_LOG_LR else WIDTH_ABOVE
    q = ((x - BEST_LOG_LR) / width) ** 2 + (
        (math.log(ratio) - math.log(BEST_RATIO)) / WIDTH_RATIO
    ) ** 2
    return FLOOR + (PEAK - FLOOR) * math.exp(-0.5 * q)


def trials_to_target(
    space: SearchSpace, strategy: str, seed: int, budget: int, tolerance: float = 0.01
) -> int:
    """Trials (run one at a time) until one's true accuracy is within ``tolerance`` of PEAK.

    The strategy sees noisy observations; success is judged on the noise-free value. Returns
    ``budget + 1`` when the budget runs out first.
    """
    settings = SweepSettings(strategy=strategy, direction="maximize", seed=seed).validate()
    noise = np.random.default_rng(seed + 10_000)
    finished: list[Observation] = []
    for k in range(budget):
        (params,) = propose(space, settings, seed, [k], finished)
        truth = true_accuracy(params["lr"], params["ratio"])
        if truth >= (1 - tolerance) * PEAK:
            return k + 1
        observed = None if math.isnan(truth) else truth + noise.normal(scale=NOISE)
        finished.append(Observation(params, observed))
    return budget + 1


def bench_search(seeds: int, budget_random: int, budget_forest: int) -> None:
    space = parse_space(None, SPACE_OVERRIDES)
    print(
        f"objective: accuracy(log10 lr, ratio), peak {PEAK} at lr=10^{BEST_LOG_LR}, ratio={BEST_RATIO}; "
        f"noise sd {NOISE}; target: within 1% of the peak (>= {0.99 * PEAK:.4f})"
    )
    print(f"space: {' '.join(SPACE_OVERRIDES)}")
    print(f"{'seed':>4}  {'random':>6}  {'forest':>6}  {'forest s':>8}")
    counts: dict[str, list[int]] = {"random": [], "forest": []}
    seconds = []
    for seed in range(seeds):
        n_random = trials_to_target(space, "random", seed, budget_random)
        start = time.perf_counter()
        n_forest = trials_to_target(space, "forest", seed, budget_forest)
        seconds.append(time.perf_counter() - start)
        counts["random"].append(n_random)
        counts["forest"].append(n_forest)
        print(
            f"{seed:>4}  {_show(n_random, budget_random):>6}  {_show(n_forest, budget_forest):>6}  {seconds[-1]:>8.1f}"
        )
    med_r, med_f = statistics.median(counts["random"]), statistics.median(counts["forest"])
    mean_r, mean_f = statistics.fmean(counts["random"]), statistics.fmean(counts["forest"])
    print(
        f"median trials: random {med_r:g}, forest {med_f:g} -> forest/random = {med_f / med_r:.2f}"
    )
    print(
        f"mean trials:   random {mean_r:.1f}, forest {mean_f:.1f} -> forest/random = {mean_f / mean_r:.2f}"
    )
    print(
        f"(a count past the budget means not reached: random budget {budget_random}, forest {budget_forest})"
    )
    verdict = "met" if med_f <= 0.5 * med_r else "NOT met"
    print(f"target forest <= 0.5 x random (medians): {verdict}")


def _show(n: int, budget: int) -> str:
    return f">{budget}" if n > budget else str(n)


def bench_speedup(trials: int, overrides: list[str], default_threads: bool = True) -> None:
    """Time one sweep of real short trainings with the basic launcher, then joblib (2 workers).

    The basic launcher runs once with torch's default threads (both cores for one training) and
    once with one thread; joblib's workers get one thread each, so two trainings share two cores
    without fighting. Reported: the whole command, and the sweep alone (from the first launch to
    the end, without the driver's start-up, which both pay alike).
    """
    train = shutil.which("fastlab-train", path=str(Path(sys.executable).parent)) or "fastlab-train"
    common = [
        train,
        "-m",
        "hydra/sweeper=fastlab",
        "hydra.sweeper.strategy=random",
        "hydra.sweeper.seed=0",
        f"hydra.sweeper.n_trials={trials}",
        "schedule.lr_max=tag(log, interval(1e-3, 3e-2))",
        "trainer.plots=false",
        "trainer.save_model=false",
        "trainer.progress=none",
        *overrides,
    ]
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = [
        ("basic", [], {}),
        ("basic 1-thread", [], one_thread),
        ("joblib n_jobs=2", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], one_thread),
    ]
    if not default_threads:
        runs = runs[1:]
    times: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra, env) in enumerate(runs):
            cmd = [*common, f"hydra.sweep.dir={tmp}/{i}", *extra]
            times[name] = _timed(cmd, dict(os.environ, **env))
            print(
                f"{name:>16}: {times[name][0]:6.1f} s command, {times[name][1]:6.1f} s sweep ({trials} trials)",
                flush=True,
            )
    print(f"command: {' '.join(common[1:])}")
    best_basic = min(
        (n for n in ("basic", "basic 1-thread") if n in times), key=lambda n: times[n][0]
    )
    for k, what in ((0, "command"), (1, "sweep")):
        ratio = times[best_basic][k] / times["joblib n_jobs=2"][k]
        print(f"speed-up of joblib(2) over {best_basic} ({what}): {ratio:.2f}x (target >= 1.7x)")


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds for the whole command, seconds from its first trial launch to its end)."""
    start = time.perf_counter()
    first_launch = None
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if first_launch is None and "launching trial" in line:
            first_launch = time.perf_counter()
    if proc.wait() != 0:
        raise SystemExit(f"the sweep failed: {' '.join(cmd)}")
    end = time.perf_counter()
    return end - start, end - (first_launch or start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="part", required=True)
    search = sub.add_parser("search", help="trials forest and random need to reach the optimum")
    search.add_argument("--seeds", type=int, default=10)
    search.add_argument("--budget-random", type=int, default=2000)
    search.add_argument("--budget-forest", type=int, default=300)
    speed = sub.add_parser("speedup", help="joblib (2 workers) against the basic launcher")
    speed.add_argument("--trials", type=int, default=12)
    speed.add_argument(
        "--skip-default-threads",
        action="store_true",
        help="skip the basic run with torch's default threads (slow where cores are shared)",
    )
    speed.add_argument("overrides", nargs="*", help="extra fastlab-train overrides")
    args = parser.parse_args()
    if args.part == "search":
        bench_search(args.seeds, args.budget_random, args.budget_forest)
    else:
        bench_speedup(args.trials, args.overrides, default_threads=not args.skip_default_threads)


if __name__ == "__main__":
    main()
