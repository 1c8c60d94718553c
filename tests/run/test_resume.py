"""Resuming a run from last.pt: a run stopped anywhere (mid-epoch, in fine_tune's frozen stage,
after the LR finder, after its last epoch) and resumed ends with the same weights and history as
a run never stopped; bad resume targets and hostile checkpoints end with one line."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from fastlab.callbacks.core import Callback
from fastlab.errors import ConfigError
from fastlab.run.train import train
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


def same_run(a: Path, b: Path) -> None:
    assert history(a) == history(b)
    wa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def stopped_then_resumed(tmp_path: Path, stop_at: int, *overrides: str) -> tuple[Path, dict]:
    run_dir = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        train(compose_cfg(*overrides), run_dir, cbs=[Stop(stop_at)])
    position = torch.load(run_dir / "last.pt", weights_only=True)["position"]
    # resumed from a different composed config: the run's own (saved in last.pt) is used
    train(compose_cfg("schedule.epochs=7", "data.bs=8", f"trainer.resume={run_dir}"), tmp_path / "elsewhere")
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
        import json

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
    train(compose_cfg("trainer.resume=true"), run_dir)
    same_run(reference, run_dir)


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
