"""Pruning end to end: a real fastlab-train sweep with ``hydra.sweeper.pruner=asha`` records its
pruned trials (status, last value, epoch, reports), ranks and exports them by the ``pruned``
policy, keeps every decision on resume; fastlab-meta drops them or keeps them with the epochs
they trained as a feature, and says which in its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastlab.analysis.sources.synthetic import planted_trials
from fastlab.cli.meta import main as meta_main
from fastlab.sweep.store import TrialStore, read_sweep

TRAIN = Path(sys.executable).with_name("fastlab-train")
EPOCHS = 4  # asha's rungs at 1 and 3 epochs (min_epochs 1, reduction_factor 3)
N = 10
QUICK = ["--n-boot", "4", "--trees", "30", "--quiet"]


def meta(*argv: str) -> int:
    """fastlab-meta's exit status (it always exits)."""
    with pytest.raises(SystemExit) as e:
        meta_main([*argv, *QUICK])
    return e.value.code


def sweep(sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(TRAIN), "-m", "hydra/sweeper=fastlab", f"hydra.sweep.dir={sweep_dir}",
           "hydra.sweeper.strategy=random", "hydra.sweeper.seed=0", f"hydra.sweeper.n_trials={N}",
           "hydra.sweeper.pruner=asha", "schedule.lr_max=tag(log, interval(1e-4, 1))",
           f"schedule.epochs={EPOCHS}", "data.size=16", "arch.channels=[8,16]", "arch.head_hidden=16",
           "trainer.progress=none", "trainer.threads=1", *extra]
    proc = subprocess.run(cmd, cwd=sweep_dir.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory) -> tuple[Path, str]:
    sweep_dir = tmp_path_factory.mktemp("prune") / "sweep"
    return sweep_dir, sweep(sweep_dir).stdout


def test_pruned_trials_are_recorded_with_their_last_value_and_epoch(pruned_sweep) -> None:
    sweep_dir, out = pruned_sweep
    trials = read_sweep(sweep_dir / "trials.db").trials
    pruned = [t for t in trials if t.status == "pruned"]
    done = [t for t in trials if t.status == "completed"]
    assert len(trials) == N and pruned and done and len(pruned) + len(done) == N
    with TrialStore.open_readonly(sweep_dir / "trials.db") as store:
        reports = store.reports()
    for t in pruned:
        epoch = t.metrics["pruned"]["epoch"]
        assert epoch in (1, 3) and t.metrics["epochs"] == epoch < EPOCHS  # stopped at a rung
        assert t.value == t.metrics["pruned"]["value"] == t.metrics["objective"]
        assert sorted(reports[t.number]) == list(range(1, epoch + 1))
        assert reports[t.number][epoch] == t.value
        assert (sweep_dir / t.job_dir / "history.csv").read_text().count("\n") == epoch + 1  # header + epochs
    for t in done:
        assert t.metrics["epochs"] == EPOCHS and sorted(reports[t.number]) == list(range(1, EPOCHS + 1))
    # asha: a trial stopped at a rung was worse there than the best 1/3 of those before it
    first = next(t for t in pruned)
    rung = first.metrics["pruned"]["epoch"]
    earlier = [reports[t.number][rung] for t in trials if t.number < first.number and rung in reports[t.number]]
    assert earlier and first.value < max(earlier)

    # the best-trials table, best.yaml and trials.csv: pruned ones counted, not ranked (drop)
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["pruned_trials"] == "drop" and best["trials"]["pruned"] == len(pruned)
    assert best["number"] == max(done, key=lambda t: t.value).number
    assert f"{len(pruned)} pruned (not ranked)" in out
    assert (sweep_dir / "trials.csv").read_text().count(",pruned,") == len(pruned)


def test_trials_in_job_dirs_named_by_their_overrides_are_pruned_too(tmp_path) -> None:
    """The driver hands each job its trial number: a job dir that depends on the overrides (not
    the job number the driver reserved) still reports to its trial, and the subdir holds only
    the trial's own overrides."""
    sweep_dir = tmp_path / "sweep"
    sweep(sweep_dir, "hydra.sweep.subdir=${hydra.job.override_dirname}")
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert len(trials) == N and any(t.status == "pruned" for t in trials)
    with TrialStore.open_readonly(sweep_dir / "trials.db") as store:
        reports = store.reports()
    for t in trials:
        assert "schedule.lr_max=" in t.job_dir and "hydra" not in t.job_dir, t.job_dir
        assert sorted(reports[t.number]) == list(range(1, t.metrics["epochs"] + 1))


def test_a_resume_keeps_every_pruning_decision(pruned_sweep) -> None:
    sweep_dir, _ = pruned_sweep
    before = read_sweep(sweep_dir / "trials.db").trials
    out = sweep(sweep_dir, "hydra.sweeper.pruned=keep")  # the same sweep; only the ranking policy changes
    assert read_sweep(sweep_dir / "trials.db").trials == before  # nothing run again, nothing re-judged
    assert "launching" not in out.stdout + out.stderr
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["pruned_trials"] == "keep"  # ranked by their last value now
    assert best["value"] == max(t.value for t in before if t.status in ("completed", "pruned"))


def test_fastlab_meta_drops_pruned_trials_or_keeps_them_with_their_epochs(pruned_sweep, tmp_path) -> None:
    sweep_dir, _ = pruned_sweep
    trials = read_sweep(sweep_dir / "trials.db").trials
    n_pruned = sum(t.status == "pruned" for t in trials)
    assert meta(str(sweep_dir), "--pruned", "keep", "--out", str(tmp_path / "keep")) == 0
    keep = json.loads((tmp_path / "keep" / "summary.json").read_text())
    assert keep["pruned"] == {"policy": "keep", "n": n_pruned, "text": keep["pruned"]["text"]}
    assert keep["n_trials"] == N and "epochs_run" in keep["importance"]
    assert keep["recommendation"]["param"] == "schedule.lr_max"  # a hyperparameter, not epochs_run
    report = (tmp_path / "keep" / "report.md").read_text()
    assert f"Pruned trials: {n_pruned} pruned trial(s) kept" in report and "--pruned keep" in report


def synthetic_store(path: Path, n_pruned: int) -> Path:
    """A trials.db of 16 planted trials, the last ``n_pruned`` of them pruned after 1 epoch of 3."""
    t = planted_trials(16, seed=0)
    with TrialStore(path / "trials.db") as store:
        store.set("direction", "maximize")
        for i, (p, v) in enumerate(zip(t.params, t.values, strict=True)):
            store.start([(i, p, str(i))], next_job=i + 1)
            pruned = i >= 16 - n_pruned
            status, epochs = ("pruned", 1) if pruned else ("completed", 3)
            metrics = {"objective_name": "accuracy", "status": status, "objective": float(v), "epochs": epochs}
            store.finish(i, status, float(v), metrics, str(i), None)
    return path


def test_meta_policies_on_a_store(tmp_path) -> None:
    sweep_dir = synthetic_store(tmp_path / "sweep", n_pruned=4)
    assert meta(str(sweep_dir), "--out", str(tmp_path / "drop")) == 0
    drop = json.loads((tmp_path / "drop" / "summary.json").read_text())
    assert drop["n_trials"] == 12 and drop["pruned"]["policy"] == "drop" and drop["pruned"]["n"] == 4
    assert "epochs_run" not in drop["importance"] and drop["policy"]["dropped"] == {"pruned": 4}
    assert "4 pruned trial(s) left out" in (tmp_path / "drop" / "report.md").read_text()
    assert meta(str(sweep_dir), "--pruned", "keep", "--out", str(tmp_path / "keep")) == 0
    keep = json.loads((tmp_path / "keep" / "summary.json").read_text())
    assert keep["n_trials"] == 16 and "epochs_run" in keep["features"]
    assert keep["features"]["epochs_run"]["range"] == [1.0, 3.0]


def test_meta_keep_without_epochs_is_one_line(tmp_path, capsys) -> None:
    sweep_dir = tmp_path / "sweep"
    synthetic_store(sweep_dir, n_pruned=2)
    with TrialStore(sweep_dir / "trials.db") as store:  # an app that records no epochs
        for t in store.trials():
            store.start([(t.number, t.params, t.job_dir)], next_job=16)
            metrics = {k: v for k, v in t.metrics.items() if k != "epochs"}
            store.finish(t.number, t.status, t.value, metrics, t.job_dir, None)
    assert meta(str(sweep_dir), "--pruned", "keep") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pruned keep needs each pruned trial's epochs" in err[0] and "--pruned drop" in err[0]
