"""Benchmark the sweeper's goals: several objectives, and seeds per configuration.

Both parts run fastlab's own driver (``fastlab.sweep.driver.run_sweep``, its trial store in a
temporary sweep dir) on planted problems whose answer is known, with an in-process launcher.

Part 1 (``front``): a two-objective problem shaped like ZDT1 (minimize f1 = x1 and
f2 = g (1 - sqrt(x1 / g)), g = 1 + 9 mean(x2..x4); the true front is x2..x4 = 0). The hypervolume
of each sweep's Pareto front (reference point (1.1, 6); the true front's is about 6.27) for the
forest (ParEGO scalarisations) and random search at equal budgets, over 3 seeds.

Part 2 (``noise``): eight configurations whose true values differ by 0.02, measured with noise of
sd 0.03 (a training seed's luck). At an equal budget of 24 runs, how often the configuration the
sweep calls best is the truly best one: ``repeats=1`` (24 trials drawn at random from the 8, the
best single run wins) against ``repeats=3`` (each of the 8 configurations with 3 seeds, the best
mean wins).

    .venv/bin/python scripts/bench_sweep_goals.py            # both parts, under a minute on 2 cores
    .venv/bin/python scripts/bench_sweep_goals.py front --seeds 3 --budget 60
    .venv/bin/python scripts/bench_sweep_goals.py noise --sweeps 300
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fastlab.sweep.driver import Outcome, run_sweep
from fastlab.sweep.objectives import parse_objectives
from fastlab.sweep.results import best_trials, by_configuration, pareto_front
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space

REFERENCE = (1.1, 6.0)
LEVELS = [0.80 + 0.02 * k for k in range(8)]  # the noise part's true values: configuration 7 is best
NOISE_SD = 0.03


def parse(override: str) -> tuple[str, float]:
    key, _, text = override.partition("=")
    return key, float(text)


def zdt1(x: dict[str, float]) -> dict[str, float]:
    rest = [x[f"x{i}"] for i in range(2, 5)]
    g = 1 + 9 * sum(rest) / len(rest)
    f1 = x["x1"]
    return {"f1": f1, "f2": g * (1 - math.sqrt(f1 / g))}


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float] = REFERENCE) -> float:
    """The area two minimized objectives' points dominate up to ``ref`` (a sweep over x of the
    front, sorted by f1)."""
    inside = sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1])
    area, best_f2 = 0.0, ref[1]
    for i, (f1, f2) in enumerate(inside):
        best_f2 = min(best_f2, f2)
        right = inside[i + 1][0] if i + 1 < len(inside) else ref[0]
        area += (right - f1) * (ref[1] - best_f2)
    return area


def sweep(settings: SweepSettings, overrides: list[str], launch, where: Path):
    space = parse_space(None, overrides)
    return run_sweep(settings, space, where, launch, echo=lambda line: None)


def front(seeds: int, budget: int) -> None:
    objectives = {"f1": "minimize", "f2": "minimize"}
    parsed = parse_objectives(objectives, [])

    def launch(batch: list[list[str]], first: int) -> list[Outcome]:
        return [Outcome("completed", returned=zdt1(dict(parse(o) for o in overrides))) for overrides in batch]

    true = hypervolume([(f, 1 - math.sqrt(f)) for f in np.linspace(0, 1, 2001)])
    print(f"front: ZDT1-like, 4 variables, budget {budget} trials, reference point {REFERENCE}; "
          f"the true front's hypervolume {true:.3f}")
    results: dict[str, list[float]] = {"random": [], "forest": []}
    for seed in range(seeds):
        for strategy in results:
            settings = SweepSettings(strategy=strategy, direction="minimize", n_trials=budget, seed=seed,
                                     n_initial=10, objectives=objectives, top_k=0)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                trials = sweep(settings, [f"x{i}=interval(0,1)" for i in range(1, 5)], launch, Path(tmp))
            points = [tuple(t.objectives["values"][n] for n in ("f1", "f2")) for t in pareto_front(trials, parsed)]
            results[strategy].append(hypervolume(points))
            print(f"  seed {seed} {strategy:6s}: hypervolume {results[strategy][-1]:.3f} "
                  f"({len(points)} on its front, {time.perf_counter() - start:.1f} s)")
    for strategy, values in results.items():
        print(f"  {strategy:6s}: mean hypervolume {statistics.mean(values):.3f} "
              f"(per seed {', '.join(f'{v:.3f}' for v in values)}; {statistics.mean(values) / true:.1%} of the true front's)")


def noise(sweeps: int) -> None:
    def launch_for(draws: random.Random):
        def launch(batch: list[list[str]], first: int) -> list[Outcome]:
            out = []
            for overrides in batch:
                config = int(dict(parse(o) for o in overrides if not o.startswith("seed="))["level"])
                out.append(Outcome("completed", LEVELS[config] + draws.gauss(0.0, NOISE_SD)))
            return out
        return launch

    space = ["level=choice(0,1,2,3,4,5,6,7)"]
    print(f"noise: 8 configurations, true values {LEVELS[0]:.2f}..{LEVELS[-1]:.2f} (best: level=7), noise sd "
          f"{NOISE_SD}, 24 runs a sweep, {sweeps} sweeps an arm")
    arms = {"repeats=1 (24 trials drawn from the 8)": SweepSettings(strategy="random", direction="maximize",
                                                                  n_trials=24, top_k=0),
            "repeats=3 (8 configurations x 3 seeds)": SweepSettings(strategy="grid", direction="maximize",
                                                                    repeats=3, top_k=0)}
    for name, base in arms.items():
        right, start = 0, time.perf_counter()
        for s in range(sweeps):
            settings = SweepSettings(**{**base.__dict__, "seed": s})
            with tempfile.TemporaryDirectory() as tmp:
                trials = sweep(settings, space, launch_for(random.Random(1000 + s)), Path(tmp))
            rows, _ = by_configuration(trials)
            best = best_trials(rows, 1.0, 1)[0]
            right += best.params["level"] == 7
        print(f"  {name}: the truly best configuration chosen in {right} of {sweeps} sweeps ({right / sweeps:.0%}; "
              f"{time.perf_counter() - start:.0f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="?", choices=("front", "noise", "all"), default="all")
    p.add_argument("--seeds", type=int, default=3, help="front: seeds per strategy")
    p.add_argument("--budget", type=int, default=60, help="front: trials per sweep")
    p.add_argument("--sweeps", type=int, default=300, help="noise: sweeps per arm")
    args = p.parse_args()
    logging.disable(logging.INFO)  # the driver's per-trial lines
    if args.part in ("front", "all"):
        front(args.seeds, args.budget)
    if args.part in ("noise", "all"):
        noise(args.sweeps)


if __name__ == "__main__":
    main()
