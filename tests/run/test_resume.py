"""Resuming a run from last.pt: a run stopped anywhere (mid-epoch, in fine_tune's frozen stage,
after the LR finder, after its last epoch) and resumed ends with the same weights and history as
a run never stopped, and its resumed process continued: it began at the batch after the
checkpoint, trained only the batches left and ran no LR range test again (processes.json); bad
resume targets and hostile checkpoints end with one line."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from fastlab.callbacks.core import Callback
from fastlab.errors import ConfigError
from fastlab.run.train import train
from fastlab.rundir import PROCESSES
from tests.conftest import compose_cfg


class Stop(Callback):
    """Raises SystemExit after ``at`` training batches, in the middle of the loop, as a kill would
    stop it (nothing after that point runs; last.pt is what a checkpoint left)."""

    order = 99

    def __init__(self, at: int):
        self.at, self.n = at, 0

    def after_batch(self):
        if self.learn.training:
            self.n += 1
            if self.n == self.at:
                raise SystemExit("stopped")


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def processes(run_dir: Path) -> list[dict]:
    """The run's record of the processes that trained it (one entry each, the resumed one last)."""
    return json.loads((run_dir / PROCESSES).read_text())["processes"]


def same_work(a: Path, b: Path) -> None:
    """``b``'s processes did the work of ``a``, a run never stopped, once: the last of them trained
    exactly the batches the earlier ones left and ran only the LR range tests they had not run.
    (A resume that restarts from the first batch trains them all again; one that searches again
    counts another test.)"""
    (unbroken,) = processes(a)
    assert unbroken["first_batch"] == {"stage": 0, "epoch": 0, "batch": 0}
    *earlier, last = processes(b)
    assert last["batches"] == unbroken["batches"] - sum(p["batches"] for p in earlier), (processes(a), processes(b))
    assert last["lr_find"] == unbroken["lr_find"] - sum(p["lr_find"] for p in earlier), (processes(a), processes(b))


def same_run(a: Path, b: Path) -> None:
    """``b`` ends as ``a``, a run never stopped: the same history and weights, from the same work."""
    assert history(a) == history(b)
    wa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    same_work(a, b)


def assert_continued(run_dir: Path, stopped: dict) -> None:
    """The run in ``run_dir`` was resumed from ``stopped`` (the ``last.pt`` it had then) and its
    last process continued there: the earlier processes are the ones ``last.pt`` recorded, their
    batches the ones its Recorder holds (one rate per training batch), and the resumed process's
    first training batch is the one ``last.pt`` stood at (none when nothing was left)."""
    *earlier, resumed = processes(run_dir)
    assert earlier == stopped["processes"], (earlier, stopped["processes"])
    assert sum(p["batches"] for p in earlier) == len(stopped["callbacks"]["Recorder"]["lrs"])
    at = {k: stopped["position"][k] for k in ("stage", "epoch", "batch")}
    assert resumed["first_batch"] == (at if resumed["batches"] else None), (resumed, at)


def resume(run_dir: Path, *overrides: str, into: Path | None = None) -> dict:
    """Resume the stopped run in ``run_dir`` with ``overrides`` (``trainer.resume`` among them;
    the command writing ``into``, by default ``run_dir``), check that it continued, and return
    the position ``last.pt`` held."""
    stopped = torch.load(run_dir / "last.pt", weights_only=True)
    train(compose_cfg(*overrides), into or run_dir)
    assert_continued(run_dir, stopped)
    return stopped["position"]


def stopped_then_resumed(tmp_path: Path, stop_at: int, *overrides: str) -> tuple[Path, dict]:
    run_dir = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        train(compose_cfg(*overrides), run_dir, cbs=[Stop(stop_at)])
    # resumed from a different composed config: the run's own (saved in last.pt) is used
    position = resume(run_dir, "schedule.epochs=7", "data.bs=8", f"trainer.resume={run_dir}", into=tmp_path / "elsewhere")
    return run_dir, position


@pytest.mark.parametrize("stop_at,overrides,where", [
    # 22 batches an epoch: batch 30 is in epoch 1; the last checkpoint was after batch 28
    (30, ["schedule.epochs=3", "trainer.checkpoint_every_n_steps=7"], {"stage": 0, "epoch": 1, "batch": 6}),
    # fine_tune's frozen first stage, between two step checkpoints
    (10, ["schedule=fine_tune", "schedule.epochs=2", "trainer.checkpoint_every_n_steps=4"], {"stage": 0, "epoch": 0, "batch": 8}),
    # with the LR finder's rate, kept in last.pt (the finder does not run again)
    (25, ["schedule.lr_max=find", "trainer.callbacks.early_stopping.enabled=true",
          "trainer.callbacks.save_best.enabled=true"], {"stage": 0, "epoch": 1, "batch": 0}),
])
def test_a_stopped_run_resumes_to_the_same_weights_and_history(tmp_path: Path, stop_at, overrides, where) -> None:
    reference = tmp_path / "reference"
    train(compose_cfg(*overrides), reference)
    run_dir, position = stopped_then_resumed(tmp_path, stop_at, *overrides)
    assert {k: position[k] for k in where} == where
    same_run(reference, run_dir)
    assert not (run_dir / "last.pt").exists()
    assert not (tmp_path / "elsewhere" / "model.pt").exists()  # written into the resumed run dir
    if "schedule.lr_max=find" in overrides:
        assert [p["lr_find"] for p in processes(run_dir)] == [1, 0]  # kept in last.pt, not searched again
        found = [json.loads((d / "metrics.json").read_text())["lr_find"] for d in (reference, run_dir)]
        assert found[0] == found[1]
        assert (run_dir / "best.pt").exists()


def test_a_run_killed_after_its_last_epoch_writes_its_outputs_on_resume(tmp_path: Path) -> None:
    class StopAtFit(Callback):
        order = 99

        def after_fit(self):
            raise SystemExit("stopped")

    reference = tmp_path / "reference"
    train(compose_cfg(), reference)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        train(compose_cfg(), run_dir, cbs=[StopAtFit()])
    assert torch.load(run_dir / "last.pt", weights_only=True)["position"]["stage"] == 1  # past the only stage
    resume(run_dir, "trainer.resume=true")
    same_run(reference, run_dir)
    assert processes(run_dir)[-1] == {"first_batch": None, "batches": 0, "lr_find": 0}  # nothing left to train


def test_processes_json_counts_the_batches_and_range_tests_a_run_ran(tmp_path: Path) -> None:
    counted = Stop(at=0)  # counts training batches, never stops
    train(compose_cfg("schedule.lr_max=find", "trainer.accumulate=2"), tmp_path, cbs=[counted])
    # 2 epochs of 22 batches (11 optimiser steps each): batches, not steps; the finder's not counted
    assert counted.n == 44
    assert processes(tmp_path) == [{"first_batch": {"stage": 0, "epoch": 0, "batch": 0}, "batches": 44, "lr_find": 1}]


def test_resume_true_starts_afresh_without_a_checkpoint(tmp_path: Path) -> None:
    metrics = train(compose_cfg("trainer.resume=true"), tmp_path)
    assert metrics["status"] == "completed" and metrics["epochs"] == 2


def test_bad_resume_targets_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no last.pt in .*give the run dir of an interrupted"):
        train(compose_cfg(f"trainer.resume={tmp_path / 'nothing'}"), tmp_path / "a")
    done = tmp_path / "done"
    train(compose_cfg(), done)
    with pytest.raises(ConfigError, match="has finished"):
        train(compose_cfg(f"trainer.resume={done}"), tmp_path / "b")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match=r"cannot read checkpoint .*last.pt.*truncated") as e:
        train(compose_cfg(f"trainer.resume={broken}"), tmp_path / "c")
    assert "\n" not in str(e.value)


class Payload:
    """Unpickling this runs code: it touches a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("key", ["trainer.resume", "arch.pretrained"])
def test_a_checkpoint_holding_code_is_refused_and_the_code_never_runs(tmp_path: Path, key: str) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil" / "last.pt"
    evil.parent.mkdir()
    torch.save({"format": 1, "position": {}, "model": Payload(str(marker)), "state_dict": {}, "meta": {}}, evil)
    target = evil.parent if key == "trainer.resume" else evil
    with pytest.raises(ConfigError, match="refused, it holds more than weights"):
        train(compose_cfg(f"{key}={target}"), tmp_path / "run")
    assert not marker.exists()


def test_checkpoint_and_timeout_settings_are_checked(tmp_path: Path) -> None:
    for override, message in [("trainer.checkpoint_every_n_steps=0", "checkpoint_every_n_steps must be >= 1"),
                              ("trainer.timeout=-1", "trainer.timeout must be a positive")]:
        with pytest.raises(ConfigError, match=message):
            train(compose_cfg(override), tmp_path)


def test_save_last_false_writes_no_checkpoint(tmp_path: Path) -> None:
    seen = []

    class Look(Callback):
        order = 99

        def after_epoch(self):
            seen.append((tmp_path / "last.pt").exists())

    train(compose_cfg("trainer.save_last=false"), tmp_path, cbs=[Look()])
    assert seen == [False, False]
    assert not (tmp_path / PROCESSES).exists()  # nor the record of the processes a resume continues
