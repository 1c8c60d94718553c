"""arch=timm: any timm model as a body, with fast.ai's head or timm's; its ImageNet weights from
the Hugging Face hub cache (seeded stand-ins laid out as ``hf download`` leaves them), exact and
with the model's own statistics, never downloaded; layer groups by the model's stages; clear
lines for a bad name, a missing cache entry and a missing timm."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.conftest import compose_cfg, require

timm = require("timm")
from huggingface_hub import constants, hf_hub_download  # noqa: E402  (installed with timm)

from fastlab.config import to_run_config  # noqa: E402
from fastlab.errors import ConfigError  # noqa: E402
from fastlab.models.imagenet import read_imagenet  # noqa: E402
from fastlab.models.timm_arch import TimmArch, timm_model  # noqa: E402
from fastlab.run.prepare import prepare  # noqa: E402
from fastlab.run.train import train  # noqa: E402
from tests.models.test_groups import assert_partition  # noqa: E402
from tests.offline import block_network, hub_cache, pets_folder, timm_net  # noqa: E402

QUIET = ["trainer.plots=false", "trainer.progress=none"]
# digits 0 and 1 at 32 px: 288 training and 72 validation images
DIGITS = ["data=digits", "data.classes=[0,1]", "data.size=32", "data.bs=32", *QUIET]
CONVNEXT = "timm/test_convnext.r160_in1k"  # what pretrained_cfg names for arch.model=test_convnext


@pytest.fixture
def no_network(monkeypatch) -> list:
    """The network blocked; the connects attempted (none, if all is well)."""
    return block_network(monkeypatch)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """A hub cache holding seeded stand-ins for test_convnext's and test_vit's default weights."""
    root = tmp_path_factory.mktemp("hf_hub")
    hub_cache(root, CONVNEXT, timm_net("test_convnext").state_dict())
    hub_cache(root, "timm/test_vit.r160_in1k", timm_net("test_vit").state_dict())
    return root


@pytest.fixture
def hub(stand_ins, tmp_path, monkeypatch, no_network):
    """The stand-in cache as huggingface_hub's (it reads HF_HUB_CACHE at import), the network blocked."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(stand_ins))
    return no_network


def test_the_stand_in_cache_is_where_huggingface_hub_looks(hub, stand_ins):
    path = hf_hub_download(CONVNEXT, "model.safetensors")  # offline: answered from the cache alone
    assert path.startswith(str(stand_ins)) and hub == []


def test_cached_weights_give_the_body_exactly_and_the_models_stats(hub, tmp_path):
    pets = pets_folder(tmp_path / "images", per_breed=4)
    run = to_run_config(compose_cfg("data=name_re", f"data.path={pets}", "data.size=32", "data.bs=4", "arch=timm",
                                    "arch.model=test_convnext", "arch.pretrained=imagenet", *QUIET, small=False))
    prep = prepare(run)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(prep.model.eval().body.forward_features(x), timm_net("test_convnext").forward_features(x))
    cfg = timm.models.get_pretrained_cfg("test_convnext")
    assert prep.data.mean == pytest.approx(list(cfg.mean)) and prep.data.std == pytest.approx(list(cfg.std))
    assert prep.data.mean == pytest.approx([0.5, 0.5, 0.5])  # the model's own, not ImageNet's usual
    assert prep.pretrained.path.name == "model.safetensors" and all(k.startswith("head.") for k in prep.pretrained.new)
    assert hub == []


def test_missing_weights_stop_at_once_with_one_line(tmp_path, monkeypatch, no_network, no_sleep):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    run = to_run_config(compose_cfg("arch=timm", "arch.model=resnet18", "arch.pretrained=imagenet", *QUIET,
                                    small=False))
    with pytest.raises(ConfigError) as info:
        prepare(run)
    message = str(info.value)
    # "at once": nothing tried to connect and nothing waited (no retry, no back-off)
    assert no_network == [] and no_sleep == [] and "\n" not in message
    assert "timm/resnet18.a1_in1k" in message and "hf download timm/resnet18.a1_in1k" in message
    assert "models--timm--resnet18.a1_in1k" in message and str(tmp_path / "empty") in message
    assert "timm.create_model('resnet18.a1_in1k', pretrained=True)" in message


def test_a_corrupt_or_foreign_hub_file_is_refused_by_name(hub, stand_ins, tmp_path, monkeypatch):
    # test_vit's weights where arch.model=test_convnext looks: refused, naming the file
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    path = hub_cache(tmp_path / "hub", CONVNEXT, timm_net("test_vit").state_dict())
    cfg = TimmArch(model="test_convnext", pretrained="imagenet")
    with pytest.raises(ConfigError, match="does not fit timm's test_convnext.r160_in1k weights") as info:
        read_imagenet(cfg).load_into(timm_model(cfg, 3, 2))
    assert str(path) in str(info.value)
    path.resolve().write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(ConfigError, match="cannot read weights file .*model.safetensors"):
        read_imagenet(cfg)


@pytest.mark.parametrize("overrides,groups", [
    (["arch.model=resnet18"], 6),  # stem, layer1..4, fast.ai's head
    (["arch.model=test_convnext", "arch.head=timm", "arch.pretrained=imagenet", "schedule=fine_tune",
      "schedule.freeze_epochs=1"], 7),  # stem, 4 stages, the final norm, timm's classifier
], ids=["resnet18", "convnext-timm-head-imagenet"])
def test_trains_one_epoch_on_digits(hub, tmp_path, overrides, groups):
    m = train(compose_cfg(*DIGITS, "arch=timm", "schedule.epochs=1", "schedule.lr_max=1e-3",
                          "schedule.lr_ratio=2.6", *overrides, small=False), run_dir=tmp_path / "run")
    assert m["status"] == "completed" and m["layer_groups"] == groups
    lrs = m["group_lrs"]
    assert lrs == sorted(lrs) and lrs[-1] / lrs[0] == pytest.approx(2.6 ** (groups - 1))  # discriminative
    if "arch.pretrained=imagenet" in overrides:  # one channel: the stem's colour filters summed
        assert [st["frozen"] for st in m["stages"]] == [groups - 1, 0] and m["pretrained"]["loaded"] > 0
    assert hub == []


@pytest.mark.parametrize("model", ["test_convnext", "test_vit", "test_efficientnet"])
@pytest.mark.parametrize("head", ["fastai", "timm"])
def test_groups_partition_the_parameters_head_last(model, head):
    kwargs = {"img_size": 32} if model == "test_vit" else {}
    net = timm_model(TimmArch(model=model, head=head, kwargs=kwargs), 3, 4)
    groups = net.layer_groups()
    assert len(groups) >= 4 and groups[-1] is net.head
    assert_partition(net, groups)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_freezing_follows_the_groups_norm_layers_keep_training():
    learn = prepare(to_run_config(compose_cfg(*DIGITS, "arch=timm", "arch.model=test_convnext", small=False))).learn
    learn.freeze()
    body = learn.model.body
    assert not body.stem[0].weight.requires_grad and not body.stages[3].blocks[0].mlp.fc1.weight.requires_grad
    assert body.stem[1].weight.requires_grad  # a norm layer (train_bn)
    assert all(p.requires_grad for p in learn.model.head.parameters())
    learn.freeze_to(2)  # stem and stage 0 frozen, stage 1 on
    assert not body.stages[0].blocks[0].conv_dw.weight.requires_grad and body.stages[1].blocks[0].conv_dw.weight.requires_grad


def test_vit_weights_load_at_another_input_size(hub):
    """The model's own checkpoint filter runs: a ViT's position embeddings resampled from the
    160 px stand-in to a 32 px model."""
    cfg = TimmArch(model="test_vit", pretrained="imagenet", kwargs={"img_size": 32})
    model = timm_model(cfg, 3, 4)
    read_imagenet(cfg).load_into(model)
    assert torch.equal(model.body.blocks[0].attn.qkv.weight, timm_net("test_vit").blocks[0].attn.qkv.weight)
    assert hub == []


@pytest.mark.parametrize("model,fragment", [
    ("resnet_18", "is not a timm model (close: resnet18"),
    ("no_such_net", "timm.list_models("),
    ("resnet18.bogus", "timm has no weights tagged so"),
])
def test_bad_model_names_say_how_to_find_names(model, fragment):
    with pytest.raises(ConfigError) as info:
        to_run_config(compose_cfg("arch=timm", f"arch.model={model}", small=False))
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert "timm.list_models" in str(info.value) or "tags" in str(info.value)


def test_settings_fastlab_owns_are_refused_in_kwargs():
    with pytest.raises(ConfigError, match=r"arch.kwargs sets \['num_classes'\]"):
        TimmArch(kwargs={"num_classes": 3})
    with pytest.raises(ConfigError, match="refused arch.kwargs"):
        timm_model(TimmArch(kwargs={"no_such_argument": 1}), 3, 2)


def test_without_timm_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r"^arch=timm needs the timm package, which is not installed: "
                                          r"pip install 'fastlab\[timm\]'$"):
        to_run_config(compose_cfg("arch=timm", small=False))


def test_create_model_arguments_pass_through_arch_kwargs():
    run = to_run_config(compose_cfg("arch=timm", "arch.model=test_vit", "+arch.kwargs.img_size=32", small=False))
    assert run.arch.kwargs == {"img_size": 32}
    assert timm_model(run.arch, 3, 2).body.patch_embed.img_size == (32, 32)
