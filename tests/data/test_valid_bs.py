"""The validation batch: twice bs, more for small items, data.valid_bs when set; never the metrics."""

from __future__ import annotations

import torch

from fastlab.data.base import VALID_BATCH_NUMBERS, valid_batch_size
from fastlab.data.images.bunch import DataBunch
from fastlab.learner import Learner
from fastlab.tasks.classify import accuracy


def test_small_items_fill_a_batch_big_ones_take_twice_bs_and_valid_bs_wins():
    assert valid_batch_size(8, 16 * 16, 846) == 846  # the study's digits: the whole set at once
    assert valid_batch_size(8, 16 * 16, 5000) == VALID_BATCH_NUMBERS // 256
    assert valid_batch_size(64, 3 * 224 * 224, 1000) == 128  # ImageNet-sized: fastai's 2 x bs
    assert valid_batch_size(32, None, 1000) == 64  # texts: items of varying size
    assert valid_batch_size(8, 256, 846, valid_bs=5) == 5
    assert valid_batch_size(8, 256, 3) == 16  # never below twice bs (a short last batch is fine)


def _bunch(valid_bs):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (200, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (200,), generator=g)
    return DataBunch.from_tensors(x[:60], y[:60], x[60:], y[60:], bs=4, valid_bs=valid_bs)


def test_predictions_and_metrics_do_not_depend_on_the_validation_batch():
    auto, small = _bunch(None), _bunch(7)
    assert len(auto.valid) == 1 and len(small.valid) == 20  # 140 items: one batch, or twenty of 7
    rows, preds = [], []
    for data in (auto, small):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16),
                                    torch.nn.ReLU(), torch.nn.Linear(16, 3))
        learn = Learner(model, data, torch.nn.functional.cross_entropy, metrics={"accuracy": accuracy})
        learn.fit(2, 1e-2)
        rows.append(learn.recorder.history[-1])
        preds.append(learn.get_preds())
    (p1, t1), (p2, t2) = preds
    assert torch.equal(t1, t2) and torch.allclose(p1, p2, atol=1e-6)
    assert rows[0]["train_loss"] == rows[1]["train_loss"]  # the same training
    assert rows[0]["accuracy"] == rows[1]["accuracy"]
    assert abs(rows[0]["valid_loss"] - rows[1]["valid_loss"]) < 1e-6
