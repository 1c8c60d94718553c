"""``arch.pretrained=imagenet``: an architecture's published ImageNet weights, never downloaded.

The architecture says where its library keeps them (its schema's ``imagenet_weights()``:
torchvision's ``torch.hub.get_dir()/checkpoints`` in ``resnet.py``, timm's Hugging Face hub cache
in ``timm_arch.py``) and how the file's tensors map onto its ``body.*``; this module holds what
they share. The file is found before anything else is built, and a missing one stops the run at
once with one line naming the file, where it goes and the command that fetches it on a machine
with network: a run never waits on a network that is not there. ``arch.weights=PATH`` replaces
the cache. Files are read as safetensors or with ``torch.load(weights_only=True)``, so a file
holding code is refused unrun, and a file of another architecture is refused by name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastlab import registry
from fastlab.config import IMAGENET, ArchConfig, check
from fastlab.errors import ConfigError
from fastlab.models.zoo import LoadReport, load_plain

log = logging.getLogger("fastlab")

WEIGHTS_FIX = "arch.weights=<a state-dict file of these weights>"


def check_weights(pretrained: str | None, weights: str | None) -> None:
    """``arch.weights`` is the file of ``arch.pretrained=imagenet``'s weights: alone it means nothing."""
    check(weights is None or pretrained == IMAGENET,
          f"arch.weights={weights!r} gives the file of the ImageNet weights, but arch.pretrained={pretrained!r}: "
          f"add arch.pretrained={IMAGENET}, or drop arch.weights")


def weights_file(weights: str | None, cached: Path | None, missing: str) -> Path:
    """``arch.weights`` when given, else the library's cached file; ``missing`` is the one line
    raised when there is neither (nothing is downloaded)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"arch.weights='{weights}' is not a file: give an existing state-dict file "
                              "(.pth, .bin or .safetensors), or drop arch.weights to use the cache")
        return path
    if cached is None or not cached.is_file():
        raise ConfigError(missing)
    return cached


def adapt_first_conv(weight: torch.Tensor, n_in: int) -> torch.Tensor:
    """ImageNet's first-conv filters ``(C_out, 3, k, k)`` for ``n_in`` input channels, as fastai
    and timm adapt them: summed over colour for one channel; otherwise the colour filters repeated
    and scaled by ``3 / n_in``, so a channel-constant image gives the activations it gave before.
    Returns ``(C_out, n_in, k, k)``."""
    c = weight.shape[1]
    if n_in == c:
        return weight
    if n_in == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight.repeat(1, math.ceil(n_in / c), 1, 1)[:, :n_in] * (c / n_in)


@dataclass(frozen=True)
class ImagenetWeights:
    """Where an architecture's ImageNet weights are and how they enter its model.

    ``to_model(tensors, model)`` renames the file's tensors to the model's keys (``body.*``),
    leaving out the ImageNet classifier: the head belongs to the new task. ``first_conv`` are the
    model keys of the first convolutions' weights, adapted to the data's channels.
    """

    what: str  # e.g. "torchvision's resnet34 weights (ResNet34_Weights.IMAGENET1K_V1)"
    file: Path
    mean: tuple[float, ...]
    std: tuple[float, ...]
    to_model: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
    first_conv: tuple[str, ...] = ()
    input_size: tuple[int, ...] | None = None  # (C, H, W) the weights were trained at

    @property
    def meta(self) -> dict:
        """What the image tasks normalise with (``tasks.images.use_pretrained_stats``): the
        pretrained body's statistics in place of the data's own."""
        return {"pretrained": IMAGENET, "weights": self.what, "mean": list(self.mean), "std": list(self.std),
                "input_size": list(self.input_size) if self.input_size else None}


def imagenet_weights(arch: ArchConfig) -> ImagenetWeights:
    """The ImageNet weights of ``arch`` (its schema's ``imagenet_weights()``), found in the cache
    or ``arch.weights``; one ``ConfigError`` when the architecture has none or the file is missing."""
    find = getattr(arch, "imagenet_weights", None)
    if find is None:
        have = sorted(registry.options("arch", lambda e: hasattr(e.schema, "imagenet_weights")))
        raise ConfigError(f"arch={arch.name} has no ImageNet weights: use arch= one of {have} with "
                          f"arch.pretrained={IMAGENET}, or a zoo name")
    return find()


def read_tensors(weights: ImagenetWeights) -> dict[str, torch.Tensor]:
    """The file's state dict, read without running anything it holds: safetensors, or
    ``torch.load(weights_only=True)`` (through the zoo's one reader). A checkpoint that wraps its
    weights in ``state_dict`` is unwrapped; anything but tensors by name is refused."""
    path, what = weights.file, f"{weights.what} (or fetch them again)"
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"'{path}' is a safetensors file and safetensors is not installed: "
                              "pip install safetensors") from None
        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:  # a bad header, a truncated file, ...
            raise ConfigError(f"cannot read weights file '{path}' ({type(e).__name__}): it is truncated or not "
                              f"a safetensors file; use {what}") from None
    else:
        state = load_plain(path, ConfigError, what)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in state.items())):
        raise ConfigError(f"weights file '{path}' holds no state dict (tensors by name): use {what}")
    return state


@dataclass
class ImagenetBody:
    """ImageNet weights read and ready to load: what ``prepare`` holds between finding the file
    (before the data is built) and loading it (once the model is)."""

    weights: ImagenetWeights
    tensors: dict[str, torch.Tensor]

    @property
    def meta(self) -> dict:
        return self.weights.meta

    def load_into(self, model: nn.Module) -> LoadReport:
        """Copy the weights into ``model``'s body; the head stays new. A file that does not
        give every body tensor in its shape (another architecture's weights) is refused by name."""
        w, path = self.weights, self.weights.file
        try:
            source = w.to_model(dict(self.tensors), model)
        except Exception as e:  # a library's checkpoint filter meeting foreign tensors
            raise ConfigError(f"weights file '{path}' does not fit {w.what} ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}): "
                              f"give the file of {w.what}") from None
        target = model.state_dict()
        for key in w.first_conv:
            if key in source and key in target and source[key].shape[1] != target[key].shape[1]:
                source[key] = adapt_first_conv(source[key], target[key].shape[1])
        body = [k for k in target if k.startswith("body.")]
        # BatchNorm fills in a missing step counter itself; torchvision's older files have none.
        missing = [k for k in body if k not in source and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in source if k not in target]
        wrong = [f"{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}" for k in source
                 if k in target and source[k].shape != target[k].shape]
        if missing or unexpected or wrong:
            detail = [f"{len(missing)} missing, e.g. {missing[0]}"] if missing else []
            detail += [f"{len(unexpected)} unexpected, e.g. {unexpected[0]}"] if unexpected else []
            detail = "; ".join(detail + wrong[:2])
            raise ConfigError(f"weights file '{path}' does not fit {w.what} ({detail}): it holds another "
                              f"architecture's weights; give the file of {w.what}")
        model.load_state_dict({k: v.to(target[k].dtype) for k, v in source.items()}, strict=False)
        report = LoadReport(path, [k for k in body if k in source], [k for k in target if not k.startswith("body.")])
        log.info("ImageNet weights (%s, trained at %s): %s", w.what, w.input_size, report.summary())
        return report


def read_imagenet(arch: ArchConfig) -> ImagenetBody:
    """Find and read ``arch``'s ImageNet weights (every error here, before any data is built)."""
    weights = imagenet_weights(arch)
    return ImagenetBody(weights, read_tensors(weights))
