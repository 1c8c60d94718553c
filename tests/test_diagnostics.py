"""Each rule of thumb fires on its situation, produced by real training, and not on a healthy run.

The situations (digits, the tiny SMALL CNN of conftest):
- healthy: one-cycle at the default rate for 5 epochs (98% accuracy);
- learning rate too high: a constant rate of 1 with AdamW (validation loss in the thousands, a
  third of the filters dead);
- under-fitting: a constant rate of 1e-5, or dropout 0.9 (training loss above validation loss and
  barely down from the first epoch);
- over-fitting: half of the training labels replaced by random ones, no dropout or weight decay:
  the net learns the digits first (error rate about 0.25 after a few epochs), then memorises the
  noise and the error rate climbs back.
"""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from fastlab.config import to_run_config
from fastlab.data import DataBunch
from fastlab.data.images.sources import DigitsData, Source, digits
from fastlab.diagnostics import DEAD_FRACTION_MAX, dead_filter_fraction, diagnose
from fastlab.learner import Learner
from fastlab.models import create_model
from fastlab.models.cnn import CnnArch
from fastlab.run.train import train
from fastlab.tasks.classify import CLASSIFY
from tests.conftest import compose_cfg

LR = "learning rate is too high"
DEAD = "conv filters are dead"
UNDER = "under-fitting"
OVER = "over-fitting"


def read_history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv") as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def trained_model(run_dir, *overrides):
    """The run's model from model.pt and one validation batch ``(B, C, H, W)``."""
    run = to_run_config(compose_cfg(*overrides))
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    model = create_model(run.arch, ckpt["meta"]["n_in"], ckpt["meta"]["n_out"])
    model.load_state_dict(ckpt["state_dict"])
    xb, _ = next(iter(DataBunch.from_config(run.data).valid))
    return model, xb


def kind(message: str) -> str:
    """Which rule wrote ``message`` (the dead-filter rule names the same fix as LR)."""
    return next(k for k in (DEAD, LR, UNDER, OVER) if k in message)


def kinds(messages: list[str]) -> set[str]:
    return {kind(m) for m in messages}


# ------------------------------------------------------------------------------ real training


def test_healthy_run_has_no_diagnostics(tmp_path):
    overrides = ("schedule.epochs=5",)
    metrics = train(compose_cfg(*overrides), run_dir=tmp_path)
    # Measured (seed 0, the config's; torch's default threads: 2 on the 2-core test machine):
    # 0.983, 353 of 359 validation digits; the bar 0.95 (342) leaves 11 digits.
    assert metrics["status"] == "completed" and metrics["objective"] > 0.95
    assert metrics["diagnostics"] == []
    # the same verdict from the history on disk, and no dead filter at all
    model, xb = trained_model(tmp_path, *overrides)
    assert dead_filter_fraction(model, xb) == 0.0
    assert diagnose(read_history(tmp_path), "accuracy", "maximize", 0.0) == []


@pytest.fixture(scope="module")
def lr_too_high(tmp_path_factory):
    overrides = ("schedule=constant", "schedule.lr_max=1", "schedule.epochs=2")
    run_dir = tmp_path_factory.mktemp("lr_too_high")
    return train(compose_cfg(*overrides), run_dir=run_dir), run_dir, overrides


def test_lr_too_high_shows_in_an_enormous_validation_loss(lr_too_high):
    metrics, run_dir, _ = lr_too_high
    assert metrics["status"] == "completed"  # not diverged: the rule must read the history
    lr_lines = [m for m in metrics["diagnostics"] if kind(m) == LR]
    assert len(lr_lines) == 1 and "schedule.lr_max" in lr_lines[0]
    assert OVER not in kinds(metrics["diagnostics"])  # instability is not called over-fitting


def test_lr_too_high_kills_conv_filters(lr_too_high):
    metrics, run_dir, overrides = lr_too_high
    model, xb = trained_model(run_dir, *overrides)
    dead = dead_filter_fraction(model, xb)
    assert dead > DEAD_FRACTION_MAX
    assert any(DEAD in m and f"{dead:.0%}" in m for m in metrics["diagnostics"])
    # the dead-filter rule alone (without the history) names the same fix
    assert kinds(diagnose([], "accuracy", "maximize", dead)) == {DEAD}


@pytest.mark.parametrize("overrides", [
    ("schedule=constant", "schedule.lr_max=1e-5", "schedule.epochs=2"),  # too low a rate
    ("arch.dropout=0.9", "schedule.epochs=3"),  # too much regularisation
], ids=["tiny_lr", "dropout_0.9"])
def test_under_fitting(tmp_path, overrides):
    metrics = train(compose_cfg(*overrides), run_dir=tmp_path)
    assert kinds(metrics["diagnostics"]) == {UNDER}
    (line,) = metrics["diagnostics"]
    assert "schedule.epochs" in line and "schedule.lr_max" in line


def noisy_label_learner(noise: float = 0.5, n_train: int = 400) -> Learner:
    """Digits at 16 px with ``noise`` of the training labels replaced by random digits (the
    validation labels stay clean); no dropout, no weight decay."""
    src = digits(DigitsData(size=16))
    g = torch.Generator().manual_seed(1)
    flip = (torch.rand(n_train, generator=g) < noise).tolist()
    random_labels = torch.randint(10, (n_train,), generator=g).tolist()
    labels = [r if f else y for y, f, r in zip(src.train_labels[:n_train], flip, random_labels)]
    noisy = Source(src.train_x[:n_train], labels, src.train_items[:n_train],
                   src.valid_x, src.valid_labels, src.valid_items)
    data = DataBunch(noisy, bs=32, seed=0)
    torch.manual_seed(0)
    model = create_model(CnnArch(channels=[16, 32], head_hidden=128, dropout=0.0), 1, 10)
    return Learner(model, data, CLASSIFY.loss_func, CLASSIFY.metrics, wd=0.0, progress="none")


def test_over_fitting_on_noisy_labels_names_the_best_epoch():
    learn = noisy_label_learner()
    learn.fit_constant(10, 3e-3)
    history = learn.recorder.history
    errors = [row["error_rate"] for row in history]
    best = min(range(len(errors)), key=errors.__getitem__)
    # Measured (torch.manual_seed(0), loader seed 0, label-noise generator seed 1; torch's default
    # threads: 2): best epoch 3 of 10 at error 0.253, last 0.415 (bars: best by epoch 7, last
    # 0.05 over the best: 0.11 of room).
    assert best <= len(errors) - 3 and errors[-1] > errors[best] + 0.05  # it really over-fitted

    for objective, direction in (("error_rate", "minimize"), ("accuracy", "maximize")):
        messages = diagnose(history, objective, direction)
        assert kinds(messages) == {OVER}, messages
        assert f"best in epoch {best} " in messages[0] and f"({best + 1} epochs in all)" in messages[0]


# ------------------------------------------------------------------------- hand-written tables


def rows(train_loss, valid_loss, error_rate=None):
    error_rate = error_rate or [0.5] * len(train_loss)
    return [{"epoch": i, "train_loss": t, "valid_loss": v, "error_rate": e, "lr": 1e-3, "seconds": 0.1}
            for i, (t, v, e) in enumerate(zip(train_loss, valid_loss, error_rate))]


@pytest.mark.parametrize("history, expected", [
    (rows([1.8, 0.6, 0.3, 0.2], [1.5, 0.5, 0.25, 0.21], [0.6, 0.2, 0.06, 0.05]), set()),
    # noise around a plateau is not over-fitting
    (rows([1.8, 0.4, 0.2, 0.1], [1.5, 0.3, 0.2, 0.15], [0.6, 0.05, 0.06, 0.055]), set()),
    # a single worse last epoch is a blip, not over-fitting
    (rows([1.8, 0.4, 0.2, 0.1], [1.5, 0.3, 0.2, 0.35], [0.6, 0.1, 0.05, 0.2]), set()),
    # enormous: far above the first epoch's training loss
    (rows([2.3, 2.0], [900.0, 40.0]), {LR}),
    # exploding: from 0.3 to 3.5, worse than after the first epoch
    (rows([2.3, 0.5, 0.4], [2.0, 0.3, 3.5]), {LR}),
    (rows([2.3, 0.5], [2.0, float("nan")]), {LR}),
    (rows([2.3, 2.2], [2.0, 1.9]), {UNDER}),
    # training loss above validation loss from dropout alone, but well trained: not under-fitting
    (rows([2.0, 0.5, 0.2], [1.0, 0.2, 0.1]), set()),
    (rows([2.0, 0.4, 0.1, 0.05, 0.02], [1.5, 0.3, 0.35, 0.4, 0.5], [0.6, 0.1, 0.2, 0.25, 0.3]), {OVER}),
    ([], set()),
], ids=["healthy", "plateau", "blip", "enormous", "exploding", "nan", "under", "dropout_gap", "over", "empty"])
def test_rules_on_tables(history, expected):
    assert kinds(diagnose(history, "error_rate", "minimize")) == expected


def test_direction_is_checked():
    with pytest.raises(ValueError, match="direction"):
        diagnose([], "accuracy", "up")


# --------------------------------------------------------------------------- dead filters


def test_dead_fraction_counts_channels_exactly_and_cleans_up():
    """Every BN scaled to 0 makes each channel a constant (its shift): 6 of 24 channels get a
    negative shift, so exactly a quarter are dead, whatever the input."""
    model = create_model(CnnArch(channels=[4, 8], head_hidden=8), 1, 10)  # 4+4+8+8 = 24 channels
    bns = [m for m in model.body.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.zero_()
            bn.bias.fill_(1.0)
        bns[0].bias[:2] = -1.0
        bns[3].bias[:4] = -1.0
    model.train()
    assert dead_filter_fraction(model, torch.randn(8, 1, 16, 16)) == pytest.approx(6 / 24)
    assert model.training  # mode restored
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


class ReluBody(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU())

    def forward(self, x):
        return self.body(x)


def test_dead_means_off_for_nearly_all_inputs():
    """Channel 0 fires on 1 input of 200 (0.5%: dead), channel 1 on 20 (10%, a rare-class
    detector: alive)."""
    x = -torch.ones(200, 2, 3, 3)  # (B, C, H, W)
    x[0, 0, 1, 1] = 1.0
    x[:20, 1] = 1.0
    assert dead_filter_fraction(ReluBody(), x) == pytest.approx(0.5)


def test_dead_fraction_on_a_torchvision_resnet():
    """BasicBlock calls its one ReLU twice, and each call is a layer: with every BN a positive
    constant and one block's first BN negative, exactly its 512 channels are dead out of
    64 (stem) + 2 calls x 2 blocks x (64 + 128 + 256 + 512) = 3904 channel-calls."""
    from fastlab.models.resnet import ResnetArch

    model = create_model(ResnetArch(name="resnet18", head_hidden=8), 1, 10)
    with torch.no_grad():
        for bn in (m for m in model.body.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.zero_()
            bn.bias.fill_(1.0)
        model.body[7][1].bn1.bias.fill_(-1.0)  # layer4, second block
    assert dead_filter_fraction(model, torch.randn(4, 1, 32, 32)) == pytest.approx(512 / 3904)
    assert not any(m._forward_hooks for m in model.modules())
