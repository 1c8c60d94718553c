"""torchvision ResNets as fastlab bodies, built without weights; ``arch.pretrained=imagenet``
loads torchvision's ImageNet weights from its cache (``torch.hub.get_dir()/checkpoints``),
downloaded there on first use with torchvision's hash check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastlab.config import ArchConfig
from fastlab.errors import ConfigError
from fastlab.models.core import BodyHead, check_head, create_head
from fastlab.models.groups import parse_groups, split_points
from fastlab.models.imagenet import ImagenetWeights, check_weights, torch_hub_file, weights_file
from fastlab.registry import register

# Where each torchvision ResNet attribute sits in the body: (conv1, bn1, relu, maxpool,
# layer1..layer4). The fc layer is ImageNet's classifier and is left behind.
TV_BODY = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
# The body's stages for arch.groups, as the body indices they start at: the stem (conv1 to
# maxpool), layer1, layer2, layer3, layer4. timm's coarse groups of a ResNet are the same five.
STAGE_STARTS = (0, 4, 5, 6, 7)


@dataclass
class ResnetArch(ArchConfig):
    """torchvision's ResNet with fast.ai's head; ``arch.pretrained=imagenet`` takes its ImageNet
    weights ``tv_weights`` (a member of torchvision's weight enum, e.g. ``ResNet50_Weights``)
    from the cache (downloaded there on first use, unless ``arch.download=never``), or from
    ``arch.weights``."""

    name: str = "resnet18"
    head_hidden: int = 512
    dropout: float = 0.5
    tv_weights: str = "IMAGENET1K_V1"  # resnet50 also has IMAGENET1K_V2 (torchvision's newer recipe)
    weights: str | None = None  # a state-dict file of those weights (or its URL), in place of the cache
    groups: Any = "halves"  # layer groups of the body (fastlab.models.groups): halves | stages | n >= 2

    def __post_init__(self) -> None:
        check_head(self.head_hidden, self.dropout)
        check_weights(self.pretrained, self.weights, self.download)
        self.groups = parse_groups(self.groups)
        self.splits()  # an n above the stages + 1 is refused here, before any data is built

    def splits(self) -> tuple[int, ...]:
        """Body indices where a layer group starts; ``halves`` is fastai's split (stem to layer2,
        layer3 and layer4), since the third of five stages is layer3."""
        points = split_points(len(STAGE_STARTS), self.groups, f"{self.name} (stem, layer1..layer4)")
        return tuple(STAGE_STARTS[i] for i in points)

    def imagenet_weights(self) -> ImagenetWeights:
        """torchvision's weights ``tv_weights`` of this ResNet: the file name is the one
        ``torch.hub.load_state_dict_from_url`` caches the enum's url under, fetched from that url
        (or ``FASTLAB_WEIGHTS_ENDPOINT``'s mirror of it) when it is not there."""
        from torchvision import models as tvm

        enum = tvm.get_model_weights(self.name)
        member = enum.__members__.get(self.tv_weights)
        if member is None:
            raise ConfigError(f"arch.tv_weights={self.tv_weights!r} is not one of torchvision's {enum.__name__}: "
                              f"use one of {sorted(enum.__members__)}")
        what = f"torchvision's {self.name} weights ({enum.__name__}.{member.name})"
        fetch_cmd = f"python -c \"import torchvision; torchvision.models.{self.name}(weights='{member.name}')\""
        # torchvision's load_state_dict_from_url(check_hash=True): the name's hex is the SHA-256 prefix
        cached, fetch = torch_hub_file(member.url, fetch_cmd, check_hash=True)
        stats = member.transforms()  # torchvision's own preprocessing: ImageNet's mean and std
        return ImagenetWeights(what, weights_file(self.weights, self.download, cached, what, fetch), tuple(stats.mean),
                               tuple(stats.std), from_torchvision, first_conv=("body.0.weight",),
                               input_size=(3, stats.crop_size[0], stats.crop_size[-1]))


def from_torchvision(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict in the body's keys (``layer1.0.conv1.weight`` ->
    ``body.4.0.conv1.weight``), without ``fc``. Keys of no ResNet are kept, so the fit check names them."""
    out = {}
    for key, value in tensors.items():
        stage, _, rest = key.partition(".")
        if stage in TV_BODY:
            out[f"body.{TV_BODY[stage]}.{rest}"] = value
        elif stage != "fc":
            out[key] = value
    return out


@register("arch", "resnet18", ResnetArch, tags={"body"})
@register("arch", "resnet34", ResnetArch, tags={"body"})
@register("arch", "resnet50", ResnetArch, tags={"body"})
def resnet(cfg: ResnetArch, n_in: int, n_out: int) -> BodyHead:
    """Stem + layer1..layer4 as the body, fast.ai's head. Groups: the stages split as
    ``arch.groups`` says (default ``halves``, fastai's: stem to layer2, layer3 and layer4), head.
    ``n_in`` != 3 replaces the stem conv. Always built without weights: ``prepare`` loads
    ImageNet's when asked, so a saved model rebuilds without them."""
    # Imported here: torchvision.models pulls in torch._dynamo, over a second of start-up that
    # runs on other architectures do not need.
    from torchvision import models as tvm

    net = getattr(tvm, cfg.name)(weights=None)
    if n_in != 3:
        net.conv1 = nn.Conv2d(n_in, 64, kernel_size=7, stride=2, padding=3, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)
    n_features = net.fc.in_features
    return BodyHead(body, create_head(n_features, n_out, cfg.head_hidden, cfg.dropout), cfg.splits())
