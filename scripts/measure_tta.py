"""Measure test-time augmentation's gain: train a run per seed, then score its validation set
plainly and with TTA (``fastlab.tta.tta_metrics``) for each ``--n`` and ``--beta``.

    .venv/bin/python scripts/measure_tta.py --seeds 0 1 2 -- data.train_per_class=10 data.size=16 \\
        data.bs=16 schedule.epochs=20 schedule.lr_max=1e-2 aug=no_flip

Overrides after ``--`` compose ``conf/train.yaml`` as ``fastlab-train`` would (``aug`` must be
active). Training is the run's own (prepare, plan, fit_stages) on one thread, without writing a
run dir. Prints one line per seed and setting, and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from fastlab.config import (
    config_dir,  # noqa: E402
    to_run_config,  # noqa: E402
)
from fastlab.run.plan import plan  # noqa: E402
from fastlab.run.prepare import prepare  # noqa: E402
from fastlab.tta import check_tta, tta_metrics  # noqa: E402

QUIET = ["trainer.plots=false", "trainer.save_model=false", "trainer.save_last=false", "trainer.progress=none"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, nargs="+", default=[4], help="augmented passes (several: each scored)")
    parser.add_argument("--beta", type=float, nargs="+", default=[0.25], help="the plain pass's weight(s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[*QUIET, *args.overrides, f"seed={seed}", "trainer.tta=true"])
        run = to_run_config(cfg)
        check_tta(run)
        start = time.perf_counter()
        learn = prepare(run).learn
        stages, _ = plan(learn, run.schedule)
        learn.fit_stages(stages)
        trained = time.perf_counter() - start
        for n in args.n:
            for beta in args.beta:
                run.trainer.tta_n, run.trainer.tta_beta = n, beta
                start = time.perf_counter()
                got = tta_metrics(learn, run)
                row = {"seed": seed, "n": n, "beta": beta, "objective": run.task.objective,
                       "plain": got["plain"][run.task.objective], "tta": got[run.task.objective],
                       "train_s": round(trained, 1), "tta_s": round(time.perf_counter() - start, 2)}
                rows.append(row)
                print(f"seed {seed} n {n} beta {beta}: {row['objective']} plain {row['plain']:.4f} "
                      f"tta {row['tta']:.4f} ({row['tta'] - row['plain']:+.4f}); trained {trained:.1f}s, "
                      f"tta {row['tta_s']}s", flush=True)
    print(json.dumps(rows))
    return {"rows": rows}


if __name__ == "__main__":
    main()
