"""A trial of a fastlab sweep, run by a joblib worker that keeps data and checkpoints between its
trials and validates only at the end, ends with the final metrics of the same run done alone."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastlab.sweep.store import TrialStore

ROOT = Path(__file__).resolve().parents[2]
TRAIN = Path(sys.executable).with_name("fastlab-train")
TINY = ["data.size=16", "arch.channels=[8,16]", "arch.head_hidden=16", "trainer.progress=none",
        "data.classes=[5,6,7,8,9]", "data.train_per_class=10", "schedule=fine_tune"]
SPACE = ["schedule.lr_max=tag(log, interval(1e-3, 3e-2))", "schedule.lr_ratio=tag(log, interval(1.0, 10.0))",
         "schedule.epochs=int(interval(2, 3))", "data.bs=choice(8, 16)", "seed=range(0, 100)"]


def run(cmd: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    done = subprocess.run([str(TRAIN), *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path, list]:
    tmp = tmp_path_factory.mktemp("trials")
    source = tmp / "source.pt"
    # A pretrained body, so that the workers' kept checkpoint is exercised too.
    run([*TINY[:4], "data.classes=[0,1,2,3,4]", "schedule.epochs=1", "trainer.plots=false",
         f"hydra.run.dir={tmp / 'pretrain'}"], tmp)
    (tmp / "pretrain" / "model.pt").rename(source)
    sweep = tmp / "sweep"
    run(["-m", "hydra/sweeper=fastlab", "hydra.sweeper.strategy=random", "hydra.sweeper.seed=3",
         "hydra.sweeper.n_trials=6", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}",
         *TINY, f"arch.pretrained={source}", *SPACE], tmp)
    with TrialStore(sweep / "trials.db") as store:
        trials = store.trials()
    return tmp, source, trials


def test_each_trial_equals_the_run_alone(swept) -> None:
    tmp, source, trials = swept
    assert [t.status for t in trials] == ["completed"] * 6
    for trial in trials[:2]:
        alone = tmp / f"alone{trial.number}"
        overrides = [f"{k}={v}" for k, v in trial.params.items()]
        run([*TINY, f"arch.pretrained={source}", *overrides, f"hydra.run.dir={alone}"], tmp)
        ours = json.loads((alone / "metrics.json").read_text())
        assert ours["objective"] == trial.value, trial.number  # exactly: same seed, same CPU arithmetic
        assert ours["final"] == trial.metrics["final"]
        assert ours["group_lrs"] == trial.metrics["group_lrs"]
        # alone, every epoch validates; in the sweep, only the last
        rows = ours["epochs"]
        assert rows == trial.metrics["epochs"] and rows >= 2


def test_a_trial_writes_only_what_the_sweep_needs(swept) -> None:
    tmp, _, trials = swept
    job = tmp / "sweep" / trials[0].job_dir
    assert (job / "metrics.json").is_file()
    for absent in ("last.pt", "model.pt", "plots"):
        assert not (job / absent).exists(), absent
    rows = list(csv.DictReader((job / "history.csv").open()))
    assert len(rows) == trials[0].metrics["epochs"]
    assert [bool(r["valid_loss"]) for r in rows] == [False] * (len(rows) - 1) + [True]  # the last epoch only
