"""``arch.groups``: the pure split rule, the groups it gives every body (cnn, resnet18/50, the
U-Net's encoder, timm), one-line refusals, ULMFiT's 2.6 rates over five groups in a real run,
freezing all but the head, and a zoo body loading whatever the grouping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastlab.config import to_run_config
from fastlab.errors import ConfigError
from fastlab.models import create_model
from fastlab.models.cnn import CnnArch
from fastlab.models.groups import parse_groups, split_points
from fastlab.models.resnet import ResnetArch
from fastlab.models.unet import Unet, UnetArch
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from tests.conftest import compose_cfg, require
from tests.models.test_groups import assert_partition

QUIET = ["trainer.plots=false", "trainer.progress=none"]
# digits 0 and 1 at 16 px, one epoch; through a four-stage cnn (16 -> 1 px): seconds
DIGITS = ["data=digits", "data.classes=[0,1]", "data.size=16", "data.bs=32", "schedule.epochs=1", *QUIET]
TINY = [*DIGITS, "arch.channels=[8,8,16,16]", "arch.head_hidden=16"]


# ------------------------------------------------------------------------------ the pure rule


@pytest.mark.parametrize("n_stages,spec,points", [
    (1, "halves", ()),
    (2, "halves", (1,)),
    (3, "halves", (2,)),  # the cnn's default: the first half one stage larger
    (4, "halves", (2,)),
    (5, "halves", (3,)),  # a ResNet's five stages: stem..layer2 | layer3, layer4
    (1, "stages", ()),
    (5, "stages", (1, 2, 3, 4)),
    (1, 2, ()),
    (5, 2, ()),
    (5, 3, (3,)),
    (5, 4, (2, 4)),
    (5, 5, (2, 3, 4)),
    (5, 6, (1, 2, 3, 4)),
    (7, 4, (3, 5)),
    (8, 4, (3, 6)),
    (4, "3", (2,)),  # a quoted number from the command line
])
def test_split_points(n_stages, spec, points):
    assert split_points(n_stages, spec) == points


@pytest.mark.parametrize("n_stages", range(1, 9))
def test_integer_groups_spread_stages_evenly_in_order(n_stages):
    for n in range(2, n_stages + 2):
        sizes = [b - a for a, b in zip((0, *split_points(n_stages, n)), (*split_points(n_stages, n), n_stages))]
        assert len(sizes) == n - 1 and sum(sizes) == n_stages
        assert sizes == sorted(sizes, reverse=True) and max(sizes) - min(sizes) <= 1  # earlier ones take extras
    assert split_points(n_stages, n_stages + 1) == split_points(n_stages, "stages")
    if n_stages >= 2:
        assert split_points(n_stages, 3) == split_points(n_stages, "halves")


@pytest.mark.parametrize("spec,fragment", [
    (1, "arch.groups=1 is too few"),
    (0, "arch.groups=0 is too few"),
    ("thirds", "arch.groups='thirds' is not a way to split"),
    (2.5, "arch.groups=2.5 is not"),
    (True, "arch.groups=True is not"),
    (None, "arch.groups=None is not"),
])
def test_bad_specs_are_one_line(spec, fragment):
    with pytest.raises(ConfigError) as info:
        parse_groups(spec)
    assert fragment in str(info.value) and "halves, stages or an integer >= 2" in str(info.value)
    assert "\n" not in str(info.value)


def test_too_many_groups_names_the_maximum():
    with pytest.raises(ConfigError, match=r"arch.groups=7 .* 5 stage\(s\) and the head make at most 6; use arch.groups=6"):
        split_points(5, 7)


# ----------------------------------------------------------------------------- every body


def resnet(name: str, groups) -> nn.Module:
    with torch.device("meta"):  # only the structure is tested: no time spent initialising
        return create_model(ResnetArch(name=name, groups=groups), 3, 4)


BUILDERS = {
    "cnn": lambda groups: create_model(CnnArch(channels=[8, 8, 16, 16, 16], head_hidden=8, groups=groups), 3, 4),
    "resnet18": lambda groups: resnet("resnet18", groups),
    "resnet50": lambda groups: resnet("resnet50", groups),
}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("spec,n_groups", [("halves", 3), ("stages", 6), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)])
def test_each_spec_gives_its_count_and_partitions_the_parameters(arch, spec, n_groups):
    model = BUILDERS[arch](spec)  # all three bodies have five stages
    groups = model.layer_groups()
    assert len(groups) == n_groups and groups[-1] is model.head
    assert_partition(model, groups)


def test_resnet_stages_are_stem_then_each_layer():
    model = resnet("resnet18", "stages")
    stem, *layers, head = model.layer_groups()
    assert [type(m).__name__ for m in stem] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert [len(g) for g in layers] == [1, 1, 1, 1] and [g[0][0].conv1.in_channels for g in layers] == [64, 64, 128, 256]
    assert head is model.head


@pytest.mark.parametrize("overrides,splits", [
    ([], (2,)),  # the default cnn (three stages): today's split
    (["arch=resnet18"], (6,)),  # fastai's: stem..layer2 | layer3, layer4
    (["arch=resnet50"], (6,)),
])
def test_the_composed_default_is_todays_split(overrides, splits):
    arch = to_run_config(compose_cfg(*overrides, small=False)).arch
    assert arch.groups == "halves" and arch.splits() == splits


@pytest.mark.parametrize("override,fragment", [
    ("arch.groups=1", "arch.groups=1 is too few"),
    ("arch.groups=99", "make at most 4; use arch.groups=4"),
    ("arch.groups=thirds", "arch.groups='thirds' is not a way to split"),
])
@pytest.mark.parametrize("arch", [[], ["arch=unet"]], ids=["cnn", "unet"])
def test_bad_values_on_the_command_line_are_one_line(arch, override, fragment):
    with pytest.raises(ConfigError) as info:
        to_run_config(compose_cfg(*arch, override, small=False))
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("cfg,n_groups", [
    (UnetArch(encoder="cnn", channels=[8, 16, 32], groups="stages"), 4),
    (UnetArch(encoder="cnn", channels=[8, 16, 32], groups=2), 2),
    (UnetArch(encoder="resnet18", groups="stages"), 6),
    (UnetArch(encoder="resnet18", groups=4), 4),
])
def test_unet_splits_its_encoder_as_the_classifier(cfg, n_groups):
    model = Unet(cfg, 3, 4)
    groups = model.layer_groups()
    assert len(groups) == n_groups and groups[-1] is model.decoder
    assert_partition(model, groups)


def test_timm_groups_merge_its_coarse_groups():
    require("timm")
    from fastlab.models.timm_arch import TimmArch, timm_model

    counts = {}
    for spec in ("stages", "halves", 4):
        model = timm_model(TimmArch(model="resnet18", groups=spec), 3, 4)
        groups = model.layer_groups()
        assert groups[-1] is model.head
        assert_partition(model, groups)
        counts[spec] = len(groups)
    assert counts == {"stages": 6, "halves": 3, 4: 4}  # stages (the default): stem, layer1..4, head
    with pytest.raises(ConfigError, match="make at most 6; use arch.groups=6"):
        timm_model(TimmArch(model="resnet18", groups=7), 3, 4)


# ------------------------------------------------------------------------------ in a real run


def test_five_groups_take_ulmfit_rates(tmp_path):
    lr = 1e-2
    m = train(compose_cfg(*TINY, "arch.groups=5", "schedule.lr_ratio=2.6", f"schedule.lr_max={lr}", small=False),
              run_dir=tmp_path / "run")
    assert m["status"] == "completed" and m["layer_groups"] == 5
    assert m["group_lrs"] == pytest.approx([lr / 2.6 ** (4 - g) for g in range(5)])
    assert math.isfinite(m["final"]["valid_loss"])


@pytest.mark.parametrize("overrides,n_groups", [
    ([*TINY, "arch.groups=5"], 5),
    ([*DIGITS, "arch=resnet18", "arch.groups=stages", "data.size=32"], 6),
], ids=["cnn", "resnet18"])
def test_freezing_trains_the_head_group_only(overrides, n_groups):
    learn = prepare(to_run_config(compose_cfg(*overrides, small=False))).learn
    learn.freeze()
    groups = learn.layer_groups
    assert len(groups) == n_groups and learn.frozen == n_groups - 1
    norms = (nn.BatchNorm1d, nn.BatchNorm2d)  # train_bn: norm layers of frozen groups keep training
    for g, group in enumerate(groups):
        weights = [p for m in group.modules() if not isinstance(m, norms) for p in m.parameters(recurse=False)]
        assert weights and all(p.requires_grad == (g == n_groups - 1) for p in weights), g


def test_fine_tune_freezes_all_but_the_head_group(tmp_path):
    m = train(compose_cfg(*TINY, "arch.groups=stages", "schedule=fine_tune", "schedule.freeze_epochs=1",
                          small=False), run_dir=tmp_path / "run")
    assert m["layer_groups"] == 5 and [st["frozen"] for st in m["stages"]] == [4, 0]


# ------------------------------------------------------------------------------------- zoo


@pytest.fixture(scope="module")
def halves_zoo(tmp_path_factory):
    """A zoo body trained with the default grouping (halves)."""
    root = tmp_path_factory.mktemp("zoo")
    m = train(compose_cfg(*TINY, "save_as=halves_body", f"paths.models={root}", small=False), run_dir=root / "run")
    assert m["status"] == "completed" and m["layer_groups"] == 3
    return root


def test_a_halves_body_loads_into_a_stages_model(halves_zoo):
    p = prepare(to_run_config(compose_cfg(*TINY, "arch.groups=stages", "arch.pretrained=halves_body",
                                          f"paths.models={halves_zoo}", small=False)))
    assert len(p.learn.layer_groups) == 5
    saved = torch.load(halves_zoo / "halves_body.pt", weights_only=True)["state_dict"]
    body = {k: v for k, v in p.model.state_dict().items() if k.startswith("body.")}
    assert set(p.pretrained.loaded) == set(body)
    assert all(torch.equal(v.cpu(), saved[k]) for k, v in body.items())


def test_a_misfit_names_the_shape_settings_not_the_groups(halves_zoo):
    run = to_run_config(compose_cfg(*TINY, "arch.channels=[8,8,16,32]", "arch.groups=stages",
                                    "arch.pretrained=halves_body", f"paths.models={halves_zoo}", small=False))
    with pytest.raises(ConfigError) as info:
        prepare(run)
    message = str(info.value)
    assert "'channels': ([8, 8, 16, 16], [8, 8, 16, 32])" in message and "'groups'" not in message
    assert "\n" not in message
