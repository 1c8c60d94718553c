"""``schedule=fine_tune`` and ``schedule=gradual`` as a real run trains them: a callback reads,
at every training batch, which layer groups are frozen, the stage and epoch, and each group's
rate in the optimiser. The expected stages are written out from fastai and ULMFiT:

- fastai v2's ``Learner.fine_tune(epochs, base_lr, freeze_epochs, pct_start=0.3, div=5)``:
  ``freeze(); fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99)`` (div 25; a slice with
  one end gives the head ``base_lr`` and every other group a tenth of it), then
  ``base_lr /= 2; unfreeze(); fit_one_cycle(epochs, lrs / 2, pct_start, div)``;
- ULMFiT's gradual unfreezing: the head alone, then one more group per stage of ``freeze_epochs``
  epochs, the rates halved at each stage; the last stage, every group, runs ``epochs``.

Each batch's rate is checked against fastai's one-cycle formula (cosine warm-up from
``peak / div`` over ``pct_start`` of the stage's steps, cosine down to ``peak / div_final``),
written out here, not taken from fastlab.
"""

from __future__ import annotations

import math

import pytest

from fastlab.callbacks import Callback
from fastlab.learner import NORM_TYPES
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread

# 4 layer groups (three conv stages and the head); 40 training images of each of 5 classes: 6
# batches of 32 an epoch (the last, partial batch dropped, as fastai's training loader does).
RUN = ["data.classes=[0,1,2,3,4]", "data.train_per_class=40", "data.bs=32", "data.size=16", "arch.channels=[8,8,8]",
       "arch.head_hidden=16", "arch.groups=stages", "trainer.plots=false", "trainer.progress=none",
       "trainer.save_model=false"]
GROUPS, BATCHES = 4, 200 // 32


class StageLog(Callback):
    """Per training batch: (stage, epoch, frozen groups, {layer group: rate})."""

    order = 20  # after the ParamScheduler (10) has set the batch's rates

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int, dict[int, float]]] = []

    def before_batch(self) -> None:
        learn = self.learn
        if not learn.training or learn.lr_finding:
            return
        frozen = 0
        for module in learn.layer_groups:
            weights = [p for m in module.modules() if not isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)]
            if any(p.requires_grad for p in weights):
                break
            frozen += 1
        rates = {g["layer_group"]: g["lr"] for g in learn.opt.param_groups}
        self.batches.append((learn.stage, learn.epoch_offset + learn.epoch, frozen, rates))


def one_cycle(peak: float, div: float, div_final: float, pct_start: float, pos: float) -> float:
    """fastai's ``combined_cos(pct_start, peak / div, peak, peak / div_final)`` at ``pos``."""
    def cos(start: float, end: float, p: float) -> float:
        return start + (1 + math.cos(math.pi * (1 - p))) * (end - start) / 2

    if pos < pct_start:
        return cos(peak / div, peak, pos / pct_start)
    return cos(peak, peak / div_final, (pos - pct_start) / (1 - pct_start))


def run(tmp_path, *overrides: str) -> tuple[dict, list]:
    log = StageLog()
    with one_thread():
        metrics = train(compose_cfg(*RUN, *overrides, small=False), tmp_path, cbs=[log])
    assert metrics["status"] == "completed" and metrics["layer_groups"] == GROUPS
    return metrics, log.batches


def check_stages(batches: list, expected: list[tuple[int, int, list[float], float, float]], div_final: float) -> None:
    """``expected``: per stage (epochs, frozen groups, peak rates head last, pct_start, div)."""
    assert sorted({b[0] for b in batches}) == list(range(len(expected)))
    first_epoch = 0
    for k, (epochs, frozen, peaks, pct, div) in enumerate(expected):
        mine = [b for b in batches if b[0] == k]
        assert len(mine) == epochs * BATCHES, f"stage {k}: {len(mine)} batches"
        assert sorted({b[1] for b in mine}) == list(range(first_epoch, first_epoch + epochs))
        assert {b[2] for b in mine} == {frozen}, f"stage {k} froze {sorted({b[2] for b in mine})}"
        total = len(mine)
        for i, (_, _, _, rates) in enumerate(mine):
            head = one_cycle(peaks[-1], div, div_final, pct, i / total)
            assert rates == pytest.approx({g: head * peak / peaks[-1] for g, peak in enumerate(peaks)}, rel=1e-9), \
                f"stage {k} batch {i}"
        first_epoch += epochs


def test_fine_tune_trains_the_head_then_every_group_at_fastais_rates(tmp_path) -> None:
    metrics, batches = run(tmp_path, "schedule=fine_tune", "schedule.epochs=2", "schedule.freeze_epochs=1",
                           "schedule.lr_max=4e-3", "schedule.lr_ratio=2.6")
    base = [4e-3 / 2.6 ** (GROUPS - 1 - g) for g in range(GROUPS)]
    check_stages(batches, [
        (1, GROUPS - 1, [4e-3 / 10] * (GROUPS - 1) + [4e-3], 0.99, 25.0),  # slice(base_lr): head, a tenth elsewhere
        (2, 0, [r / 2 for r in base], 0.3, 5.0),
    ], div_final=1e5)
    assert metrics["group_lrs"] == pytest.approx([r / 2 for r in base])


def test_fine_tune_with_a_slice_spreads_the_unfrozen_rates_geometrically(tmp_path) -> None:
    _, batches = run(tmp_path, "schedule=fine_tune", "schedule.epochs=1", "schedule.freeze_epochs=1",
                     "schedule.lr_max=[1e-4,1e-2]")
    spread = [1e-4 * 100 ** (g / (GROUPS - 1)) for g in range(GROUPS)]  # fastai's even_mults(lo, hi, n)
    check_stages(batches, [
        (1, GROUPS - 1, [1e-3] * (GROUPS - 1) + [1e-2], 0.99, 25.0),
        (1, 0, [r / 2 for r in spread], 0.3, 5.0),
    ], div_final=1e5)


def test_gradual_unfreezes_one_group_per_stage_halving_the_rates(tmp_path) -> None:
    metrics, batches = run(tmp_path, "schedule=gradual", "schedule.epochs=2", "schedule.freeze_epochs=1",
                           "schedule.lr_max=1e-2", "schedule.pct_start=0.25")
    base = [1e-2 / 2.6 ** (GROUPS - 1 - g) for g in range(GROUPS)]  # conf/schedule/gradual.yaml: lr_ratio 2.6
    check_stages(batches, [
        (1, 3, base, 0.25, 25.0),
        (1, 2, [r / 2 for r in base], 0.25, 25.0),
        (1, 1, [r / 4 for r in base], 0.25, 25.0),
        (2, 0, [r / 8 for r in base], 0.25, 25.0),
    ], div_final=1e5)
    assert [s["frozen"] for s in metrics["stages"]] == [3, 2, 1, 0]
