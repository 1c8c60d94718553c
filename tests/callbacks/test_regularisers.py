"""fast.ai's regularisers: label smoothing (task.label_smoothing), MixUp and CutMix
(trainer.callbacks.mixup / cutmix): their losses against the formulas, validation left alone,
the same seed giving the same run, a resumed run equal to an unbroken one, and one-line refusals."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastlab.callbacks.factory import build_callbacks
from fastlab.callbacks.mixup import SEED_OFFSET, CutMix, MixUp, random_box, sample_beta
from fastlab.config import CallbacksConfig, CutMixConfig, MixupConfig, TrainerConfig, to_run_config
from fastlab.data.images.bunch import DataBunch
from fastlab.data.masks.bunch import IGNORE
from fastlab.errors import ConfigError
from fastlab.learner import Learner
from fastlab.run.train import train
from fastlab.tasks import get_task
from fastlab.tasks.classify import ClassifyTask
from fastlab.tasks.segment import SegmentTask
from fastlab.tasks.text import TextClassifyTask
from tests.conftest import compose_cfg, one_thread
from tests.run.test_resume import history, same_run, stopped_then_resumed

# ------------------------------------------------------------------------- label smoothing


def smoothed_ce_by_hand(pred: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per item: -(1 - eps) log p_y - eps / c * sum_k log p_k (targets (1-eps) one_hot + eps/c)."""
    logp = pred.log_softmax(dim=1)
    c = pred.shape[1]
    return -(1 - eps) * logp.gather(1, y[:, None])[:, 0] - eps / c * logp.sum(dim=1)


def run_with(task_cfg) -> SimpleNamespace:
    return SimpleNamespace(task=task_cfg)


@pytest.mark.parametrize("task, schema", [("classify", ClassifyTask), ("text_classify", TextClassifyTask)])
def test_label_smoothing_is_the_formula_and_zero_is_plain_cross_entropy(task, schema):
    pred = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    y = torch.tensor([0, 1])
    loss = get_task(task).loss(run_with(schema(label_smoothing=0.1)))
    # by hand: item 0's log p = log_softmax([2, .5, -1]) etc.
    want = smoothed_ce_by_hand(pred, y, 0.1).mean()
    assert torch.allclose(loss(pred, y), want)
    assert not torch.allclose(want, F.cross_entropy(pred, y))
    plain = get_task(task).loss(run_with(schema()))
    assert torch.equal(plain(pred, y), F.cross_entropy(pred, y))


def test_segment_label_smoothing_keeps_void_pixels_out():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 4, 3, 3, generator=g)
    y = torch.randint(0, 4, (2, 3, 3), generator=g)
    y[0, 0, :] = IGNORE
    loss = get_task("segment").loss(run_with(SegmentTask(label_smoothing=0.2)))
    keep = y != IGNORE
    flat = pred.permute(0, 2, 3, 1)[keep]  # (non-void pixels, c)
    want = smoothed_ce_by_hand(flat, y[keep], 0.2).mean()  # averaged over non-void pixels only
    assert torch.allclose(loss(pred, y), want)
    # the scores at void pixels change nothing, and a batch of void only is still 0
    other = pred.clone()
    other[0, :, 0, :] = 50.0 * torch.randn(4, 3, generator=g)
    assert torch.allclose(loss(other, y), want)
    assert loss(pred, torch.full_like(y, IGNORE)).item() == 0.0
    plain = get_task("segment").loss(run_with(SegmentTask()))
    assert torch.equal(plain(pred, y), F.cross_entropy(pred, y, ignore_index=IGNORE))


# ----------------------------------------------------------------------- mixup and cutmix


def stub_learner(x: torch.Tensor, y: torch.Tensor, loss_func=F.cross_entropy) -> SimpleNamespace:
    return SimpleNamespace(training=True, xb=x, yb=y, loss_func=loss_func)


def batch(n: int = 6, c: int = 3, size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, size, size, generator=g)
    return x, torch.randint(0, c, (n,), generator=g), torch.randn(n, c, generator=g)


def test_mixup_mixes_inputs_and_its_loss_is_the_formula():
    x, y, pred = batch()
    cb = MixUp(0.4, seed=3)
    cb.learn = learn = stub_learner(x.clone(), y)
    cb.before_train()
    cb.before_batch()
    # the same draws, in the same order, from a generator seeded as the callback's
    g = torch.Generator().manual_seed(3 + SEED_OFFSET)
    lam = sample_beta(0.4, 6, g)
    lam = torch.maximum(lam, 1 - lam)
    perm = torch.randperm(6, generator=g)
    assert (lam >= 0.5).all() and not torch.equal(perm, torch.arange(6))
    w = lam[:, None, None, None]
    assert torch.allclose(learn.xb, w * x + (1 - w) * x[perm])
    ce = F.cross_entropy(pred, y, reduction="none")
    ce_other = F.cross_entropy(pred, y[perm], reduction="none")
    want = (lam * ce + (1 - lam) * ce_other).mean()
    assert torch.allclose(learn.loss_func(pred, learn.yb), want)
    cb.after_batch()
    cb.after_train()  # validation: the task's loss, and batches untouched
    assert learn.loss_func is F.cross_entropy
    learn.training, learn.xb = False, x
    cb.before_batch()
    assert learn.xb is x


def cutmix_draws(seed: int, n: int = 6, size: int = 8) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The shuffle and box ``CutMix(1.0, seed=seed)`` draws for its first batch, replayed in its order."""
    g = torch.Generator().manual_seed(seed + SEED_OFFSET)
    lam = float(sample_beta(1.0, 1, g))
    perm = torch.randperm(n, generator=g)
    return perm, random_box(size, size, lam, g)


def test_cutmix_pastes_a_box_and_weighs_the_loss_by_its_true_area():
    x, y, pred = batch()
    cb = CutMix(1.0, seed=5)
    cb.learn = learn = stub_learner(x, y)
    cb.before_train()
    cb.before_batch()
    perm, (y1, y2, x1, x2) = cutmix_draws(seed=5)
    want_x = x.clone()
    want_x[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
    assert torch.equal(learn.xb, want_x) and not torch.equal(x, learn.xb)  # the loader's batch is not changed
    true_lam = 1 - (y2 - y1) * (x2 - x1) / 64
    want = true_lam * F.cross_entropy(pred, y) + (1 - true_lam) * F.cross_entropy(pred, y[perm])
    assert torch.allclose(learn.loss_func(pred, y), want)


def test_cutmix_of_masks_pastes_the_mask_box_and_keeps_the_task_loss():
    x, _, _ = batch()
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 3, (6, 8, 8), generator=g)
    pred = torch.randn(6, 3, 8, 8, generator=g)
    loss = get_task("segment").loss(run_with(SegmentTask()))
    cb = CutMix(1.0, seed=5, masks=True)
    cb.learn = learn = stub_learner(x, y, loss)
    cb.before_train()
    cb.before_batch()
    perm, (y1, y2, x1, x2) = cutmix_draws(seed=5)
    want_y = y.clone()
    want_y[..., y1:y2, x1:x2] = y[perm][..., y1:y2, x1:x2]
    assert torch.equal(learn.yb, want_y) and torch.equal(learn.xb[..., y1:y2, x1:x2], x[perm][..., y1:y2, x1:x2])
    assert torch.equal(learn.loss_func(pred, learn.yb), loss(pred, want_y))


def test_random_box_lies_in_the_image_and_lam_near_one_is_no_box():
    g = torch.Generator().manual_seed(0)
    for lam in (0.0, 0.3, 0.9):
        y1, y2, x1, x2 = random_box(10, 12, lam, g)
        assert 0 <= y1 <= y2 <= 10 and 0 <= x1 <= x2 <= 12
    assert random_box(10, 12, 1.0, g)[0:2] in [(a, a) for a in range(11)]


def test_validation_is_untouched_by_mixup():
    """valid_loss of an epoch with mixup is the plain cross-entropy of its end weights."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 4, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    data = DataBunch.from_tensors(x[:32], y[:32], x[32:], y[32:], bs=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with one_thread():
        learn = Learner(model, data, F.cross_entropy, progress="none", cbs=[MixUp(0.4, seed=0)])
        learn.fit(1, 1e-2)
        preds, targets = learn.get_preds()
    assert learn.loss_func is F.cross_entropy
    assert learn.recorder.history[-1]["valid_loss"] == pytest.approx(F.cross_entropy(preds, targets).item(), rel=1e-6)


# ------------------------------------------------------------ runs: determinism and resume


MIX = ["schedule.epochs=2", "trainer.checkpoint_every_n_steps=7", "trainer.callbacks.mixup.alpha=0.4",
       "task.label_smoothing=0.1"]


def test_mixup_runs_are_deterministic_and_resume_to_the_same_run(tmp_path: Path):
    with one_thread():
        reference = tmp_path / "reference"
        train(compose_cfg(*MIX), reference)
        again = tmp_path / "again"
        train(compose_cfg(*MIX), again)
        assert history(reference) == history(again)
        # 22 batches an epoch: stopped in epoch 1, resumed from the checkpoint after batch 28
        run_dir, position = stopped_then_resumed(tmp_path, 30, *MIX)
    assert (position["epoch"], position["batch"]) == (1, 6)
    same_run(reference, run_dir)
    saved = torch.load(reference / "model.pt", weights_only=True)
    assert saved["meta"]["config"]["trainer"]["callbacks"]["mixup"]["alpha"] == 0.4


def test_cutmix_run_trains_and_differs_from_no_mixing(tmp_path: Path):
    with one_thread():
        plain = train(compose_cfg("schedule.epochs=1"), tmp_path / "plain")
        cut = train(compose_cfg("schedule.epochs=1", "trainer.callbacks.cutmix.alpha=1.0"), tmp_path / "cut")
    assert cut["status"] == "completed"
    assert history(tmp_path / "plain")[0]["train_loss"] != history(tmp_path / "cut")[0]["train_loss"]
    assert plain["status"] == "completed"


# ------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("overrides, fragment", [
    (["trainer.callbacks.mixup.alpha=-0.1"], "trainer.callbacks.mixup.alpha must be a finite number >= 0, got -0.1"),
    (["trainer.callbacks.cutmix.alpha=-1"], "trainer.callbacks.cutmix.alpha must be a finite number >= 0, got -1"),
    (["trainer.callbacks.mixup.alpha=0.4", "trainer.callbacks.cutmix.alpha=1"], "are both on: choose one"),
    (["task.label_smoothing=1.0"], "task.label_smoothing must lie in [0, 1), got 1.0"),
])
def test_bad_settings_are_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as exc:
        to_run_config(compose_cfg(*overrides))
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("schema", [SegmentTask, TextClassifyTask])
def test_every_smoothing_task_checks_it(schema):
    with pytest.raises(ConfigError, match=r"task.label_smoothing must lie in \[0, 1\), got -0.1"):
        schema(label_smoothing=-0.1)


@pytest.mark.parametrize("cbs, task, fragment", [
    (CallbacksConfig(mixup=MixupConfig(0.4)), "regress", "mixes images for task=classify, not task=regress"),
    (CallbacksConfig(mixup=MixupConfig(0.4)), "segment", "not task=segment"),
    (CallbacksConfig(cutmix=CutMixConfig(1.0)), "text_classify", "task=classify or task=segment, not task=text_classify"),
])
def test_mixing_a_task_it_cannot_mix_is_one_line(tmp_path, cbs, task, fragment):
    with pytest.raises(ConfigError) as exc:
        build_callbacks(TrainerConfig(callbacks=cbs), tmp_path, get_task(task), {})
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_factory_builds_mixup_and_cutmix_seeded_from_the_run(tmp_path):
    mix = build_callbacks(TrainerConfig(callbacks=CallbacksConfig(mixup=MixupConfig(0.4))), tmp_path,
                          get_task("classify"), {}, seed=7)
    cut = build_callbacks(TrainerConfig(callbacks=CallbacksConfig(cutmix=CutMixConfig(1.0))), tmp_path,
                          get_task("segment"), {}, seed=7)
    (m,), (c,) = [[cb for cb in cbs if isinstance(cb, MixUp | CutMix)] for cbs in (mix, cut)]
    assert isinstance(m, MixUp) and m.alpha == 0.4 and isinstance(c, CutMix) and c.masks
    want = torch.Generator().manual_seed(7 + SEED_OFFSET).get_state()
    assert torch.equal(m.state_dict()["generator"], want)


def test_cutmix_with_label_smoothing_trains_a_segmenter(tmp_path: Path):
    with one_thread():
        metrics = train(compose_cfg("+experiment=segment_scenes", "data.n_images=40", "schedule.epochs=1",
                                    "trainer.callbacks.cutmix.alpha=1.0", "task.label_smoothing=0.1",
                                    "trainer.plots=false", "trainer.progress=none", small=False), tmp_path)
    assert metrics["status"] == "completed" and metrics["objective_name"] == "mean_iou"
