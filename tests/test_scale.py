"""Scale: data-parallel training under torchrun (gloo on CPU) matches one process with the same
global batch; running out of memory is one line, and trainer.auto_bs retries with half the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastlab.callbacks.core import Callback
from fastlab.errors import ConfigError
from fastlab.guards import OutOfMemory
from fastlab.run.train import train
from tests.conftest import compose_cfg

RUN = ["data.size=16", "arch.channels=[16,32]", "arch.head_hidden=32", "schedule.epochs=3",
       "schedule.lr_max=1e-2", "data.bs=32", "trainer.plots=false", "trainer.progress=none", "trainer.device=cpu"]


# A user's module registering an image model of convolutions, ReLUs and a linear layer only, then
# training: run by torchrun on two ranks or by Python alone. Without batch norm (statistics of 16
# items a rank instead of 32) or dropout (other masks a rank), data-parallel training is the same
# arithmetic as one process on the global batch, up to the order of float sums.
PLAIN_TRAIN = """
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from fastlab.config import ArchConfig
from fastlab.models.core import BodyHead
from fastlab.registry import register
from fastlab.run.train import train
from tests.conftest import compose_cfg


@dataclass
class PlainArch(ArchConfig):
    name: str = "plain"


@register("arch", "plain", PlainArch, tags={"body"})
def plain(cfg, n_in, n_out):
    body = nn.Sequential(nn.Sequential(nn.Conv2d(n_in, 8, 3, stride=2, padding=1), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()))
    return BodyHead(body, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, n_out)), (1,))


cfg = OmegaConf.to_container(compose_cfg(*sys.argv[2:], small=False), resolve=True)
cfg["arch"] = {"name": "plain"}
train(cfg, run_dir=Path(sys.argv[1]))
"""


def test_ddp_with_two_gloo_processes_matches_one_process(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("HYDRA_FULL_ERROR", None)
    script = tmp_path / "plain_train.py"
    script.write_text(PLAIN_TRAIN)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    run = [*RUN, "schedule.lr_max=5e-2"]  # the plain model learns slower than the cnn
    for cmd in ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                 str(ddp), "trainer.strategy=ddp", *run],
                [sys.executable, str(script), str(single), "trainer.threads=1", *run]):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ddp, single))
    assert a["status"] == b["status"] == "completed" and a["epochs"] == b["epochs"] == 3
    # Same global batch of 32 (16 a rank), same steps and rates: the same weights up to float
    # sums. Measured (seed 0, the config's; one thread a process): largest difference 3.7e-6
    # (weights up to ~1), accuracy 0.8245 both (bar 0.75), validation loss equal to 1e-7. Bar:
    # 5e-5 on every weight.
    wa, wb = (torch.load(d / "model.pt", weights_only=True)["state_dict"] for d in (ddp, single))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=5e-5, msg=k)
    assert a["final"]["accuracy"] > 0.75 and a["final"]["accuracy"] == pytest.approx(b["final"]["accuracy"], abs=0.003)
    assert a["final"]["valid_loss"] == pytest.approx(b["final"]["valid_loss"], rel=1e-4)
    # only rank 0 wrote: one history, one model
    assert (ddp / "history.csv").read_text().count("\n") == 4 and (ddp / "model.pt").exists()


def test_each_rank_draws_its_own_augmentation() -> None:
    """A data-parallel rank's shard holds other images than its neighbour's: the ranks' Augment
    callbacks draw from different streams, each seeded from the run's seed and the rank."""
    from fastlab.callbacks.augment import augment_callback
    from fastlab.config import to_run_config
    from fastlab.data.augment import draw_params

    run = to_run_config(compose_cfg("aug=fastai"))
    ranks = [augment_callback(run, rank).augment for rank in (0, 1)]
    draws = [draw_params(run.aug, 16, a.generator).rotate for a in ranks]
    assert not torch.equal(draws[0], draws[1])
    again = draw_params(run.aug, 16, augment_callback(run, 1).augment.generator).rotate
    assert torch.equal(again, draws[1])  # and each rank's stream is its own seed's, run after run


def test_ddp_with_augmentation_trains(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastlab.cli.train",
           "trainer.strategy=ddp", f"hydra.run.dir={tmp_path}", "aug=no_flip", "data.presize=20", *RUN,
           "schedule.lr_max=find"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    # Measured (seed 0, the config's; two processes of one thread each): 0.958, 344 of 359
    # validation digits; the bar 0.9 (324) leaves 20.
    assert m["status"] == "completed" and m["final"]["accuracy"] > 0.9
    # the finder ran on every rank, and the run trained at rank 0's pick (fastlab.distributed.from_main)
    assert m["group_lrs"][-1] == m["lr_find"]["valley"]


def test_ddp_outside_torchrun_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trainer.strategy=ddp needs torchrun"):
        train(compose_cfg("trainer.strategy=ddp"), tmp_path)


class FakeOOM(Callback):
    """Batches larger than ``limit`` items 'do not fit' from epoch ``from_epoch`` on, as a CUDA
    device would refuse them (the error torch raises, with CUDA's message)."""

    order = 1

    def __init__(self, limit: int, from_epoch: int = 1):
        self.limit, self.from_epoch = limit, from_epoch

    def before_batch(self):
        if self.learn.training and self.learn.epoch + self.learn.epoch_offset >= self.from_epoch and len(self.learn.xb) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 80 GiB")


def test_out_of_memory_is_one_line_naming_the_batch_size(tmp_path: Path) -> None:
    with pytest.raises(OutOfMemory, match=r"with data.bs=64 \(asked for 2.00 GiB more\): lower data.bs") as e:
        train(compose_cfg("schedule.epochs=3"), tmp_path, cbs=[FakeOOM(16)])
    assert "\n" not in str(e.value)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_auto_bs_halves_the_batch_and_goes_on_from_the_last_epoch(tmp_path: Path) -> None:
    metrics = train(compose_cfg("schedule.epochs=3", "trainer.auto_bs=true"), tmp_path, cbs=[FakeOOM(16)])
    assert metrics["status"] == "completed" and metrics["epochs"] == 3
    assert metrics["auto_bs"] == {"out_of_memory": [64, 32], "bs": 16}
    # Measured (seed 0, the config's; torch's default threads: 2 on the 2-core test machine):
    # 0.975, 350 of 359 validation digits; bar 0.8 (288).
    assert metrics["final"]["accuracy"] > 0.8
    # epoch 0 ran at 64 (22 batches), epochs 1-2 at 16 (89 batches each): one record throughout
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["meta"]["config"]
    assert saved["data"]["bs"] == 16


def test_channels_last_trains_like_the_default_layout(tmp_path: Path) -> None:
    a = train(compose_cfg("trainer.channels_last=true"), tmp_path / "nhwc")
    b = train(compose_cfg(), tmp_path / "nchw")
    # other convolution kernels, so not bit-identical; the same training otherwise.
    # Measured (seed 0, the config's; torch's default threads: 2 on the 2-core test machine):
    # 0.0028 apart, one validation digit of 359; the bar 0.03 is 10 digits.
    assert abs(a["final"]["accuracy"] - b["final"]["accuracy"]) < 0.03


def test_compile_falls_back_with_one_line_when_it_cannot_compile(tmp_path: Path, monkeypatch, caplog) -> None:
    def broken_compile(model, **kw):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    metrics = train(compose_cfg("trainer.compile=true"), tmp_path)
    # Measured (seed 0, the config's; torch's default threads: 2 on the 2-core test machine):
    # 0.947 (340 of 359); the bar 0.5 only asks that the eager fallback trained.
    assert metrics["status"] == "completed" and metrics["final"]["accuracy"] > 0.5
    assert "trainer.compile: torch.compile cannot compile this model here (RuntimeError: no C++ compiler found)" in caplog.text


def test_a_gpu_diverging_run_is_caught_by_the_batched_check(tmp_path: Path, monkeypatch) -> None:
    # The GPU path reads the loss flag every gpu_every batches; forcing that cadence on the CPU
    # shows a NaN is still caught and the run ends diverged.
    from fastlab.callbacks import terminate

    monkeypatch.setattr(terminate.TerminateOnNaN, "before_fit", lambda self: (
        setattr(self.learn, "diverged", False), setattr(self, "_finite", None), setattr(self, "_every", 8)))
    metrics = train(compose_cfg("schedule.lr_max=1e3", "schedule.epochs=2"), tmp_path)
    assert metrics["status"] == "diverged" and metrics["objective"] is None


def test_multirun_jobs_spread_over_the_gpus_round_robin() -> None:
    from fastlab.run.prepare import gpu_for_job

    assert [gpu_for_job(j, 4) for j in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [gpu_for_job(j, 1) for j in range(3)] == [0, 0, 0]  # several trials on one GPU
    assert gpu_for_job(5, 0) == 0


def test_the_cluster_launcher_configs_compose() -> None:
    from hydra import compose, initialize_config_dir

    from fastlab.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_gpu", "hydra/sweeper=fastlab",
                                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.timeout_min, launcher.partition) == (1, 120, "gpu")
    # The Ray preset composes against hydra-ray-launcher's own schema (installed by setup.sh).
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=ray_cluster", "hydra/sweeper=fastlab"],
                      return_hydra_config=True)
    ray = cfg.hydra.launcher
    assert ray._target_.endswith("RayLauncher") and ray.ray.remote.num_gpus == 1
    assert ray.ray.init.address == "auto" and ray.ray.init.object_store_memory is None


@pytest.mark.gpu  # pinned host memory and async copies need CUDA
def test_data_over_the_resident_limit_streams_from_pinned_memory() -> None:
    from fastlab.data import DataBunch
    from fastlab.data.images.sources import DigitsData

    streamed = DataBunch.from_config(DigitsData(size=16)).to("cuda", max_resident_gb=0)
    resident = DataBunch.from_config(DigitsData(size=16)).to("cuda")
    assert streamed.train.x.is_pinned() and not streamed.train.resident and resident.train.resident
    for (xa, ya), (xb, yb) in zip(streamed.valid, resident.valid):
        assert xa.device.type == "cuda" and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_image_data_within_the_limit_lives_on_the_device(tmp_path: Path) -> None:
    from fastlab.data import DataBunch
    from fastlab.data.images.sources import DigitsData

    data = DataBunch.from_config(DigitsData(size=16)).to("cpu", max_resident_gb=0)
    assert data.train.resident  # host memory is the CPU's own: nothing to stream
    with pytest.raises(ConfigError, match="max_resident_gb must be a number >= 0"):
        train(compose_cfg("trainer.max_resident_gb=-1"), tmp_path)
