"""Fault cases of a study shared by many drivers: a driver killed mid-trial, the PostgreSQL server
restarted (or gone for longer than ``hydra.sweeper.storage_timeout_s``), drivers that claim at the
same instant, and a ``trials.db`` that is damaged. Same form as ``cases.py``: each case asserts
what it checks and returns a ``Result``.

The trials are ``fastlab-train``'s (the small run of ``cases.SMALL``) where the case is about a
training being lost; the sweeper tests' tiny app where the case is about the claims alone, so that
many drivers can race through many trials in seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from fastlab.sweep.store import read_sweep
from tests.faults.cases import RNG, SMALL, SWEEP, Result, assert_whole_files, kill_when, ok, run
from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tests" / "sweep_apps" / "app.py"


def _train_sweep(sweep_dir: Path, *overrides: str) -> list[str]:
    """A fastlab-train sweep of 4 small trials in ``sweep_dir`` (the fault suite's ``SWEEP``)."""
    return [sys.executable, "-m", "fastlab.cli.train", *SWEEP, f"hydra.sweep.dir={sweep_dir}",
            *[o for o in SMALL if not o.startswith("schedule.lr_max")], *overrides]


def _app_sweep(sweep_dir: Path, *overrides: str) -> list[str]:
    """A sweep of the sweeper tests' tiny app (random x in [0, 1] and c in a, b, c)."""
    return [sys.executable, str(APP), "-m", f"hydra.sweep.dir={sweep_dir}", "x=interval(0,1)", "c=a,b,c",
            *overrides]


def _popen(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(where: Path) -> list:
    """The study's trials, from its ``trials.db`` or the PostgreSQL study its ``storage.json``
    names ([] while the store is not there yet, or its server is down)."""
    try:
        return read_sweep(where / "trials.db").trials
    except Exception:
        return []


def _check_whole_study(sweep_dir: Path, n: int) -> list:
    """Exactly ``n`` trials, numbered 0..n-1, all completed, each in a job dir of its own."""
    trials = read_sweep(sweep_dir / "trials.db").trials
    assert [t.number for t in trials] == list(range(n)), [t.number for t in trials]
    assert [t.status for t in trials] == ["completed"] * n, [t.status for t in trials]
    jobs = [t.job_dir for t in trials]
    assert len(set(jobs)) == n, f"a job dir twice: {jobs}"
    return trials


def kill_one_of_two_drivers(tmp: Path) -> Result:
    """Two drivers of one study; one is killed while it trains a trial. The other finishes the
    study, running the orphaned trial again once, in a new job dir."""
    sweep_dir = tmp / "two_drivers"
    cmd = _train_sweep(sweep_dir, "hydra.sweeper.n_trials=6", "schedule.epochs=3")
    victim = _popen(cmd, tmp)
    survivor = _popen(cmd, tmp)

    def victim_trains() -> bool:
        """The victim trains a trial (its job dir begun) and the study has a finished trial."""
        trials = _trials(sweep_dir)
        mine = [t for t in trials if t.status == "running" and t.driver
                and t.driver.split(":")[1] == str(victim.pid)]
        done = any(t.status == "completed" for t in trials)
        return done and bool(mine) and (sweep_dir / mine[0].job_dir / ".hydra").exists()

    kill_when(victim, victim_trains, RNG.uniform(0.0, 0.2))
    before = {t.number: t for t in _trials(sweep_dir) if t.status == "completed"}
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out[-3000:]
    trials = _check_whole_study(sweep_dir, 6)
    # Which trial the kill orphaned: the one the survivor says it ran again, once. The job dir the
    # victim had begun for it (none when the kill came between claiming the trial and starting its
    # job) is the one on disk that no trial ends in, left as it was.
    again = re.findall(r"trial (\d+): run again", out)
    assert len(again) == 1, out[-3000:]
    orphan = trials[int(again[0])]
    on_disk = {p.name for p in sweep_dir.iterdir() if p.name.isdigit()}
    abandoned = on_disk - {t.job_dir for t in trials}
    assert len(abandoned) <= 1, (on_disk, [t.job_dir for t in trials])
    old = f"job {abandoned.pop()}" if abandoned else "a job not yet begun"
    for number, t in before.items():  # what was done stays as it was
        assert trials[number] == t, f"completed trial {number} changed"
    assert_whole_files(sweep_dir)
    return Result("kill_one_of_two_drivers",
                  f"one of 2 drivers killed with trial {orphan.number} in hand: the other ran it again once "
                  f"({old} -> job {orphan.job_dir}) and finished all 6; {len(before)} done trial(s) untouched")


def postgres_restart(tmp: Path) -> Result:
    """The PostgreSQL server goes down during a sweep of 2 drivers: down briefly, they retry and
    finish; down for longer than storage_timeout_s, they stop with one line, and the same command
    finishes the sweep once the server is back."""
    with PgServer(dbname="faults") as pg:
        url = pg.url
        sweep_dir = tmp / "pg_restart"
        # quoted: the URL's ? and = are Hydra override syntax
        cmd = _app_sweep(sweep_dir, f"hydra.sweeper.storage='{url}'", "hydra.sweeper.n_trials=10",
                         "hydra.sweeper.storage_timeout_s=20", "sleep=0.5")
        drivers = [_popen(cmd, tmp) for _ in range(2)]
        wait_for(lambda: sum(t.status == "completed" for t in _trials(sweep_dir)) >= 2, drivers)
        pg.restart(down_s=2.0)  # fast shutdown: every connection cut mid-sweep
        for d in drivers:
            out, _ = d.communicate(timeout=180)
            assert d.returncode == 0, out[-3000:]
        trials = _check_whole_study_pg(sweep_dir, 10)

        # Down for longer than the drivers wait: one line each, finished trials kept.
        sweep_dir = tmp / "pg_gone"
        cmd = _app_sweep(sweep_dir, f"hydra.sweeper.storage='{url}'", "hydra.sweeper.n_trials=10",
                         "hydra.sweeper.storage_timeout_s=3", "sleep=0.5")
        drivers = [_popen(cmd, tmp) for _ in range(2)]
        wait_for(lambda: sum(t.status == "completed" for t in _trials(sweep_dir)) >= 2, drivers)
        # fast shutdown, down for longer than the drivers wait (a kill -9 would also lose the
        # last commits: this throwaway server runs with synchronous_commit=off)
        pg.restart(down_s=10.0)
        outs = [d.communicate(timeout=120)[0] for d in drivers]
        lines = []
        for d, out in zip(drivers, outs, strict=True):
            assert d.returncode != 0 and "Traceback" not in out, out[-3000:]
            last = [line for line in out.strip().splitlines() if line.strip()][-1]
            assert "has not answered for 3 s" in last and "run the same command again" in last, last
            lines.append(last)
        done_before = [t for t in _trials(sweep_dir) if t.status == "completed"]
        assert len(done_before) >= 2, done_before
        proc = run(cmd, cwd=tmp, timeout=180)
        ok(proc)
        after = _check_whole_study_pg(sweep_dir, 10)
        for t in done_before:
            assert after[t.number] == t, f"completed trial {t.number} changed"
    return Result("postgres_restart",
                  f"server restarted (2 s down) under 2 drivers: they retried and finished all {len(trials)}; "
                  f"down for longer than storage_timeout_s: each driver stopped with one line ('the trial "
                  f"store ... has not answered for 3 s ...; ... run the same command again'), the same "
                  f"command finished it, {len(done_before)} done trial(s) kept")


def wait_for(ready, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        assert not dead, f"a driver ended (exit {dead[0].returncode}) too early:\n{dead[0].communicate()[0][-3000:]}"
        assert time.monotonic() < end, "timed out waiting for the sweep to get going"
        time.sleep(0.05)


def _check_whole_study_pg(sweep_dir: Path, n: int) -> list:
    assert not (sweep_dir / "trials.db").exists() and (sweep_dir / "storage.json").is_file()
    return _check_whole_study(sweep_dir, n)


def drivers_claim_at_once(tmp: Path) -> Result:
    """Four drivers started at the same instant on a new study of 40 instant trials, in SQLite
    and in PostgreSQL: every claim races, yet no trial number or job dir is given twice."""
    shown = []
    with PgServer(dbname="faults") as pg:
        for storage in ("sqlite", "postgresql"):
            sweep_dir = tmp / f"at_once_{storage}"
            extra = [] if storage == "sqlite" else [f"hydra.sweeper.storage='{pg.url}'"]
            cmd = _app_sweep(sweep_dir, "hydra.sweeper.n_trials=40", "sleep=0", *extra)
            drivers = [_popen(cmd, tmp) for _ in range(4)]
            for d in drivers:
                out, _ = d.communicate(timeout=240)
                assert d.returncode == 0, out[-3000:]
            trials = _check_whole_study(sweep_dir, 40)
            on_disk = sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit())
            assert len(on_disk) == 40 and sorted(int(t.job_dir) for t in trials) == on_disk
            shown.append(f"{storage}: {len({t.driver for t in trials})} drivers ran trials")
    return Result("drivers_claim_at_once", "4 drivers started at once, 40 trials: no number or job dir twice ("
                  + "; ".join(shown) + ")")


def damaged_trials_db(tmp: Path) -> Result:
    """A finished study's ``trials.db`` damaged in two ways (not a database at all; a real one
    with its pages overwritten): the same command stops with one line naming the file and how to
    recover, and writes nothing in the sweep dir."""
    sweep_dir = tmp / "damaged"
    cmd = _app_sweep(sweep_dir, "hydra.sweeper.n_trials=30", "sleep=0")
    ok(run(cmd, cwd=tmp))
    db = sweep_dir / "trials.db"
    good = db.read_bytes()
    page = int.from_bytes(good[16:18], "big")
    damage = {
        "not a database": b"this is not a database\n" * 200,
        # the header kept, every page after the first one overwritten: SQLite opens it, then finds
        # its tables' pages malformed
        "pages overwritten": good[:page] + bytes(RNG.randrange(256) for _ in range(len(good) - page)),
    }
    lines = []
    for what, data in damage.items():
        db.write_bytes(data)
        before = {p.relative_to(sweep_dir): p.read_bytes() for p in sweep_dir.rglob("*") if p.is_file()}
        proc = run(cmd, cwd=tmp)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
        last = [line for line in out.strip().splitlines() if line.strip()][-1]
        assert last.startswith(f"{db} cannot be read as a fastlab trials store") and "move it aside" in last, \
            f"{what}: {last}"
        after = {p.relative_to(sweep_dir): p.read_bytes() for p in sweep_dir.rglob("*")
                 if p.is_file() and not p.name.startswith(".")}
        assert after == {k: v for k, v in before.items() if not k.name.startswith(".")}, \
            f"{what}: the sweep dir changed"
        lines.append(what)
    return Result("damaged_trials_db", f"trials.db {' / '.join(lines)}: one line each ('... cannot be read as a "
                                       "fastlab trials store ...: move it aside'), the sweep dir unchanged")


CASES = [kill_one_of_two_drivers, postgres_restart, drivers_claim_at_once, damaged_trials_db]
