"""One-cycle curves and discriminative rates, as tables; and the scheduler applying them."""

from __future__ import annotations

import math

import pytest

from fastlab.schedules import combine, group_lrs, one_cycle_lr, one_cycle_mom, sched_cos

LR, DIV, DIV_FINAL, PCT = 1e-2, 25.0, 1e5, 0.25


@pytest.mark.parametrize(
    "pos, lr",
    [
        (0.0, LR / DIV),  # starts at lr_max / div
        (PCT / 2, (LR / DIV + LR) / 2),  # cosine: half-way in time is half-way in value
        (PCT, LR),  # peak at pct_start
        (PCT + (1 - PCT) / 2, (LR + LR / DIV_FINAL) / 2),
        (1.0, LR / DIV_FINAL),  # ends at lr_max / div_final
    ],
)
def test_one_cycle_lr(pos, lr):
    assert one_cycle_lr(LR, DIV, DIV_FINAL, PCT)(pos) == pytest.approx(lr, rel=1e-9)


@pytest.mark.parametrize(
    "pos, mom",
    [(0.0, 0.95), (PCT / 2, 0.90), (PCT, 0.85), (PCT + (1 - PCT) / 2, 0.90), (1.0, 0.95)],
)
def test_one_cycle_momentum(pos, mom):
    assert one_cycle_mom((0.95, 0.85, 0.95), PCT)(pos) == pytest.approx(mom, rel=1e-9)


def test_one_cycle_is_monotone_in_each_phase():
    f = one_cycle_lr(LR, DIV, DIV_FINAL, PCT)
    xs = [i / 1000 for i in range(1001)]
    ys = [f(x) for x in xs]
    peak = xs.index(PCT)
    assert all(a <= b for a, b in zip(ys[:peak], ys[1 : peak + 1]))
    assert all(a >= b for a, b in zip(ys[peak:], ys[peak + 1 :]))


def test_pct_start_zero_skips_warmup():
    assert one_cycle_lr(LR, DIV, DIV_FINAL, 0.0)(0.0) == pytest.approx(LR)


def test_cos_endpoints():
    assert sched_cos(2.0, 4.0, 0.0) == 2.0 and sched_cos(2.0, 4.0, 1.0) == 4.0


def test_combine_rejects_fractions_not_summing_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        combine([0.5, 0.4], [sched_cos, sched_cos], [(0, 1), (1, 0)])


@pytest.mark.parametrize(
    "lr_max, n, ratio, want",
    [
        (1e-3, 1, 2.6, [1e-3]),
        (1e-3, 3, 1.0, [1e-3, 1e-3, 1e-3]),
        (1e-3, 3, 2.6, [1e-3 / 2.6**2, 1e-3 / 2.6, 1e-3]),
        (1.0, 4, 10.0, [1e-3, 1e-2, 1e-1, 1.0]),
    ],
)
def test_group_lrs(lr_max, n, ratio, want):
    got = group_lrs(lr_max, n, ratio)
    assert len(got) == n and all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got, want))


def test_learner_applies_one_cycle_every_batch(small_cfg):
    """The rates the Recorder saw are the pure function at pos = step / total_steps."""
    from fastlab.config import to_run_config
    from fastlab.data import DataBunch
    from fastlab.learner import Learner
    from fastlab.models import create_model
    from fastlab.tasks.classify import CLASSIFY

    run = to_run_config(small_cfg("schedule.lr_ratio=2.6"))
    data = DataBunch.from_config(run.data, "category")
    learn = Learner(create_model(run.arch, data.n_channels, data.c), data, CLASSIFY.loss_func,
                    lr_ratio=2.6, progress="none")
    learn.fit_one_cycle(2, 1e-2, pct_start=0.3, moms=(0.9, 0.8, 0.9))
    total = 2 * len(data.train)
    lr_f, mom_f = one_cycle_lr(1e-2, 25, 1e5, 0.3), one_cycle_mom((0.9, 0.8, 0.9), 0.3)
    assert len(learn.recorder.lrs) == total
    for i, (lr, mom) in enumerate(zip(learn.recorder.lrs, learn.recorder.moms)):
        assert lr == pytest.approx(lr_f(i / total)) and mom == pytest.approx(mom_f(i / total))
    # discriminative scales: every param group's lr is the head's divided by 2.6 per group back
    n = len(learn.layer_groups)
    for group in learn.opt.param_groups:
        assert group["lr"] == pytest.approx(learn.recorder.lrs[-1] / 2.6 ** (n - 1 - group["layer_group"]))
