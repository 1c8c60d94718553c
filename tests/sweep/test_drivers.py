"""Many drivers sharing one study: real processes running the same command against one SQLite
``trials.db`` or one PostgreSQL study. Exactly ``n_trials`` trials finish, no trial number or job
dir twice; a killed driver's trial is run again, once, by another; a store that is not a database
stops a driver with one line and nothing in the sweep dir changes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fastlab.sweep.store import read_sweep
from tests.conftest import wait_until
from tests.sweep.test_hydra import job_overrides

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "sweep_apps" / "app.py"
# y is conditional (hydra.sweeper.conditions): swept only where c is b
SPACE = ["x=interval(0,1)", "c=a,b,c", "y=range(1,6)", "+hydra.sweeper.conditions.y=\"c == 'b'\"",
         "hydra.sweeper.strategy=random", "hydra.sweeper.seed=0"]


def driver(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    """One driver of the sweep in ``sweep_dir``: the same command each time."""
    cmd = [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", *SPACE, *overrides]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(cmd, cwd=sweep_dir.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(procs: list[subprocess.Popen], timeout: float = 120) -> list[str]:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out
        outs.append(out)
    return outs


def check_study(sweep_dir: Path, n: int) -> list:
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert [t.number for t in trials] == list(range(n))
    assert [t.status for t in trials] == ["completed"] * n
    jobs = [t.job_dir for t in trials]
    assert len(set(jobs)) == n  # no job dir twice
    for job in jobs:
        assert (sweep_dir / job / "marker.txt").is_file()
    assert all(("y" in t.params) == (t.params["c"] == "b") for t in trials)
    return trials


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_three_drivers_share_one_study(tmp_path: Path, storage: str, request) -> None:
    sweep_dir = tmp_path / "sweep"
    extra = ["hydra.sweeper.n_trials=12", "sleep=0.3"]
    if storage == "postgresql":
        extra.append(f"hydra.sweeper.storage='{request.getfixturevalue('postgres_url')}'")  # quoted: = and ? in it
    outs = finish([driver(sweep_dir, *extra) for _ in range(3)])
    trials = check_study(sweep_dir, 12)
    # the work was shared: more than one driver ran trials, each driver's own table is whole
    assert len({t.driver for t in trials}) >= 2
    assert all("best 5 of 12 trials" in out for out in outs)
    if storage == "postgresql":
        assert not (sweep_dir / "trials.db").exists() and (sweep_dir / "storage.json").is_file()
    # the same params as one driver alone would have run (trial k = Sobol point k)
    alone = tmp_path / "alone"
    finish([driver(alone, "hydra.sweeper.n_trials=12", "sleep=0")])
    assert [t.params for t in read_sweep(alone / "trials.db").trials] == [t.params for t in trials]


def started_jobs(sweep_dir: Path) -> dict[str, int]:
    """The job dirs whose trial has begun, with the pid that runs it: the tiny app writes
    ``marker.txt`` (its pid) just before its ``sleep``."""
    found = {}
    for marker in sweep_dir.glob("*/marker.txt"):
        pid = marker.read_text()
        if pid:  # not caught between the file's creation and its write
            found[marker.parent.name] = int(pid)
    return found


def test_a_killed_drivers_trial_is_run_again_once_by_another(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    n = 6
    victim = driver(sweep_dir, f"hydra.sweeper.n_trials={n}", "sleep=1.0")
    survivor = driver(sweep_dir, f"hydra.sweeper.n_trials={n}", "sleep=1.0")  # the same command
    procs = [victim, survivor]
    try:
        # Both drivers at work on the study, then the victim killed the moment it starts its
        # next trial (its 1 s sleep just begun): the trial stays running, its lock file free.
        wait_until(lambda: {victim.pid, survivor.pid} <= set(started_jobs(sweep_dir).values()), procs,
                   "a trial started by each driver")
        seen = set(started_jobs(sweep_dir))
        wait_until(lambda: victim.pid in {pid for job, pid in started_jobs(sweep_dir).items() if job not in seen},
                   procs, "the victim's next trial")
        victim.send_signal(signal.SIGKILL)
    except BaseException:
        survivor.kill()
        raise
    finally:
        victim.kill()  # a no-op once killed
        victim.wait()
    orphan = {job for job, pid in started_jobs(sweep_dir).items() if job not in seen and pid == victim.pid}
    assert victim.returncode == -signal.SIGKILL and len(orphan) == 1
    (orphan,) = orphan
    out = finish([survivor])[0]
    trials = check_study(sweep_dir, n)
    # run again once, by the survivor, with the same params (its job's overrides) in a new job dir
    again = [t for t in trials if f"trial {t.number}: run again" in out]
    (rerun,) = [t for t in again if job_overrides(sweep_dir, t.job_dir) == job_overrides(sweep_dir, orphan)]
    assert rerun.job_dir != orphan and started_jobs(sweep_dir)[rerun.job_dir] == survivor.pid
    # On a loaded machine the victim may still hold its previous trial as its next one starts:
    # every job it left unfinished is run again once, and none of them is a trial's job any more.
    left = {job for job, pid in started_jobs(sweep_dir).items() if pid == victim.pid} - {t.job_dir for t in trials}
    # (a survivor that starts after the victim's first claim also says, as it resumes, that the
    # running trials are run again unless another driver still runs them: not a run again)
    said = [line for line in out.splitlines() if re.search(r"trial \d+: run again", line)]
    assert orphan in left and len(said) == len(left) == len(again), said


def test_a_store_that_is_not_a_database_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "trials.db").write_bytes(b"this is not a database\n" * 50)
    (sweep_dir / "trials.csv").write_text("number,status\n0,completed\n")
    before = {p.name: p.read_bytes() for p in sweep_dir.iterdir()}
    proc = driver(sweep_dir, "hydra.sweeper.n_trials=2", "sleep=0")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert lines[-1].startswith(f"{sweep_dir / 'trials.db'} cannot be read as a fastlab trials store")
    assert "move it aside" in lines[-1] and "Traceback" not in out
    after = {p.name: p.read_bytes() for p in sweep_dir.iterdir() if not p.name.startswith(".")}
    assert after == before
