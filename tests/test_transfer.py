"""Transfer learning: the model zoo, freezing, discriminative rates, the LR finder, bf16."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

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
    m = train(compose_cfg(f"schedule.lr_max={lr_max}", f"schedule.lr_ratio={ratio}", "schedule.epochs=1"), run_dir=tmp_path)
    assert m["layer_groups"] == 3
    assert m["group_lrs"] == pytest.approx(want, rel=1e-12)
    # the optimiser really ran the head at lr_max's peak and the others in proportion
    learn = prepare(to_run_config(compose_cfg(f"schedule.lr_max={lr_max}", f"schedule.lr_ratio={ratio}"))).learn
    learn.fit_one_cycle(1, want)
    groups = {g["layer_group"]: g["lr"] for g in learn.opt.param_groups}
    assert [groups[i] / groups[2] for i in range(3)] == pytest.approx([w / want[-1] for w in want])


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


def test_suggestions_on_a_known_curve():
    lrs, losses = _curve()
    s = suggest(lrs, losses, 100)
    assert set(s) == {"valley", "steep", "minimum", "slide"}
    assert 1e-5 < s["steep"] < 1e-2  # the descent is centred on 10**-3.5
    assert 1e-4 < s["valley"] < 1e-1
    assert s["minimum"] == pytest.approx(lrs[losses.index(min(losses))] / 10)
    for f in (valley, steep, minimum, slide):
        assert lrs[0] <= f(lrs, losses) <= lrs[-1]


def test_lr_find_restores_weights_and_suggests_a_sane_rate():
    learn = prepare(to_run_config(compose_cfg(*QUIET))).learn
    learn.create_opt()
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    rng = torch.get_rng_state()
    result = learn.lr_find()
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(result.lrs) >= 20 and result.lrs == sorted(result.lrs)
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
