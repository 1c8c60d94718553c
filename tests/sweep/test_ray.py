"""A fastlab sweep through hydra/launcher=ray (hydra-ray-launcher) on a real local Ray cluster.

The cluster is one head node on loopback, started with ``ray start`` and ended by killing its
process group (``ray stop --force`` would kill every Ray process on the machine, other users'
clusters included). Two settings the launcher needs, both passed on the command line:

- ``+hydra.launcher.ray.init.object_store_memory=null``: hydra-ray-launcher 1.2.2 adds
  ``object_store_memory=78643200`` to every ``ray.init``, which Ray refuses when it joins an
  existing cluster (hydra issue #2893; the fix is merged upstream but not released);
- ``hydra.sweeper.async=false``: the launcher's ``start_ray`` checks ``ray.is_initialized()``
  and then calls ``ray.init``, so two launch calls from the driver's threads at once both
  initialise and the second fails ("Perhaps you called ray.init twice by accident?"). In
  batches, one launch call runs ``batch_size`` trials on the cluster at once.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray on 127.0.0.1: without it Ray replaces a loopback
``--node-ip-address`` with the machine's outward address.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastlab.sweep.store import read_sweep
from tests.conftest import SMALL

BIN = Path(sys.executable).parent
TRAIN = BIN / "fastlab-train"
RAY = BIN / "ray"
# Ray on loopback only (see the module's docstring), one thread per trial.
ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", OMP_NUM_THREADS="1")
N_TRIALS = 4


def missing_ray() -> str | None:
    """Why this test cannot run, or None."""
    absent = [m for m in ("ray", "hydra_plugins.hydra_ray_launcher") if importlib.util.find_spec(m) is None]
    if absent or not RAY.exists():
        return (f"{' and '.join(absent) or RAY} missing from {BIN.parent} (the ray extra: "
                "hydra-ray-launcher, ray[default]): run `bash scripts/test.sh`")
    return None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on loopback (from the ephemeral range, clear of Ray's worker
    ports 10002-19999)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid``: every process the cluster's ``ray start`` spawned
    (zombies aside: they are dead, waiting for their parent to reap them)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # fields after the command's closing parenthesis: state ppid pgrp session ...
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[str, Path] | None]:
    """A one-node Ray cluster on 127.0.0.1 with 2 CPUs: (its address, its temp dir)."""
    if missing_ray():
        yield None  # the test fails and says what to run
        return
    port, client_port, agent_port = _free_ports(3)
    temp_dir = Path(tempfile.mkdtemp(prefix="fl-ray-"))  # short: Ray's socket paths live in it
    cmd = [str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
           "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
           f"--temp-dir={temp_dir}", "--object-store-memory=100000000",
           f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}"]
    # A session of its own: every Ray daemon inherits it, so the teardown can find them all.
    start = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        out, _ = start.communicate(timeout=120)
        assert start.returncode == 0, f"ray start failed:\n{out}"
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        _stop_session(start.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_session(sid: int) -> None:
    """Kill every process of the cluster's session and check that none survives."""
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while (left := _session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"Ray processes {left} survived the cluster's teardown"


def test_a_sweep_runs_its_trials_on_a_ray_cluster(tmp_path: Path, ray_cluster) -> None:
    if (why := missing_ray()) is not None:
        pytest.fail(why, pytrace=False)
    address, ray_dir = ray_cluster
    sweep_dir = tmp_path / "sweep"
    small = [o for o in SMALL if not o.startswith("schedule.lr_max=")]  # the search space's
    cmd = [
        str(TRAIN), "-m",
        "hydra/sweeper=fastlab",
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={address}",
        "+hydra.launcher.ray.init.object_store_memory=null",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.strategy=random",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        "hydra.sweeper.batch_size=2",  # the cluster's 2 CPUs
        "hydra.sweeper.async=false",
        "hydra.sweeper.seed=0",
        "schedule.lr_max=tag(log, interval(1e-3, 1e-1))",
        "trainer.threads=1",
        *small,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Connecting to existing Ray cluster at address: {address}" in proc.stdout + proc.stderr

    trials = read_sweep(sweep_dir / "trials.db").trials
    assert [t.status for t in trials] == ["completed"] * N_TRIALS
    assert all(t.value is not None and math.isfinite(t.value) for t in trials)
    jobs = [t.job_dir for t in trials]
    assert len(set(jobs)) == N_TRIALS, f"a job number twice: {jobs}"
    for job in jobs:
        assert (sweep_dir / job / "metrics.json").exists()

    # The trials ran in the cluster's workers: each worker's log, in the cluster's temp dir,
    # holds the trainings it ran, and between them they ran every job.
    ran = set()
    for log in (ray_dir / "session_latest" / "logs").glob("worker-*"):
        ran |= set(re.findall(rf"run dir: {re.escape(str(sweep_dir))}/(\d+)", log.read_text(errors="replace")))
    assert ran == set(jobs), f"jobs {sorted(set(jobs) - ran)} left no trace in the Ray workers' logs"
