"""The fault cases: real processes killed, starved of disk or stopped by a timeout, and what must
hold afterwards (a correct resume or one clear error, never a lost trial or a half file).

Each case is ``case(tmp: Path) -> Result`` and asserts what it checks; ``tests/faults`` runs them
under pytest and ``scripts/fault_report.py`` prints them as a table.
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.run.test_resume import assert_continued, processes, same_work

ROOT = Path(__file__).resolve().parents[2]
# A small, quick run: 16 px digits, a two-stage CNN, one thread (results are bit-identical only
# for the same thread count).
SMALL = ["data.size=16", "arch.channels=[16,32]", "arch.head_hidden=32", "schedule.lr_max=1e-2",
         "trainer.plots=false", "trainer.progress=none", "trainer.threads=1", "trainer.device=cpu"]
# Where the random kills land; set FASTLAB_FAULT_SEED to explore other points.
RNG = random.Random(int(os.environ.get("FASTLAB_FAULT_SEED", "0")))


@dataclass
class Result:
    case: str
    outcome: str
    lost: str = "none"


def train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "fastlab.cli.train", f"hydra.run.dir={run_dir}", *SMALL, *overrides]


def run(cmd: list[str], cwd: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def history(run_dir: Path) -> list[dict]:
    """history.csv without the wall-clock column (two runs never take the same seconds)."""
    with open(run_dir / "history.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


def assert_same_run(a: Path, b: Path) -> None:
    """``b`` ends as ``a``, a run never stopped: the same history and weights, from the same work
    (``b``'s processes trained ``a``'s batches and ran its LR range tests once between them)."""
    assert history(a) == history(b), f"history differs:\n{history(a)}\n{history(b)}"
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    same_work(a, b)


def resumed(run_dir: Path, resume_cmd: list[str], cwd: Path) -> str:
    """Resume the stopped run in ``run_dir`` with ``resume_cmd`` and check that the resumed
    process continued where ``last.pt`` stood (``tests/run/test_resume.assert_continued``).
    Returns what the resumed process did, for the report."""
    stopped = torch.load(run_dir / "last.pt", weights_only=True)
    ok(run(resume_cmd, cwd=cwd))
    assert_continued(run_dir, stopped)
    mine = processes(run_dir)[-1]
    return f"{mine['batches']} batches left trained, {mine['lr_find']} range tests"


def assert_whole_files(folder: Path) -> None:
    """Every JSON parses, every checkpoint loads, no temporary file is published."""
    for p in folder.rglob("*.json"):
        json.loads(p.read_text())
    for p in folder.rglob("*.pt"):
        torch.load(p, weights_only=True)
    for p in folder.rglob("*.csv"):
        rows = list(csv.reader(open(p, newline="")))
        assert all(len(r) == len(rows[0]) for r in rows), f"ragged {p}"


def kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 120) -> None:
    """SIGKILL ``proc`` ``delay`` s after ``ready()`` first holds."""
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before it could be killed")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the moment to kill")
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


_references: dict[tuple[str, ...], Path] = {}


def reference(tmp: Path, overrides: tuple[str, ...]) -> Path:
    """An uninterrupted run of ``overrides`` (made once per process and config)."""
    if overrides not in _references:
        run_dir = tmp / f"reference-{len(_references)}"
        ok(run(train_cmd(run_dir, *overrides), cwd=tmp))
        _references[overrides] = run_dir
    return _references[overrides]


def _kill_and_resume(tmp: Path, name: str, overrides: tuple[str, ...], stage: int | None = None,
                     max_delay: float = 0.4) -> Result:
    ref = reference(tmp, overrides)
    run_dir = tmp / name
    last = run_dir / "last.pt"
    delay = RNG.uniform(0.0, max_delay)
    proc = subprocess.Popen(train_cmd(run_dir, *overrides), cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when(proc, last.exists, delay)
    assert proc.returncode == -signal.SIGKILL
    position = torch.load(last, weights_only=True)["position"]
    if stage is not None:
        assert position["stage"] == stage, f"killed at {position}, not in stage {stage}"
    did = resumed(run_dir, train_cmd(tmp / f"{name}-resume", f"trainer.resume={run_dir}", *overrides), tmp)
    assert_same_run(ref, run_dir)
    assert not last.exists()  # a finished run keeps no last.pt
    where = f"stage {position['stage']}, epoch {position['epoch'] + position['epoch_offset']}, batch {position['batch']}"
    return Result(name, f"killed {delay:.2f}s after the first last.pt (checkpoint at {where}); "
                        f"resumed there ({did}): same weights and history.csv")


def kill_mid_epoch(tmp: Path) -> Result:
    return _kill_and_resume(tmp, "kill_mid_epoch", ("schedule.epochs=3", "trainer.checkpoint_every_n_steps=3"))


def kill_in_frozen_stage(tmp: Path) -> Result:
    # The first last.pt comes 2 batches into fine_tune's frozen first stage (two 22-batch
    # epochs); the kill follows within a tenth of a second, well inside it.
    return _kill_and_resume(tmp, "kill_in_frozen_stage", (
        "schedule=fine_tune", "schedule.epochs=1", "schedule.freeze_epochs=2",
        "trainer.checkpoint_every_n_steps=2"), stage=0, max_delay=0.1)


def kill_after_lr_find(tmp: Path) -> Result:
    return _kill_and_resume(tmp, "kill_after_lr_find", (
        "schedule.lr_max=find", "schedule.epochs=2", "trainer.checkpoint_every_n_steps=5"))


WRITER = """
import sys, torch
from pathlib import Path
from fastlab.rundir import save_checkpoint
target = Path(sys.argv[1])
i = 0
while True:
    i += 1
    save_checkpoint(target, {"i": torch.tensor(i), "w": torch.full((4_000_000,), float(i))})
    print(i, flush=True)
"""


def kill_while_writing_checkpoint(tmp: Path) -> Result:
    target = tmp / "ckpt" / "last.pt"
    target.parent.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    delay = RNG.uniform(0.0, 0.3)
    kill_when(proc, target.exists, delay)
    state = torch.load(target, weights_only=True)  # whole: the old or the new file, never half
    i = int(state["i"])
    assert torch.equal(state["w"], torch.full((4_000_000,), float(i)))
    from fastlab.rundir import clean_stale_temps

    leftovers = clean_stale_temps(target.parent)
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.pt"]
    return Result("kill_while_writing_checkpoint",
                  f"killed {delay:.2f}s into a loop of 16 MB saves: last.pt is save #{i}, whole; "
                  f"{len(leftovers)} temporary file(s) of the killed writer removed")


SWEEP = ["-m", "hydra/sweeper=fastlab", "hydra.sweeper.n_trials=4", "hydra.sweeper.strategy=random",
         "schedule.epochs=1", "schedule.lr_max=interval(1e-3,3e-2)"]


def _sweep_rows(sweep_dir: Path) -> list[dict]:
    db = sqlite3.connect(sweep_dir / "trials.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM trials ORDER BY number")]
    finally:
        db.close()


def _statuses(sweep_dir: Path) -> list[str]:
    try:
        return [r["status"] for r in _sweep_rows(sweep_dir)]
    except sqlite3.Error:  # the driver has not made the table yet
        return []


def kill_sweep_driver(tmp: Path) -> Result:
    sweep_dir = tmp / "sweep_driver"
    cmd = [sys.executable, "-m", "fastlab.cli.train", *SWEEP, f"hydra.sweep.dir={sweep_dir}",
           *[o for o in SMALL if not o.startswith("schedule.lr_max")]]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: "completed" in _statuses(sweep_dir) and "running" in _statuses(sweep_dir),
              RNG.uniform(0.0, 0.5))
    before = {r["number"]: r for r in _sweep_rows(sweep_dir) if r["status"] == "completed"}
    ok(run(cmd, cwd=tmp))  # the same command again
    after = _sweep_rows(sweep_dir)
    assert [r["status"] for r in after] == ["completed"] * 4, [r["status"] for r in after]
    for number, row in before.items():
        assert after[number] == row, "a completed trial changed"
    assert_whole_files(sweep_dir)
    return Result("kill_sweep_driver", f"driver killed with {len(before)} trial(s) done; the same command "
                                       "finished the sweep: 4 completed, the done ones untouched")


def kill_sweep_worker(tmp: Path) -> Result:
    sweep_dir = tmp / "sweep_worker"
    cmd = [sys.executable, "-m", "fastlab.cli.train", *SWEEP, f"hydra.sweep.dir={sweep_dir}",
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "schedule.epochs=3",
           *[o for o in SMALL if not o.startswith("schedule.lr_max")]]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    workers: list[int] = []
    while not workers and time.monotonic() < end:
        time.sleep(0.05)
        if "running" in _statuses(sweep_dir) and any((sweep_dir / str(j) / ".hydra").exists() for j in range(2)):
            # loky's workers, not its resource tracker (also a child of the driver)
            workers = [c for c in _children(proc.pid) if b"popen_loky" in _cmdline(c)]
    assert workers, "no worker process appeared"
    time.sleep(RNG.uniform(0.0, 0.5))
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    # the driver's one line (loky's resource tracker may print its own noise after it)
    lines = [line for line in err.splitlines() if "launcher failed" in line]
    assert proc.returncode != 0 and len(lines) == 1 and "run the same command again" in lines[0], err[-2000:]
    ok(run(cmd, cwd=tmp))
    after = _sweep_rows(sweep_dir)
    assert [r["status"] for r in after] == ["completed"] * 4, [r["status"] for r in after]
    assert_whole_files(sweep_dir)
    return Result("kill_sweep_worker", "a joblib worker killed mid-trial: the driver stopped with one line "
                                       f"({lines[0][:60]}...); the same command finished all 4 trials")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    """Descendant processes of ``pid`` (from /proc), deepest last."""
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            for c in children:
                out.append(int(c))
                frontier.append(int(c))
    return out


def disk_full(tmp: Path) -> Result:
    """A file-size limit (RLIMIT_FSIZE) below last.pt's size: writes fail with EFBIG, as on a
    full disk, while the small files still fit."""
    run_dir = tmp / "disk_full"
    limit = 40_000

    def starve():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = run(train_cmd(run_dir, "schedule.epochs=2"), cwd=tmp, preexec_fn=starve)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines[-1].startswith("fastlab-train: error: cannot write") and "last.pt" in lines[-1], lines[-1]
    assert_whole_files(run_dir)
    status = json.loads((run_dir / "metrics.json").read_text())["status"]
    assert status == "failed" and not (run_dir / "last.pt").exists()
    assert not list(run_dir.glob(".*.tmp"))
    return Result("disk_full", f"file-size limit {limit} B: exit 2 with one line ({lines[-1][22:80]}...); "
                               "metrics.json says failed; no half file")


def timeout_then_resume(tmp: Path) -> Result:
    overrides = ("schedule.epochs=6", "trainer.checkpoint_every_n_steps=3")
    ref = reference(tmp, overrides)
    run_dir = tmp / "timeout"
    # The reference's whole job took this long (data, model, training, outputs: what the timeout
    # counts); stop the run in its last third, with checkpoints written (every 3 batches).
    total_s = json.loads((ref / "metrics.json").read_text())["seconds"]["total"]
    timeout = round(total_s * RNG.uniform(0.7, 0.85), 2)
    # On a loaded machine the same job can take longer (or shorter) than the reference did, so
    # the timeout may land before the first checkpoint or after the end: then move it and retry,
    # since what this case checks is the stop and the resume, not the machine's speed.
    for _ in range(8):
        shutil.rmtree(run_dir, ignore_errors=True)
        proc = run(train_cmd(run_dir, f"trainer.timeout={timeout}", *overrides), cwd=tmp)
        if proc.returncode == 0:
            timeout = round(timeout * 0.8, 2)
        elif proc.returncode == 2 and not (run_dir / "last.pt").exists():
            # before the first checkpoint (later), or after training, once last.pt was removed
            # while the outputs were written (sooner)
            late = (run_dir / "history.csv").exists() and len(history(run_dir)) == 6
            timeout = round(timeout * (0.8 if late else 1.25), 2)
        else:
            break
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and "passed trainer.timeout" in lines[-1], proc.stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
    assert (run_dir / "last.pt").exists()
    did = resumed(run_dir, train_cmd(tmp / "timeout-resume", f"trainer.resume={run_dir}", *overrides), tmp)
    assert_same_run(ref, run_dir)
    return Result("timeout_then_resume", f"trainer.timeout={timeout}s stopped it with one line (exit 2); "
                                         f"resumed there ({did}): same weights and history.csv")


CASES = [kill_mid_epoch, kill_in_frozen_stage, kill_after_lr_find, kill_while_writing_checkpoint,
         kill_sweep_driver, kill_sweep_worker, disk_full, timeout_then_resume]
