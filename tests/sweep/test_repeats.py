"""``hydra.sweeper.repeats``: each configuration run with N training seeds, its value their mean
with sd and n in trials.csv, best.yaml and the table; n_trials counts configurations; a killed
sweep resumes the missing seeds only; the forest proposes from the configurations' means; several
drivers on SQLite and PostgreSQL share one study."""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastlab.sweep.store import Trial, read_sweep
from tests.sweep.test_drivers import finish
from tests.sweep.test_hydra import APP, job_overrides, killed_mid_sweep, run_app

SPACE = ["x=interval(0,1)", "c=a,b,c", "noise=0.05", "hydra.sweeper.repeats=3", "hydra.sweeper.seed=4"]


def check_repeats(sweep_dir: Path, n_configs: int) -> list[Trial]:
    runs = read_sweep(sweep_dir / "trials.db").trials
    assert len(runs) == 3 * n_configs and all(t.status == "completed" for t in runs)
    by_config: dict[int, list[Trial]] = {}
    for t in runs:
        by_config.setdefault(t.config, []).append(t)
    assert sorted(by_config) == list(range(n_configs))
    table = {int(r["number"]): r for r in csv.DictReader(open(sweep_dir / "trials.csv"))}
    for config, its in by_config.items():
        assert sorted(t.repeat for t in its) == [0, 1, 2]
        assert all(t.params == its[0].params for t in its)  # one configuration, three seeds
        for t in its:
            assert f"seed={t.repeat}" in job_overrides(sweep_dir, t.job_dir)
        values = [t.value for t in its]
        assert len(set(values)) == 3  # each seed its own draw of the noise
        row = table[config]
        assert float(row["value"]) == pytest.approx(statistics.mean(values))
        assert float(row["sd"]) == pytest.approx(statistics.stdev(values)) and row["n"] == "3"
        assert row["runs"] == " ".join(str(t.number) for t in its)
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    means = {c: statistics.mean(t.value for t in its) for c, its in by_config.items()}
    top = max(means, key=means.get)
    assert best["number"] == top and best["value"] == pytest.approx(means[top]) and best["n"] == 3
    assert not any(o.startswith("seed=") for o in best["overrides"])  # the configuration, not one seed
    assert len(list(csv.DictReader(open(sweep_dir / "runs.csv")))) == 3 * n_configs
    return runs


def test_repeats_run_each_configuration_with_its_seeds(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_app(sweep_dir, *SPACE, "hydra.sweeper.n_trials=4", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    check_repeats(sweep_dir, 4)
    table = proc.stdout[proc.stdout.index("best 4 of 4 configurations"):]
    assert table.splitlines()[1].split()[:5] == ["rank", "config", "mean", "sd", "n"]


def test_a_killed_sweep_resumes_the_missing_seeds_only(tmp_path: Path) -> None:
    args = [*SPACE, "hydra.sweeper.n_trials=3", "hydra.sweeper.strategy=random", "sleep=0.3",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    alone = tmp_path / "alone"
    run_app(alone, *args)
    reference = check_repeats(alone, 3)
    sweep_dir = tmp_path / "sweep"
    killed_mid_sweep(sweep_dir, *args, completed=4)
    before = {t.number: t for t in read_sweep(sweep_dir / "trials.db").trials if t.status == "completed"}
    assert 4 <= len(before) < 9
    run_app(sweep_dir, *args)
    runs = check_repeats(sweep_dir, 3)
    for number, t in before.items():  # kept, not run again
        assert runs[number].job_dir == t.job_dir and runs[number].value == t.value
    assert [(t.config, t.repeat, t.params) for t in runs] == [(t.config, t.repeat, t.params) for t in reference]


def test_the_forest_proposes_from_the_configurations_means(tmp_path: Path) -> None:
    from fastlab.sweep.driver import _config_observations

    def run(number, config, repeat, value, status="completed"):
        return Trial(number=number, status=status, params={"x": 0.1 * config}, value=value, config=config,
                     repeat=repeat)

    by_config = {0: [run(0, 0, 0, 0.5), run(1, 0, 1, 0.7)], 1: [run(2, 1, 0, None, "diverged"), run(3, 1, 1, 0.2)],
                 2: [run(4, 2, 0, None, "running")]}
    observations, pending = _config_observations(by_config, [])
    assert [(o.params, o.value) for o in observations] == [({"x": 0.0}, pytest.approx(0.6)), ({"x": 0.1}, 0.2)]
    assert pending == [{"x": 0.2}]


def test_the_repeat_key_must_not_be_swept_or_fixed(tmp_path: Path) -> None:
    for extra in (["seed=1,2"], ["seed=3"]):
        proc = run_app(tmp_path / f"s{len(extra[0])}", "x=interval(0,1)", "hydra.sweeper.repeats=2", *extra, check=False)
        assert proc.returncode == 2
        assert "hydra.sweeper.repeats gives each run its own seed, which the sweep also sets" in proc.stderr.splitlines()[-1]
    proc = run_app(tmp_path / "zero", "x=interval(0,1)", "hydra.sweeper.repeats=0", check=False)
    assert proc.returncode == 2 and "hydra.sweeper.repeats=0 must be a positive integer" in proc.stderr


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_drivers_share_the_runs_of_a_sweep_with_repeats(tmp_path: Path, storage: str, request) -> None:
    sweep_dir = tmp_path / "sweep"
    extra = []
    if storage == "postgresql":
        extra.append(f"hydra.sweeper.storage='{request.getfixturevalue('postgres_url')}'")
    cmd = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *SPACE, "hydra.sweeper.n_trials=4",
           "hydra.sweeper.strategy=random", "sleep=0.2", *extra]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    finish(procs)
    if storage == "postgresql":  # read through the sweep dir's storage.json
        assert (sweep_dir / "storage.json").is_file()
    runs = check_repeats(sweep_dir, 4)
    assert len({t.driver for t in runs}) == 2  # both drivers ran some
    assert len({t.job_dir for t in runs}) == 12
