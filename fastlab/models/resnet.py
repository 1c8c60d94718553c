"""torchvision ResNets as fastlab bodies (no downloaded weights: the model zoo provides them)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fastlab.config import ArchConfig
from fastlab.models.core import BodyHead, check_head, create_head
from fastlab.registry import register


@dataclass
class ResnetArch(ArchConfig):
    """torchvision's ResNet, built without downloaded weights."""

    name: str = "resnet18"
    head_hidden: int = 512
    dropout: float = 0.5

    def __post_init__(self) -> None:
        check_head(self.head_hidden, self.dropout)


@register("arch", "resnet18", ResnetArch, tags={"body"})
@register("arch", "resnet34", ResnetArch, tags={"body"})
def resnet(cfg: ResnetArch, n_in: int, n_out: int) -> BodyHead:
    """Stem + layer1..layer4 as the body, fast.ai's head. Groups (fastai's split): stem to
    layer2, layer3 and layer4, head. ``n_in`` != 3 replaces the stem conv."""
    # Imported here: torchvision.models pulls in torch._dynamo, over a second of start-up that
    # runs on other architectures do not need.
    from torchvision import models as tvm

    net = getattr(tvm, cfg.name)(weights=None)
    if n_in != 3:
        net.conv1 = nn.Conv2d(n_in, 64, kernel_size=7, stride=2, padding=3, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)
    n_features = net.fc.in_features
    return BodyHead(body, create_head(n_features, n_out, cfg.head_hidden, cfg.dropout), splits=(6,))
