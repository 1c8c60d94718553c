"""Gradient accumulation: batch B with accumulate N trains as batch B x N (a model without batch
norm or dropout, to float tolerance), the one-cycle schedule counting optimiser steps, the last
short group of an epoch stepped; the LR finder takes one point per step; mixed precision and a
resume in the middle of a group, through the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastlab.callbacks.core import Callback
from fastlab.config import to_run_config
from fastlab.data.images.bunch import DataBunch
from fastlab.errors import ConfigError
from fastlab.learner import Learner
from tests.conftest import compose_cfg, one_thread


class Steps(Callback):
    """The head's rate at every optimiser step, and how many batches each step's group had."""

    def __init__(self):
        self.lrs: list[float] = []
        self.batches: list[int] = []
        self._n = 0

    def after_batch(self):
        if self.learn.training:
            self._n += 1

    def before_step(self):
        self.lrs.append(self.learn.opt.param_groups[-1]["lr"])
        self.batches.append(self._n + 1)  # after_batch has not run for the stepping batch yet
        self._n = -1


def data(n_train: int, bs: int, keep_last: bool = False):
    """A shuffled fastlab bunch (its training loader drops a last partial batch, as fastai's), or
    with ``keep_last`` torch loaders in a fixed order that keep it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + 32, 6, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    if not keep_last:
        return DataBunch.from_tensors(x[:n_train], y[:n_train], x[n_train:], y[n_train:], bs=bs, seed=3)
    train, valid = TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])
    return DataBunch.from_loaders(DataLoader(train, bs), DataLoader(valid, 64), c=2)


def fitted(n_train: int, bs: int, accumulate: int, epochs: int = 2, precision: str = "32",
           keep_last: bool = False) -> tuple[Learner, Steps]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))  # no batch norm, no dropout
    steps = Steps()
    learn = Learner(model, data(n_train, bs, keep_last), nn.CrossEntropyLoss(), progress="none", precision=precision,
                    accumulate=accumulate, cbs=[steps])
    learn.fit_one_cycle(epochs, 1e-2)
    return learn, steps


def weights(learn: Learner) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in learn.model.parameters()])


@pytest.mark.parametrize("n_train,bs,accumulate,keep_last", [
    (128, 8, 4, False),  # 16 shuffled batches an epoch: four full groups
    (96, 8, 5, True),  # 12 batches: groups of 5, 5 and a short 2, stepped (batch 40 ends with 16 items)
])
def test_accumulating_batches_equals_one_larger_batch(n_train, bs, accumulate, keep_last) -> None:
    with one_thread():
        small, s_steps = fitted(n_train, bs, accumulate, keep_last=keep_last)
        large, l_steps = fitted(n_train, bs * accumulate, 1, keep_last=keep_last)
    per_epoch = -(-n_train // (bs * accumulate))
    assert len(s_steps.lrs) == len(l_steps.lrs) == 2 * per_epoch
    assert s_steps.lrs == pytest.approx(l_steps.lrs, rel=1e-12)  # the schedule counts optimiser steps
    full, last = accumulate, (n_train // bs) % accumulate or accumulate
    assert s_steps.batches == ([full] * (per_epoch - 1) + [last]) * 2
    assert torch.allclose(weights(small), weights(large), atol=2e-6, rtol=1e-5)
    before = weights(fitted(n_train, bs, 1, keep_last=keep_last)[0])  # the same batches stepped one by one differ
    assert (weights(small) - before).abs().max() > 1e-3
    # the recorded training loss is the batches' loss, not the scaled one backward saw
    assert small.recorder.history[-1]["train_loss"] == pytest.approx(large.recorder.history[-1]["train_loss"],
                                                                     rel=0.05)


def test_accumulating_with_mixed_precision_steps_as_the_larger_batch() -> None:
    with one_thread():
        small, s_steps = fitted(128, 8, 4, precision="bf16-mixed")
        large, _ = fitted(128, 32, 1, precision="bf16-mixed")
    assert len(s_steps.lrs) == 8
    # bf16 rounds each batch's activations on its own: close, not equal
    assert torch.allclose(weights(small), weights(large), atol=2e-2)


def test_the_lr_finder_takes_one_point_per_optimiser_step() -> None:
    with one_thread():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
        learn = Learner(model, data(128, 8), nn.CrossEntropyLoss(), progress="none", accumulate=4)
        steps = Steps()
        steps.keep_in_lr_find = True  # the finder keeps only the callbacks that say so
        learn.add_cbs([steps])
        result = learn.lr_find(num_it=20, stop_div=False)
    assert len(result.lrs) == 20 and len(steps.lrs) == 20 and set(steps.batches) == {4}
    assert result.lrs == pytest.approx(steps.lrs)  # each point at the rate its step used


def test_accumulate_must_be_a_positive_integer() -> None:
    model = nn.Linear(6, 2)
    with pytest.raises(ConfigError, match="accumulate must be a positive integer"):
        Learner(model, data(32, 8), nn.CrossEntropyLoss(), accumulate=0)
    with pytest.raises(ConfigError, match=r"trainer.accumulate must be a positive integer .* e.g. trainer.accumulate=4"):
        to_run_config(compose_cfg("trainer.accumulate=0"))


def test_a_run_resumed_in_the_middle_of_a_group_equals_an_unbroken_run(tmp_path: Path) -> None:
    from fastlab.run.train import train
    from tests.run.test_resume import same_run, stopped_then_resumed

    # 22 batches an epoch in groups of 3: the checkpoint after batch 7 is inside the group 6..8
    overrides = ["schedule.epochs=2", "trainer.accumulate=3", "trainer.checkpoint_every_n_steps=7"]
    reference = tmp_path / "reference"
    train(compose_cfg(*overrides), reference)
    run_dir, position = stopped_then_resumed(tmp_path, 10, *overrides)
    assert position == {**position, "epoch": 0, "batch": 7}
    same_run(reference, run_dir)


def test_data_parallel_gradients_are_synced_once_per_group(monkeypatch) -> None:
    """fastlab's data-parallel ranks average gradients in ``before_step``: with accumulation that
    is once per group, never on the accumulating batches (a one-process gloo group here)."""
    import torch.distributed as dist

    from fastlab.distributed import GradientAllReduce

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        synced = []
        real = dist.all_reduce
        monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: (synced.append(t.numel()), real(t, *a, **k))[1])
        with one_thread():
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
            steps = Steps()
            learn = Learner(model, data(128, 8), nn.CrossEntropyLoss(), progress="none", accumulate=4,
                            cbs=[GradientAllReduce(1), steps])
            learn.fit_one_cycle(1, 1e-2)
    finally:
        dist.destroy_process_group()
    n_params = sum(p.numel() for p in model.parameters())
    # 16 batches, 4 steps: 4 gradient syncs (plus the epoch's loss and statistics at its end)
    assert synced.count(n_params) == len(steps.lrs) == 4
