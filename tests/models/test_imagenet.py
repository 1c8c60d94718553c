"""arch.pretrained=imagenet for torchvision's ResNets, with the network blocked: the cached file
(a seeded stand-in under torchvision's own file name in TORCH_HOME) gives that network's body
exactly and ImageNet's statistics; a missing file stops at once with one line; a corrupt, a
pickled-code or another architecture's file is refused by name; arch.weights; 1-channel inputs;
a U-Net's ResNet encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastlab.config import to_run_config
from fastlab.errors import ConfigError
from fastlab.models import create_model
from fastlab.models.imagenet import adapt_first_conv, read_imagenet
from fastlab.models.resnet import ResnetArch
from fastlab.models.unet import Unet, UnetArch
from fastlab.run.prepare import prepare
from tests.conftest import compose_cfg
from tests.offline import (
    block_network,
    pets_folder,
    torch_home,
    torchvision_net,
    torchvision_weights,
    tv_file_name,
)

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
QUIET = ["trainer.plots=false", "trainer.progress=none"]


@pytest.fixture
def no_network(monkeypatch) -> list:
    """The network blocked; the connects attempted (none, if all is well)."""
    return block_network(monkeypatch)


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    return pets_folder(tmp_path_factory.mktemp("pets") / "images", per_breed=6)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty TORCH_HOME (and the working directory) in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def pets_run(pets, *extra):
    return to_run_config(compose_cfg("data=name_re", f"data.path={pets}", "data.size=32", "data.bs=4",
                                     "arch.pretrained=imagenet", *QUIET, *extra, small=False))


def tv_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ResNet up to layer4: ``(B, 3, H, W) -> (B, C, H/32, W/32)``."""
    return nn.Sequential(*list(net.children())[:-2])(x)


def test_cached_resnet34_gives_its_body_exactly_and_imagenet_stats(pets, home, no_network, tmp_path_factory):
    torch_home(home, {tv_file_name("resnet34"): torchvision_weights(tmp_path_factory, "resnet34")})
    prep = prepare(pets_run(pets, "arch=resnet34"))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    model = prep.model.eval()
    with torch.no_grad():
        assert torch.equal(model.body(x), tv_features(torchvision_net("resnet34"), x))
    assert prep.data.mean == pytest.approx(IMAGENET_MEAN) and prep.data.std == pytest.approx(IMAGENET_STD)
    assert prep.meta.mean == pytest.approx(IMAGENET_MEAN)  # model.pt records what it was trained on
    assert len(prep.learn.layer_groups) == 3
    report = prep.pretrained
    assert report.path.name == "resnet34-b627a593.pth" and len(report.loaded) > 100
    assert report.new and all(k.startswith("head.") for k in report.new)
    assert no_network == []


def test_missing_file_stops_at_once_with_one_line(pets, home, no_network, no_sleep):
    run = pets_run(pets, "arch=resnet34")
    with pytest.raises(ConfigError) as info:
        prepare(run)
    message = str(info.value)
    # "at once": nothing tried to connect and nothing waited (no retry, no back-off)
    assert no_network == [] and no_sleep == []
    assert "\n" not in message
    assert "resnet34-b627a593.pth" in message and str(home / "hub" / "checkpoints") in message
    assert "torchvision.models.resnet34(weights='IMAGENET1K_V1')" in message and "arch.weights=" in message


def test_corrupt_file_is_refused_by_name(pets, home, no_network):
    bad = torch_home(home, {}) / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    bad.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                  dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ConfigError, match="cannot read checkpoint .*resnet34-b627a593.pth.*truncated or not a torch") as info:
        prepare(pets_run(pets, "arch=resnet34"))
    assert "\n" not in str(info.value) and no_network == []


class Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('ran')",))


def test_file_holding_code_is_refused_unrun(pets, home, no_network):
    path = torch_home(home, {}) / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(ConfigError, match="refused"):
        prepare(pets_run(pets, "arch=resnet18"))
    assert not (home.parent / "PWNED").exists()


def test_another_architectures_weights_are_refused_by_name(pets, home, no_network, tmp_path_factory):
    # resnet18's weights under resnet34's file name: same keys for the first blocks, then not
    torch_home(home, {"resnet34-b627a593.pth": torchvision_weights(tmp_path_factory, "resnet18")})
    with pytest.raises(ConfigError) as info:
        prepare(pets_run(pets, "arch=resnet34"))
    message = str(info.value)
    assert "resnet34-b627a593.pth" in message and "does not fit torchvision's resnet34" in message
    assert "missing" in message and "\n" not in message


def test_arch_weights_replaces_the_cache(pets, home, no_network, tmp_path_factory):
    weights = torchvision_weights(tmp_path_factory, "resnet18")
    prep = prepare(pets_run(pets, "arch=resnet18", f"arch.weights={weights}"))
    assert prep.pretrained.path == weights
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(prep.model.eval().body(x), tv_features(torchvision_net("resnet18"), x))
    with pytest.raises(ConfigError, match="arch.weights='nope.pth' is not a file"):
        prepare(pets_run(pets, "arch=resnet18", "arch.weights=nope.pth"))
    with pytest.raises(ConfigError, match="add arch.pretrained=imagenet"):
        to_run_config(compose_cfg("arch=resnet18", f"arch.weights={weights}", small=False))


def test_one_channel_input_sums_the_colour_filters(home, no_network, tmp_path_factory):
    torch_home(home, {tv_file_name("resnet18"): torchvision_weights(tmp_path_factory, "resnet18")})
    cfg = ResnetArch(name="resnet18", pretrained="imagenet")
    model = create_model(cfg, 1, 10)
    read_imagenet(cfg).load_into(model)
    assert torch.equal(model.body[0].weight, torchvision_net("resnet18").conv1.weight.sum(dim=1, keepdim=True))


def test_adapt_first_conv_keeps_a_constant_images_activations():
    w = torch.randn(8, 3, 3, 3)
    for n_in in (1, 3, 6):
        adapted = adapt_first_conv(w, n_in)
        assert adapted.shape == (8, n_in, 3, 3)
        x = torch.full((1, n_in, 5, 5), 0.7)
        want = torch.nn.functional.conv2d(torch.full((1, 3, 5, 5), 0.7), w)
        assert torch.allclose(torch.nn.functional.conv2d(x, adapted), want, atol=1e-5)
    assert adapt_first_conv(w, 2).shape == (8, 2, 3, 3)


def test_unet_resnet_encoder_takes_the_imagenet_body(home, no_network, tmp_path_factory):
    torch_home(home, {tv_file_name("resnet18"): torchvision_weights(tmp_path_factory, "resnet18")})
    cfg = UnetArch(encoder="resnet18", pretrained="imagenet")
    model = Unet(cfg, 3, 4)
    report = read_imagenet(cfg).load_into(model)
    assert report.new and all(k.startswith("decoder.") for k in report.new)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval().body(x), tv_features(torchvision_net("resnet18"), x))
    with pytest.raises(ConfigError, match="arch.encoder=cnn has no ImageNet weights"):
        read_imagenet(UnetArch(encoder="cnn", pretrained="imagenet"))


def test_architectures_without_imagenet_weights_say_which_have_them():
    with pytest.raises(ConfigError, match=r"arch=cnn has no ImageNet weights: use arch= one of \['resnet18', 'resnet34', 'resnet50', 'timm'"):
        prepare(to_run_config(compose_cfg("arch.pretrained=imagenet")))


def test_imagenet_is_reserved_in_the_zoo():
    with pytest.raises(ConfigError, match="save_as=imagenet is reserved"):
        to_run_config(compose_cfg("+save_as=imagenet"))


def test_resnet50_has_fastais_split_and_head():
    model = create_model(ResnetArch(name="resnet50"), 3, 4)
    assert len(model.layer_groups()) == 3 and model.head[2].num_features == 2 * 2048
    with pytest.raises(ConfigError, match=r"arch.tv_weights='V3' is not one of torchvision's ResNet50_Weights: "
                                          r"use one of \['DEFAULT', 'IMAGENET1K_V1', 'IMAGENET1K_V2'\]"):
        ResnetArch(name="resnet50", pretrained="imagenet", tv_weights="V3").imagenet_weights()
