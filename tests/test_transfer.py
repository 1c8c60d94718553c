"""Transfer learning: the model zoo, freezing, discriminative rates, the LR finder, bf16."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from fastlab.callbacks.core import Callback
from fastlab.config import to_run_config
from fastlab.errors import ConfigError
from fastlab.lr_find import minimum, slide, steep, suggest, valley
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from tests.conftest import compose_cfg

TINY_ARCH = ["data.size=16", "arch.channels=[16,32]", "arch.head_hidden=32"]
QUIET = ["trainer.plots=false", "trainer.progress=none"]
FEW_SHOT = ["data=digits", "data.classes=[5,6,7,8,9]", "data.train_per_class=10", "data.bs=16"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A glyphs body pretrained once into a fresh model zoo."""
    root = tmp_path_factory.mktemp("zoo")
    metrics = train(compose_cfg("+experiment=pretrain_glyphs", *TINY_ARCH, *QUIET, "data.n_classes=20",
                                "data.per_class=40", "schedule.epochs=4", f"paths.models={root}", small=False),
                    run_dir=root / "pretrain_run")
    assert metrics["status"] == "completed" and (root / "glyphs.pt").is_file()
    return root


def few_shot(zoo, tmp_path, pretrained: str, seed: int, *extra: str) -> dict:
    return train(compose_cfg(*FEW_SHOT, *TINY_ARCH, *QUIET, "schedule=fine_tune", "schedule.epochs=6",
                             "schedule.freeze_epochs=2", "schedule.lr_max=3e-3", f"arch.pretrained={pretrained}",
                             f"paths.models={zoo}", f"seed={seed}", *extra, small=False),
                 run_dir=tmp_path / f"{pretrained}-{seed}")


def test_pretrained_glyphs_beat_scratch_on_few_shot_digits(zoo, tmp_path):
    """Digits 5-9 with 10 labelled images each: a body pretrained on generated glyphs (never a
    digit) must beat the same budget from scratch by a clear margin."""
    pre = [few_shot(zoo, tmp_path, "glyphs", s)["objective"] for s in (0, 1)]
    scratch = [few_shot(zoo, tmp_path, "null", s)["objective"] for s in (0, 1)]
    # Measured (seeds 0 and 1, the zoo pretrained at seed 0; torch's default threads: 2 on the
    # 2-core test machine): pretrained 0.680 and 0.643 against scratch 0.214 and 0.291, +46.6
    # and +35.2 points, +40.9 on the mean (bar +20).
    assert statistics.mean(pre) >= statistics.mean(scratch) + 0.2, (pre, scratch)


def test_pretrained_load_is_reported(zoo, tmp_path):
    m = few_shot(zoo, tmp_path, "glyphs", 0, "schedule.epochs=1")
    assert m["pretrained"]["path"].endswith("glyphs.pt")
    assert m["pretrained"]["loaded"] > 0 and m["pretrained"]["new"] > 0
    assert [st["frozen"] for st in m["stages"]] == [2, 0]


def test_checkpoint_of_another_arch_is_refused(zoo):
    run = to_run_config(compose_cfg("arch=resnet18", "arch.pretrained=glyphs", f"paths.models={zoo}", small=False))
    with pytest.raises(ConfigError) as info:
        prepare(run)
    message = str(info.value)
    assert "'cnn'" in message and "resnet18" in message and "\n" not in message


def test_checkpoint_of_other_settings_lists_the_mismatch(zoo):
    run = to_run_config(compose_cfg("arch.channels=[8,16]", "data.size=16", "arch.pretrained=glyphs",
                                    f"paths.models={zoo}", small=False))
    with pytest.raises(ConfigError) as info:
        prepare(run)
    assert "channels" in str(info.value) and "[16, 32]" in str(info.value)


def test_missing_zoo_entry_says_how_to_make_it(tmp_path):
    run = to_run_config(compose_cfg("arch.pretrained=shapes", f"paths.models={tmp_path}"))
    with pytest.raises(ConfigError, match=r"\+experiment=pretrain_shapes"):
        prepare(run)


class Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('ran')",))


def test_checkpoint_with_pickled_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}, "meta": {"arch": "cnn"}, "x": Payload()}, bad)
    run = to_run_config(compose_cfg(f"arch.pretrained={bad}"))
    with pytest.raises(ConfigError, match="refused"):
        prepare(run)
    assert not (tmp_path / "PWNED").exists()


def test_frozen_groups_keep_weights_and_norm_layers_train(tmp_path):
    prep = prepare(to_run_config(compose_cfg(*QUIET)))
    learn = prep.learn
    learn.freeze()  # all groups but the head
    body = learn.layer_groups[0]
    conv_before = body[0][0][0].weight.detach().clone()
    bn_before = body[0][0][1].weight.detach().clone()
    head_before = learn.layer_groups[-1][-1].weight.detach().clone()
    learn.fit_one_cycle(1, 1e-2)
    assert torch.equal(body[0][0][0].weight, conv_before)  # frozen conv did not move
    assert not torch.equal(body[0][0][1].weight, bn_before)  # its batch norm did (train_bn)
    assert not torch.equal(learn.layer_groups[-1][-1].weight, head_before)
    learn.train_bn = False
    learn.freeze()
    assert not body[0][0][1].weight.requires_grad


def test_freezing_resets_optimiser_state():
    learn = prepare(to_run_config(compose_cfg(*QUIET))).learn
    learn.fit_one_cycle(1, 1e-2)
    assert len(learn.opt.state) > 0
    learn.freeze_to(1)
    assert len(learn.opt.state) == 0 and learn.frozen == 1


class RateSpy(Callback):
    """Records each layer group's rate before every optimiser step of a run, as the optimiser
    holds it (after the scheduler set it): ``steps`` is ``[(opt_step, [rate of group 0, ...])]``."""

    def before_fit(self):
        self.steps, self.total = [], self.learn.n_epoch * self.learn.steps_per_epoch()

    def before_step(self):
        rates = {g["layer_group"]: g["lr"] for g in self.learn.opt.param_groups}
        self.steps.append((self.learn.opt_step, [rates[i] for i in sorted(rates)]))


def fastai_one_cycle(lr_max, pos, div=25.0, div_final=1e5, pct_start=0.25):
    """fast.ai's ``fit_one_cycle`` rate at ``pos`` in [0, 1]: cosine from lr_max/div up to
    lr_max over pct_start of the steps, then cosine down to lr_max/div_final."""
    def cos(start, end, p):
        return start + (1 + math.cos(math.pi * (1 - p))) * (end - start) / 2
    if pos < pct_start:
        return cos(lr_max / div, lr_max, pos / pct_start)
    return cos(lr_max, lr_max / div_final, (pos - pct_start) / (1 - pct_start))


@pytest.mark.parametrize(
    "lr_max, ratio, want",
    [
        ("1e-2", 1.0, [1e-2, 1e-2, 1e-2]),
        ("1e-2", 2.6, [1e-2 / 2.6**2, 1e-2 / 2.6, 1e-2]),
        ("[1e-4,1e-2]", 1.0, [1e-4, 1e-3, 1e-2]),
        ("[null,1e-2]", 1.0, [1e-3, 1e-3, 1e-2]),
    ],
)
def test_runs_record_the_exact_group_rates(tmp_path, lr_max, ratio, want):
    spy = RateSpy()
    m = train(compose_cfg(f"schedule.lr_max={lr_max}", f"schedule.lr_ratio={ratio}", "schedule.epochs=1"),
              run_dir=tmp_path, cbs=[spy])
    assert m["layer_groups"] == 3
    assert m["group_lrs"] == pytest.approx(want, rel=1e-12)
    # What the optimiser of that very run held at each of its steps: every group in proportion
    # to the head, and the head on fast.ai's one cycle peaking at the head's rate.
    assert len(spy.steps) == spy.total > 10
    for step, rates in spy.steps:
        assert rates == pytest.approx([fastai_one_cycle(w, step / spy.total) for w in want], rel=1e-12)


def test_gradual_unfreezes_one_group_per_stage(tmp_path):
    m = train(compose_cfg("schedule=gradual", "schedule.epochs=1", "schedule.freeze_epochs=1"), run_dir=tmp_path)
    assert [st["frozen"] for st in m["stages"]] == [2, 1, 0] and m["epochs"] == 3
    assert [int(r["epoch"]) for r in _history(tmp_path)] == [0, 1, 2]


def _history(run_dir):
    import csv

    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- LR finder
def _curve(n=100):
    """A loss curve shaped like a real range test: flat, a long descent, then a blow-up."""
    lrs = [1e-7 * (1e8) ** (i / (n - 1)) for i in range(n)]
    losses = []
    for lr in lrs:
        x = torch.log10(torch.tensor(lr)).item()  # -7 .. 1
        losses.append(2.3 - 2.0 / (1 + 10 ** (-(x + 3.5))) + (0 if x < -1 else 5 * (x + 1) ** 2))
    return lrs, losses


def fastai_suggestions(lrs, losses, num_it):
    """fastai's four suggestion functions (``fastai/callback/schedule.py``: ``valley``,
    ``steep``, ``minimum``, ``slide``), transcribed as written there, on the curve ``lr_find``
    hands them (``[num_it // 10:-5]``): the oracle fastlab's own must match."""
    lrs, losses = np.asarray(lrs[num_it // 10:-5]), np.asarray(losses[num_it // 10:-5])
    n, max_start, max_end = len(losses), 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    loss_grad, r_idx, l_idx = np.gradient(losses), -1, -16  # lr_diff=15
    local_min_lr = lrs[l_idx]
    while (l_idx >= -len(losses)) and (abs(loss_grad[r_idx] - loss_grad[l_idx]) > 0.005):
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return {"valley": float(lrs[max_start + int(sections) + int(sections / 2)]),
            "steep": float(lrs[grads.argmin()]), "minimum": float(lrs[losses.argmin()]) / 10,
            "slide": float(local_min_lr)}


def test_suggestions_on_a_known_curve_are_fastais():
    lrs, losses = _curve()
    s = suggest(lrs, losses, 100)
    assert s == fastai_suggestions(lrs, losses, 100)
    # The points fastai's formulas pick on this curve (trimmed to lrs[10:95]): the valley 1/3 +
    # 1/6 along the longest descent, the steepest slope just below the descent's centre
    # 10**-3.5, a tenth of the lowest loss's rate, and where the slope stops changing.
    assert s == {"valley": lrs[40], "steep": lrs[43], "minimum": lrs[74] / 10, "slide": lrs[37]}
    assert (valley(lrs[10:95], losses[10:95]), steep(lrs[10:95], losses[10:95]),
            minimum(lrs[10:95], losses[10:95]), slide(lrs[10:95], losses[10:95])) == tuple(s.values())


def test_lr_find_restores_weights_and_suggests_a_sane_rate():
    learn = prepare(to_run_config(compose_cfg(*QUIET))).learn
    learn.create_opt()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    rng = torch.get_rng_state()
    result = learn.lr_find()
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(result.lrs) >= 20 and result.lrs == sorted(result.lrs)
    # the suggestions are fastai's, on the curve this finder recorded (num_it=100)...
    assert result.suggestions == fastai_suggestions(result.lrs, result.losses, 100)
    # ...and that curve is a real one: measured valley 2.8e-3 (one thread), 4.0e-3 (two: torch's
    # default here, which this test uses), seed 0 (the config's); the window is a sanity bound
    # (over a decade each side), the exact values are pinned by the line above
    assert 1e-4 <= result.suggestions["valley"] <= 1e-1, result.suggestions


def test_lr_find_does_not_change_the_training_that_follows(tmp_path):
    """fastai #3013: with the same seed, finding a rate first must not change the result."""
    plain = prepare(to_run_config(compose_cfg(*QUIET))).learn
    plain.fit_one_cycle(2, 1e-2)
    found = prepare(to_run_config(compose_cfg(*QUIET))).learn
    found.lr_find()
    found.fit_one_cycle(2, 1e-2)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in plain.recorder.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in found.recorder.history]


def test_lr_max_find_uses_the_valley(tmp_path):
    m = train(compose_cfg("schedule.lr_max=find", "trainer.plots=true"), run_dir=tmp_path)
    assert m["status"] == "completed" and m["group_lrs"][-1] == pytest.approx(m["lr_find"]["valley"])
    assert (tmp_path / "plots" / "lr_find.png").stat().st_size > 0


def test_bf16_trains_close_to_fp32(tmp_path):
    fp32 = train(compose_cfg("schedule.epochs=3"), run_dir=tmp_path / "fp32")["objective"]
    bf16 = train(compose_cfg("schedule.epochs=3", "trainer.precision=bf16-mixed"), run_dir=tmp_path / "bf16")["objective"]
    # Measured (seed 0, the config's; torch's default threads: 2 on the 2-core test machine):
    # bf16 0.969 (348 of 359 validation digits, bar 0.85 = 306), one digit (0.0028) from fp32;
    # the 0.05 bar on the difference is 18 digits.
    assert bf16 > 0.85 and abs(bf16 - fp32) < 0.05


def test_fastlab_lr_find_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import SMALL

    out = subprocess.run([str(Path(sys.executable).parent / "fastlab-lr-find"), *SMALL], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (found,) = list((tmp_path / "outputs").rglob("lr_find.json"))
    data = json.loads(found.read_text())
    assert set(data["suggestions"]) == {"valley", "steep", "minimum", "slide"}
    assert (found.parent / "plots" / "lr_find.png").is_file()
    assert "valley" in out.stdout


def test_learner_predict_on_a_file(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    learn = prepare(to_run_config(compose_cfg(*QUIET, "schedule.epochs=3"))).learn
    learn.fit_one_cycle(3, 1e-2)
    d = load_digits()
    hits = 0
    for i in range(20):
        path = tmp_path / f"{i}.png"
        Image.fromarray((d.images[i] * 255 / 16).astype("uint8")).resize((32, 32)).save(path)
        out = learn.predict(path)
        assert len(out["top"]) == 3 and out["top"][0]["prob"] >= out["top"][1]["prob"]
        hits += out["label"] == str(d.target[i])
    assert hits >= 16
