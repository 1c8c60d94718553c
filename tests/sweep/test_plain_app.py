"""A plain Hydra app (it writes its result and returns nothing) swept with ``hydra/sweeper=fastlab``:
grid and random complete its trials without a value, a string return is kept as text, the
strategies that need a number say so in one line before the first trial, a killed sweep resumes,
and two drivers share a PostgreSQL study. The kill and the second driver are synchronised on a
file the app writes when it reaches a chosen job (``hold_job``), never on a sleep."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from fastlab.sweep.results import NO_OBJECTIVE
from fastlab.sweep.store import read_sweep

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "sweep_apps" / "plain.py"
META = Path(sys.executable).parent / "fastlab-meta"
SWEEPER = ["hydra/sweeper=fastlab", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
GRID = [*SWEEPER, "hydra.sweeper.strategy=grid", "x=0,1,2", "y=a,b"]
RANDOM = [*SWEEPER, "hydra.sweeper.strategy=random", "hydra.sweeper.seed=0", "hydra.sweeper.n_trials=6",
          "+z=interval(0,1)", "y=a,b"]


def command(sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}


def run(sweep_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(sweep_dir, *overrides), cwd=sweep_dir.parent, env=env(), capture_output=True,
                          text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start(sweep_dir: Path, *overrides: str, output: bool = True) -> subprocess.Popen:
    """A driver in the background; ``output=False`` for one to be killed: its orphaned joblib
    workers would hold an output pipe open long after it died."""
    return subprocess.Popen(command(sweep_dir, *overrides), cwd=sweep_dir.parent, env=env(),
                            stdout=subprocess.PIPE if output else subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def wait_for(what, timeout: float = 120.0) -> None:
    """Until ``what()`` holds: an event the app or a driver writes (a file, a trial's status)."""
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def trials_csv(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_completed_without_values(sweep_dir: Path, n: int) -> list:
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert [t.number for t in trials] == list(range(n))
    assert [t.status for t in trials] == ["completed"] * n
    assert all(t.value is None and t.error is None for t in trials)
    assert len({t.job_dir for t in trials}) == n
    for t in trials:  # each job ran the app, which wrote its own result
        result = (sweep_dir / t.job_dir / "result.txt").read_text()
        assert f"y={t.params['y']}" in result
    rows = trials_csv(sweep_dir)
    assert [(r["status"], r["value"], r["returned"]) for r in rows] == [("completed", "", "None")] * n
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["value"] is None and best["number"] is None and best["note"] == NO_OBJECTIVE
    assert best["trials"]["completed"] == n
    return trials


def test_grid_and_random_complete_trials_that_return_nothing(tmp_path: Path) -> None:
    grid = tmp_path / "grid"
    proc = run(grid, *GRID)
    trials = check_completed_without_values(grid, 6)
    # the grid in the basic sweeper's order, the first key outermost
    assert [(t.params["x"], t.params["y"]) for t in trials] == [(x, y) for x in (0, 1, 2) for y in "ab"]
    assert f"(6 completed, 0 diverged, 0 failed): {NO_OBJECTIVE}" in proc.stdout
    assert "None" in proc.stdout.splitlines()[-2]  # the table shows what each trial returned
    assert yaml.safe_load((grid / "multirun.yaml").read_text())["hydra"]["overrides"]["task"] == ["x=0,1,2", "y=a,b"]
    # fastlab-meta says in one line why there is nothing to analyse
    meta = subprocess.run([str(META), str(grid)], capture_output=True, text=True, timeout=120)
    assert meta.returncode == 2
    assert meta.stderr.strip().splitlines() == [
        f"fastlab-meta: error: no objective was returned: the trials of {grid} completed without a value (their task "
        "returned nothing, or text); return the objective as a float from the task (and set "
        "hydra.sweeper.direction), or pass --metric NAME of a number the trials' metrics.json holds"]

    random = tmp_path / "random"
    run(random, *RANDOM)
    trials = check_completed_without_values(random, 6)
    assert len({t.params["z"] for t in trials}) == 6 and all(0 <= t.params["z"] <= 1 for t in trials)


def test_a_string_return_is_kept_as_text_not_a_failure(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run(sweep_dir, *GRID, "ret=text")
    rows = trials_csv(sweep_dir)
    assert [r["status"] for r in rows] == ["completed"] * 6
    assert [r["returned"] for r in rows] == [f"x={x} y={y}" for x in (0, 1, 2) for y in "ab"]
    assert all(r["error"] == "" and r["value"] == "" for r in rows)


def test_what_needs_a_number_says_so_before_the_first_trial(tmp_path: Path) -> None:
    for i, setting in enumerate(["hydra.sweeper.strategy=forest", "hydra.sweeper.pruner=median"]):
        sweep_dir = tmp_path / f"s{i}"
        proc = run(sweep_dir, *GRID, setting, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"{setting} needs each trial's objective, a number, and the way it is better: return the objective as "
            "a float from the task and set hydra.sweeper.direction=maximize or hydra.sweeper.direction=minimize, "
            "or sweep with hydra.sweeper.strategy=grid or random, which also take a task that returns nothing"]
        assert not (sweep_dir / "trials.db").exists()  # nothing ran
    # a direction given, the forest stops at the first trial that returns nothing, not after max_failure_rate
    sweep_dir = tmp_path / "forest"
    proc = run(sweep_dir, "hydra/sweeper=fastlab", "hydra.sweeper.strategy=forest", "hydra.sweeper.n_trials=6",
               "hydra.sweeper.direction=maximize", "hydra.sweeper.max_failure_rate=1", "+z=interval(0,1)", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "sweep stopped: the task returned nothing (None), not a number, and hydra.sweeper.strategy=forest needs one: "
        "return the objective as a float, or sweep with hydra.sweeper.strategy=grid or random (no pruner), which "
        "take any return")
    assert [t.status for t in read_sweep(sweep_dir / "trials.db").trials] == ["failed"]


def test_a_killed_sweep_resumes(tmp_path: Path) -> None:
    sweep_dir, hold = tmp_path / "sweep", tmp_path / "hold"
    hold.mkdir()
    driver = start(sweep_dir, *RANDOM, "hold_job=3", f"hold_dir={hold}", output=False)
    try:
        wait_for((hold / "held").exists)  # job 3 runs: trials before it have been launched
    finally:
        driver.send_signal(signal.SIGKILL)  # as a crash would stop it
        driver.wait()
        (hold / "release").touch()  # the held job (an orphaned worker) ends too
    before = [t.status for t in read_sweep(sweep_dir / "trials.db").trials]
    assert "running" in before and before.count("completed") < 6  # the held trial at least
    try:
        run(sweep_dir, *RANDOM, "hold_job=3", f"hold_dir={hold}")
    finally:  # the killed driver's orphaned joblib workers, in its session: they would idle on
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    resumed = check_completed_without_values(sweep_dir, 6)
    # the same trials as a sweep never stopped (trial k is Sobol point k)
    alone = tmp_path / "alone"
    run(alone, *RANDOM)
    assert [t.params for t in resumed] == [t.params for t in read_sweep(alone / "trials.db").trials]


def test_two_drivers_share_a_postgresql_study(tmp_path: Path, postgres_url: str) -> None:
    sweep_dir, hold = tmp_path / "sweep", tmp_path / "hold"
    hold.mkdir()
    shared = [*GRID, f"hydra.sweeper.storage='{postgres_url}'", "hydra.sweeper.batch_size=1", "hold_job=0",
              f"hold_dir={hold}"]
    first = start(sweep_dir, *shared)
    try:
        wait_for((hold / "held").exists)  # the first driver's trial 0 holds it
        second = start(sweep_dir, *shared)
        try:
            # the second driver runs the rest of the grid while the first one's trial holds
            wait_for(lambda: [t.status for t in read_sweep(sweep_dir / "trials.db").trials].count("completed") == 5)
        finally:
            (hold / "release").touch()
            outs = [p.communicate(timeout=180)[0] for p in (second, first)]
    finally:
        (hold / "release").touch()
        if first.poll() is None:  # only when the test failed before it ended
            first.kill()
            first.wait()
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    trials = check_completed_without_values(sweep_dir, 6)
    assert not (sweep_dir / "trials.db").exists() and (sweep_dir / "storage.json").is_file()
    assert trials[0].driver != trials[1].driver
    assert {t.driver for t in trials[1:]} == {trials[1].driver}
    assert all(NO_OBJECTIVE in out for out in outs)  # each driver's table is the whole study's
