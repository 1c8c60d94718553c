"""``arch.pretrained=imagenet``: an architecture's published ImageNet weights, downloaded on first use.

The architecture says where its library keeps them (its schema's ``imagenet_weights()``:
torchvision's ``torch.hub.get_dir()/checkpoints`` in ``resnet.py``, timm's Hugging Face hub cache
in ``timm_arch.py``), how to fetch them into that cache (``Fetch``) and how the file's tensors map
onto its ``body.*``; this module holds what they share. The file is found, or fetched, before
anything else is built. When it cannot be fetched (no network, ``HF_HUB_OFFLINE=1``,
``arch.download=never``) the run stops at once with one line naming the file, where it goes and
the command that fetches it on a machine with network. ``arch.weights`` replaces the cache: a
file, or an http(s)/file:// URL fetched once into torch.hub's checkpoints. torch.hub's files
come through ``fastlab.fetch`` (``FASTLAB_WEIGHTS_ENDPOINT`` points them at a mirror); the
Hugging Face hub's through ``huggingface_hub`` (``HF_ENDPOINT``). Files are read as safetensors or
with ``torch.load(weights_only=True)``, so a file holding code is refused unrun, and a file of
another architecture is refused by name.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from fastlab import registry
from fastlab.config import IMAGENET, ArchConfig, check, check_choice
from fastlab.errors import ConfigError
from fastlab.fetch import FetchError, download
from fastlab.models.zoo import LoadReport, load_plain

log = logging.getLogger("fastlab")

WEIGHTS_FIX = "arch.weights=<a state-dict file of these weights>"
DOWNLOADS = ("auto", "never")  # arch.download
# A base URL standing in for the origin (scheme and host) of the weights files torch.hub caches,
# their path kept: a mirror of download.pytorch.org, as HF_ENDPOINT is of the Hugging Face hub.
ENDPOINT_ENV = "FASTLAB_WEIGHTS_ENDPOINT"
URL_SCHEMES = ("http", "https", "file")


def check_weights(pretrained: str | None, weights: str | None, download: str = "auto") -> None:
    """``arch.weights`` is the file (or URL) of ``arch.pretrained=imagenet``'s weights: alone it
    means nothing; ``arch.download`` is ``auto`` or ``never``."""
    check_choice("arch.download", download, DOWNLOADS)
    check(weights is None or pretrained == IMAGENET,
          f"arch.weights={weights!r} gives the file of the ImageNet weights, but arch.pretrained={pretrained!r}: "
          f"add arch.pretrained={IMAGENET}, or drop arch.weights")


def checkpoints() -> Path:
    """torch.hub's folder of downloaded weights (``TORCH_HOME`` moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def mirrored(url: str) -> str:
    """``url`` from the mirror ``FASTLAB_WEIGHTS_ENDPOINT`` when it is set: its scheme and host
    replaced, its path kept (``https://download.pytorch.org/models/x.pth`` ->
    ``$FASTLAB_WEIGHTS_ENDPOINT/models/x.pth``)."""
    endpoint = os.environ.get(ENDPOINT_ENV, "").rstrip("/")
    return endpoint + urlparse(url).path if endpoint else url


@dataclass(frozen=True)
class Fetch:
    """How weights missing from the cache come into it: ``get()`` downloads them there and gives
    the file (raising ``fastlab.fetch.FetchError``); ``elsewhere`` says, for when it cannot, where
    the file goes and the command that fetches it on a machine with network."""

    get: Callable[[], Path]
    elsewhere: str


def torch_hub_file(url: str, fetch_cmd: str, check_hash: bool) -> tuple[Path, Fetch]:
    """The file torch.hub caches ``url`` as (``checkpoints()/<its file name>``), and how to fetch
    it there: from ``url`` (or its mirror), the SHA-256 prefix in the name checked when
    ``check_hash`` (torch.hub's rule, ``HASH_REGEX``: ``resnet34-b627a593.pth``)."""
    cached = checkpoints() / os.path.basename(urlparse(url).path)
    found = torch.hub.HASH_REGEX.search(cached.name) if check_hash else None
    prefix = found.group(1) if found else None
    elsewhere = (f"put {cached.name} in {cached.parent} (torch.hub.get_dir()/checkpoints; TORCH_HOME moves it), "
                 f"e.g. run {fetch_cmd} on a machine with network and copy that file here")
    return cached, Fetch(lambda: download(mirrored(url), cached, sha256_prefix=prefix), elsewhere)


def offline_reason(download_mode: str) -> str | None:
    """Why nothing may be downloaded, or None: ``arch.download=never``, or ``HF_HUB_OFFLINE``
    (the Hugging Face hub's switch, honoured for every library's weights)."""
    if download_mode == "never":
        return "arch.download=never"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE=1"
    return None


def given_weights(weights: str, download_mode: str) -> Path:
    """``arch.weights``: a state-dict file, or the URL of one, fetched once into torch.hub's
    checkpoints under its file name and read from there after."""
    if urlparse(weights).scheme not in URL_SCHEMES:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"arch.weights='{weights}' is not a file: give an existing state-dict file "
                              "(.pth, .bin or .safetensors) or its http(s) URL, or drop arch.weights to use the cache")
        return path
    cached = checkpoints() / os.path.basename(urlparse(weights).path)
    if cached.is_file():
        return cached
    if not cached.name:
        raise ConfigError(f"arch.weights='{weights}' names no file: give the URL of a .pth, .bin or .safetensors file")
    why = offline_reason(download_mode)
    if why is None:
        try:
            return download(weights, cached)
        except FetchError as e:
            why = e.why
    raise ConfigError(f"arch.weights='{weights}' is not in torch.hub's checkpoints and was not downloaded ({why}): "
                      f"fetch it on a machine with network and put it at {cached}, or give its path as arch.weights")


def weights_file(weights: str | None, download_mode: str, cached: Path | None, what: str, fetch: Fetch) -> Path:
    """``arch.weights`` when given, else the library's cached file, fetched into the cache when it
    is not there (``fetch``) unless ``arch.download=never`` or offline. When there is none, one
    line naming ``what``, where it goes and how to fetch it elsewhere."""
    if weights is not None:
        return given_weights(weights, download_mode)
    if cached is not None and cached.is_file():
        return cached
    why = offline_reason(download_mode)
    if why is None:
        try:
            return fetch.get()
        except FetchError as e:
            if not e.unreachable:  # reached, but the file did not come whole: say so, not "offline"
                raise ConfigError(f"arch.pretrained={IMAGENET} needs {what}, which were not in the cache and did "
                                  f"not download ({e.why}): run again, or {fetch.elsewhere}, or give "
                                  f"{WEIGHTS_FIX}") from None
            why = f"no network: {e.why}"
    raise ConfigError(f"arch.pretrained={IMAGENET} needs {what}, which are not in the cache and cannot be downloaded "
                      f"({why}): {fetch.elsewhere}, or give {WEIGHTS_FIX}")


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
    (fetched into it on first use) or ``arch.weights``; one ``ConfigError`` when the architecture
    has none or the file cannot be had."""
    check_choice("arch.download", arch.download, DOWNLOADS)  # any architecture's schema, a user's too
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
