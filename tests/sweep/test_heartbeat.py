"""Drivers on two hosts sharing one named PostgreSQL study (``hydra.sweeper.study``) from
different sweep dirs. A driver on another host cannot be judged by its lock file (a lock over a
network filesystem cannot be trusted; it is not even in this sweep dir): its heartbeat in the
store says whether it lives. A trial whose driver last beat longer ago than ``heartbeat_s`` is
run again, once, with the same params; one whose driver beats is left to it, however long it
runs. A study of another name in the same database is another study.

The other host is a real driver process (``run_sweep`` in a subprocess) whose host name is
``gpu-node-7``; its job waits for a line on stdin, so the test knows it is mid-trial and decides
when it ends. A host that died an hour ago is that driver with its clock an hour behind, then
SIGKILLed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from fastlab.sweep.driver import Outcome, run_sweep
from fastlab.sweep.lease import HOST, DriverLease
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space
from fastlab.sweep.store import read_sweep
from fastlab.sweepdir import read_pointer

ROOT = Path(__file__).resolve().parents[2]
OTHER_HOST = "gpu-node-7"
SPACE = ["x=interval(0,1)"]
STUDY = "nightly"

OTHER_DRIVER = """
import json, sys
from datetime import datetime, timedelta, timezone
import fastlab.sweep.lease as lease
import fastlab.sweep.store as store
from fastlab.sweep.driver import Outcome, run_sweep
from fastlab.sweep.settings import SweepSettings
from fastlab.sweep.space import parse_space

url, study, sweep_dir, behind_s, host = sys.argv[1:6]
lease.HOST = host
if float(behind_s):  # every stamp it writes (its trial's start, each heartbeat) that long ago
    store.now = lambda: (datetime.now(timezone.utc) - timedelta(seconds=float(behind_s))).isoformat(timespec="seconds")

def launch(overrides, first):
    print(json.dumps({"running": overrides}), flush=True)
    sys.stdin.readline()
    return [Outcome("completed", 0.5, job_dir=f"{sweep_dir}/{first + i}") for i in range(len(overrides))]

run_sweep(SweepSettings(storage=url, study=study, n_trials=2, strategy="random", seed=0, direction="minimize"),
          parse_space(None, json.loads(sys.argv[6])), sweep_dir, launch, job_dir_for=lambda n: f"{sweep_dir}/{n}",
          echo=lambda line: None)
"""


def other_host(url: str, sweep_dir: Path, behind_s: float = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", OTHER_DRIVER, url, STUDY, str(sweep_dir), str(behind_s),
                             OTHER_HOST, json.dumps(SPACE)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def mid_trial(proc: subprocess.Popen) -> list[str]:
    """Wait for ``proc``'s driver to be inside its first job; its overrides."""
    line = proc.stdout.readline()
    assert line, proc.stderr.read()[-3000:]
    return json.loads(line)["running"][0]


class Launcher:
    """This host's launcher: runs each job at once, recording its overrides."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir, self.jobs = sweep_dir, []

    def __call__(self, overrides: list[list[str]], first: int) -> list[Outcome]:
        self.jobs += overrides
        return [Outcome("completed", 0.25, job_dir=str(self.sweep_dir / str(first + i))) for i in range(len(overrides))]


def here(url: str, sweep_dir: Path, launcher: Launcher, study: str = STUDY, **settings) -> list:
    return run_sweep(SweepSettings(storage=url, study=study, strategy="random", seed=0, direction="minimize",
                                   **{"n_trials": 2, **settings}),
                     parse_space(None, SPACE), sweep_dir, launcher, job_dir_for=lambda n: str(sweep_dir / str(n)),
                     echo=lambda line: None)


class Driving(threading.Thread):
    """This host's driver on a thread of its own: a driver that waits for ever on a trial it should
    have taken over fails the test at ``finish`` instead of hanging it."""

    def __init__(self, drive) -> None:
        super().__init__(daemon=True)
        self.drive, self.result, self.error = drive, None, None

    def run(self) -> None:
        try:
            self.result = self.drive()
        except BaseException as e:  # raised again by finish
            self.error = e

    def finish(self, timeout: float = 120) -> list:
        self.join(timeout)
        assert not self.is_alive(), f"this host's driver still waits after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_driver_on_another_host_silent_for_heartbeat_s_is_dead_and_its_trial_runs_again(
        tmp_path: Path, postgres_url: str, caplog) -> None:
    remote_dir, local_dir = tmp_path / "node7" / "sweep", tmp_path / "here" / "sweep"
    remote = other_host(postgres_url, remote_dir, behind_s=3600)
    try:
        orphan_overrides = mid_trial(remote)
        remote.send_signal(signal.SIGKILL)  # mid-trial: trial 0 stays running under gpu-node-7's name
        remote.wait()
    finally:
        stop(remote)
    (orphan,) = read_sweep(remote_dir / "trials.db").trials
    assert orphan.status == "running" and orphan.driver.startswith(f"{OTHER_HOST}:")
    silent = datetime.now(timezone.utc) - datetime.fromisoformat(orphan.heartbeat_at)
    assert silent.total_seconds() > 3000  # its last beat an hour ago, far past heartbeat_s=60
    # its lock file is free (the process is gone) but on "another host": only the heartbeat counts
    assert (remote_dir / ".drivers").is_dir() and not (local_dir / ".drivers").exists()
    caplog.set_level("INFO", logger="fastlab.sweep.driver")
    launcher = Launcher(local_dir)
    local = Driving(lambda: here(postgres_url, local_dir, launcher, heartbeat_s=60))
    local.start()
    trials = local.finish()
    assert [t.status for t in trials] == ["completed", "completed"]
    assert trials[0].params == orphan.params and trials[0].job_dir != orphan.job_dir  # the same params, a new job dir
    assert trials[0].driver.startswith(f"{HOST}:") and trials[1].driver == trials[0].driver
    assert launcher.jobs[0][:len(orphan_overrides)] == orphan_overrides and len(launcher.jobs) == 2
    assert caplog.text.count("trial 0: run again (its driver stopped)") == 1
    # one study, two sweep dirs: each names it in its storage.json and reads the same trials
    assert read_pointer(remote_dir) == read_pointer(local_dir) == {"storage": postgres_url, "study": STUDY}
    assert read_sweep(remote_dir / "trials.db").trials == read_sweep(local_dir / "trials.db").trials


def test_a_driver_on_another_host_that_beats_keeps_its_trial(tmp_path: Path, postgres_url: str, monkeypatch,
                                                              caplog) -> None:
    remote_dir, local_dir = tmp_path / "node7" / "sweep", tmp_path / "here" / "sweep"
    judged: list[bool] = []  # what this host's driver decided about gpu-node-7's driver, each time
    waited = threading.Event()
    real_alive = DriverLease.alive

    def alive(self, driver, heartbeat_at, heartbeat_s):
        out = real_alive(self, driver, heartbeat_at, heartbeat_s)
        if self.dir.parent == local_dir and driver is not None and driver.startswith(f"{OTHER_HOST}:"):
            judged.append(out)
            if len(judged) >= 3 or not out:  # its own claim, then two looks while it waits with nothing to run
                waited.set()
        return out

    monkeypatch.setattr(DriverLease, "alive", alive)
    caplog.set_level("INFO", logger="fastlab.sweep.driver")
    remote = other_host(postgres_url, remote_dir)
    launcher = Launcher(local_dir)
    local = Driving(lambda: here(postgres_url, local_dir, launcher, heartbeat_s=3600))
    try:
        remote_overrides = mid_trial(remote)
        local.start()
        assert waited.wait(timeout=120), (judged, local.error)
        assert judged and all(judged), judged  # alive every time: a fresh heartbeat, no lock file here
        assert len(launcher.jobs) == 1  # only trial 1: trial 0 is gpu-node-7's
        remote.stdin.write("done\n")  # its job ends; it records trial 0 and both drivers finish
        remote.stdin.flush()
        out, err = remote.communicate(timeout=120)
        assert remote.returncode == 0, err[-3000:]
        trials = local.finish()
    finally:
        stop(remote)
    assert [t.status for t in trials] == ["completed", "completed"]
    assert trials[0].driver.startswith(f"{OTHER_HOST}:") and trials[0].value == 0.5
    assert [t.job_dir for t in trials] == ["0", "1"]  # job numbers of the study, each driver's one job
    assert trials[1].driver.startswith(f"{HOST}:") and trials[1].value == 0.25
    assert launcher.jobs[0][:1] != remote_overrides[:1] and "trial 0: run again" not in caplog.text


def test_another_study_name_in_the_same_database_is_another_study(tmp_path: Path, postgres_url: str) -> None:
    first = Launcher(tmp_path / "a")
    here(postgres_url, tmp_path / "a", first, n_trials=3)
    # the same sweep dir's command with another study name starts afresh: none of the 3 trials
    other = Launcher(tmp_path / "b")
    trials = here(postgres_url, tmp_path / "b", other, study="weekly", n_trials=1)
    assert [t.number for t in trials] == [0] and len(other.jobs) == 1
    assert read_pointer(tmp_path / "b") == {"storage": postgres_url, "study": "weekly"}
    # and the first study is as it was; its name found again from another dir, it is resumed, not redone
    again = Launcher(tmp_path / "c")
    trials = here(postgres_url, tmp_path / "c", again, n_trials=3)
    assert len(trials) == 3 and again.jobs == [] and [t.driver for t in trials] == [trials[0].driver] * 3
    assert len(first.jobs) == 3 and [t.job_dir for t in trials] == ["0", "1", "2"]
