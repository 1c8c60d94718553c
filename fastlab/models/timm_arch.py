"""timm's models as fastlab bodies: ``arch=timm arch.model=<any timm model name>``.

The network is built with ``timm.create_model`` (never with ``pretrained=True``: fastlab loads
the weights itself), and ``arch.pretrained=imagenet`` loads the weights its ``pretrained_cfg``
names from the Hugging Face hub cache (``HF_HUB_CACHE``, or ``HF_HOME``/hub), downloaded there on
first use through ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``), or ``arch.weights``. The head
is fast.ai's (``arch.head=fastai``) or timm's own classifier (``arch.head=timm``). Layer groups
follow the network's stages: timm's ``group_matcher(coarse=True)`` read by its
``group_parameters``, split as ``arch.groups`` says with those coarse groups as the stages (so
here the default is ``stages``: each coarse group its own). timm is optional: ``pip install 'fastlab[timm]'``.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fastlab.config import ArchConfig, check, check_choice
from fastlab.errors import ConfigError
from fastlab.fetch import FetchError, Progress, timeouts
from fastlab.models.core import check_head, create_head
from fastlab.models.groups import parse_groups, split_points
from fastlab.models.imagenet import (
    Fetch,
    ImagenetWeights,
    check_weights,
    torch_hub_file,
    weights_file,
)
from fastlab.registry import register

MISSING_TIMM = "arch=timm needs the timm package, which is not installed: pip install 'fastlab[timm]'"
# Set by fastlab from the data and the head; the rest of arch.kwargs goes to timm.create_model.
OWN_KWARGS = ("pretrained", "num_classes", "in_chans", "features_only")


def import_timm():
    """timm, or the one line saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(MISSING_TIMM) from None
    return timm


def list_hint(model: str) -> str:
    stem = model.split(".")[0].rstrip("0123456789_") or model
    return (f"list timm's names with python -c \"import timm; print(timm.list_models('*{stem}*'))\" "
            "(timm.list_models(pretrained=True) for those with ImageNet weights)")


@dataclass
class TimmArch(ArchConfig):
    """Any timm model (``arch.model``, with or without a pretrained tag: ``resnet18``,
    ``convnext_nano``, ``resnet50.a1_in1k``) as an image classifier body."""

    # timm's networks are not a stack of stages a U-Net can tap (fastlab.models.unet).
    unet_encoder: ClassVar[bool] = False

    name: str = "timm"
    model: str = "resnet18"
    head: str = "fastai"  # fastai: fast.ai's head (head_hidden, dropout); timm: the model's own classifier
    head_hidden: int = 512
    dropout: float = 0.5
    weights: str | None = None  # a state-dict file of the ImageNet weights (or its URL), in place of the hub cache
    # more timm.create_model arguments, e.g. +arch.kwargs.drop_path_rate=0.1, +arch.kwargs.img_size=32
    kwargs: dict[str, Any] = field(default_factory=dict)
    # layer groups over timm's coarse groups (fastlab.models.groups): stages (each its own, as timm
    # groups them), halves or n >= 2; the count of coarse groups is known once the model is built
    groups: Any = "stages"

    def __post_init__(self) -> None:
        check_choice("arch.head", self.head, ("fastai", "timm"))
        self.groups = parse_groups(self.groups)
        check_head(self.head_hidden, self.dropout)
        check_weights(self.pretrained, self.weights, self.download)
        check(isinstance(self.kwargs, dict), f"arch.kwargs must be a mapping of timm.create_model arguments, got "
                                             f"{self.kwargs!r}: e.g. +arch.kwargs.drop_path_rate=0.1")
        own = sorted(set(self.kwargs) & set(OWN_KWARGS))
        check(not own, f"arch.kwargs sets {own}, which fastlab sets itself (from the data, arch.head and "
                       f"arch.pretrained): drop them from arch.kwargs")
        timm = import_timm()
        if not timm.is_model(self.model):
            close = difflib.get_close_matches(self.model, timm.list_models(), n=3)
            near = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(f"arch.model={self.model!r} is not a timm model{near}: {list_hint(self.model)}")
        try:
            timm.models.get_pretrained_cfg(self.model)
        except RuntimeError:  # a known architecture with a tag it does not have
            arch = self.model.split(".")[0]
            raise ConfigError(f"arch.model={self.model!r}: timm has no weights tagged so; its tags are "
                              f"{[n.split('.', 1)[1] for n in timm.list_pretrained(arch + '.*')][:8]} "
                              f"(arch.model={arch} takes the default)") from None

    def imagenet_weights(self) -> ImagenetWeights:
        """The weights ``pretrained_cfg`` names, from the hub cache (safetensors first, as timm
        loads them) or ``torch.hub``'s checkpoints for a url-only model; downloaded there on first
        use, as timm would."""
        timm = import_timm()
        cfg = timm.models.get_pretrained_cfg(self.model)
        if cfg is None or not (cfg.hf_hub_id or cfg.url):
            raise ConfigError(f"timm has no ImageNet weights for arch.model={self.model!r}: {list_hint(self.model)}, "
                              f"or drop arch.pretrained")
        cfg = cfg.to_dict()
        tagged = ".".join(filter(None, (self.model.split(".")[0], cfg.get("tag"))))
        what = f"timm's {tagged} weights"
        fetch_cmd = f"python -c \"import timm; timm.create_model('{tagged}', pretrained=True)\""
        # custom_load: a foreign format (e.g. JAX's .npz) that timm converts with its own code; a hub
        # repo without it holds timm's own state dict, whatever custom_load says about the url.
        if cfg.get("custom_load") == "hf" or (cfg.get("custom_load") and not cfg.get("hf_hub_id")):
            raise ConfigError(f"{what} are a foreign file that timm reads with its own loader, which fastlab does "
                              f"not run: pick another tag of {self.model.split('.')[0]} (timm.list_pretrained)")
        if cfg.get("hf_hub_id"):
            hub_id, names = cfg["hf_hub_id"], hub_names(cfg.get("hf_hub_filename"))
            cached, folder = hub_file(hub_id, names)
            what = f"{what} (hub repo {hub_id})"
            fetch = Fetch(lambda: hub_download(hub_id, names),
                          f"on a machine with network run hf download {hub_id} (or {fetch_cmd}) and copy the folder "
                          f"it fills, {folder.name}, into {folder.parent} here (HF_HUB_CACHE or HF_HOME move the cache)")
        else:  # timm's load_state_dict_from_url checks no hash
            cached, fetch = torch_hub_file(cfg["url"], fetch_cmd, check_hash=False)
        convs = cfg.get("first_conv") or ()
        convs = (convs,) if isinstance(convs, str) else tuple(convs)
        return ImagenetWeights(what, weights_file(self.weights, self.download, cached, what, fetch), tuple(cfg["mean"]),
                               tuple(cfg["std"]), TimmWeights(self.model, cfg.get("classifier")),
                               first_conv=tuple(f"body.{c}.weight" for c in convs),
                               input_size=tuple(cfg["input_size"]))


def hub_names(filename: str | None) -> list[str]:
    """The files of a hub repo timm's ``load_state_dict_from_hf`` asks for, safetensors first."""
    if filename is None:
        return ["model.safetensors", "pytorch_model.bin"]
    safe = "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else (
        filename[: -len(".bin")] + ".safetensors" if filename.endswith(".bin") else None)
    return [n for n in (safe, filename) if n]


def hub_file(hub_id: str, names: list[str]) -> tuple[Path | None, Path]:
    """(the cached weights file or None, the repo's folder in the cache): the first of ``names``
    in the Hugging Face hub cache, looked up without a network."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    repo, _, revision = hub_id.partition("@")
    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
    for name in names:
        hit = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(hit, str):
            return Path(hit), folder
    return None, folder


def hub_download(hub_id: str, names: list[str]) -> Path:
    """Download the first of ``names`` the hub repo has into the Hugging Face cache with
    ``hf_hub_download`` (its lock, its ``.incomplete`` file renamed when whole, ``HF_ENDPOINT``,
    ``HF_HUB_DOWNLOAD_TIMEOUT``). Each file is asked for first with one HEAD within fastlab's
    connect timeout, so a machine without network is told so at once rather than after the
    hub's retries. Raises ``FetchError``."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError

    repo, _, revision = hub_id.partition("@")
    # read now, not at huggingface_hub's import: a mirror set after it (a notebook, a test) is honoured
    endpoint = os.environ.get("HF_ENDPOINT") or None
    connect, _ = timeouts()
    for name in names:
        url = hf_hub_url(repo, name, revision=revision or None, endpoint=endpoint)
        try:
            meta = get_hf_file_metadata(url, timeout=connect)
        except EntryNotFoundError:
            continue  # e.g. no safetensors: the .bin next
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "error"
            raise FetchError(f"HTTP {status} from {url}") from None
        except Exception as e:  # the transport's connect error or timeout: the hub is out of reach
            raise FetchError(f"cannot reach {url.split('/')[2]} ({type(e).__name__})", unreachable=True) from None
        progress = Progress(name, url, Path(constants.HF_HUB_CACHE), meta.size, 0, bar=False)  # the hub draws its bar
        try:
            path = Path(hf_hub_download(repo, name, revision=revision or None, endpoint=endpoint, etag_timeout=connect))
        except Exception as e:  # a stall, a download cut short (removed by the hub), an HTTP error
            progress.close(None)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            raise FetchError(f"{type(e).__name__} downloading {name} from {url}: {first}") from None
        progress.close(path.stat().st_size)
        return path
    raise FetchError(f"hub repo {repo} has none of {names}")


@dataclass(frozen=True)
class TimmWeights:
    """A timm checkpoint in the model's keys: the model module's ``checkpoint_filter_fn`` (what
    timm applies itself, e.g. resampling a ViT's position embeddings to the built size), the
    ImageNet classifier left out, ``body.`` in front."""

    model: str
    classifier: str | tuple[str, ...] | None

    def __call__(self, tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        timm = import_timm()
        module = sys.modules[timm.models.model_entrypoint(self.model).__module__]
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            tensors = filter_fn(tensors, model.body)
        heads = (self.classifier,) if isinstance(self.classifier, str) else tuple(self.classifier or ())
        return {f"body.{k}": v for k, v in tensors.items() if not any(k.startswith(h + ".") for h in heads)}


class TimmClassifier(nn.Module):
    """``(B, n_in, H, W) -> (B, n_out)``: a timm network as the body, fast.ai's head or timm's.

    ``body`` is the timm network without its classifier. With fast.ai's head it gives its
    feature map ``(B, C, h, w)`` (``forward_features``) and the head pools it, unless the network
    has none to pool (a ViT: no ``pool_size`` in its ``pretrained_cfg``), when the body pools
    itself to ``(B, C)`` (fastai's ``TimmBody`` decides the same way). With ``arch.head=timm`` the
    body keeps timm's pooling (and norm), and ``head`` is its classifier layer.
    """

    def __init__(self, net: nn.Module, cfg: TimmArch, n_out: int):
        super().__init__()
        if cfg.head == "timm":
            classifier = net.get_classifier()
            if not isinstance(classifier, nn.Linear):
                raise ConfigError(f"arch.head=timm takes a linear classifier, and {cfg.model}'s is a "
                                  f"{type(classifier).__name__}: use arch.head=fastai")
            net.reset_classifier(0)  # the body now ends in timm's pooled features (B, C)
            self.pooled, head = True, nn.Sequential(classifier)
        else:
            self.pooled = net.pretrained_cfg.get("pool_size") is None
            # a pooling body ends in its pre-logits features, which may be wider than its feature map
            n_features = (getattr(net, "head_hidden_size", None) or net.num_features) if self.pooled else net.num_features
            head = create_head(n_features, n_out, cfg.head_hidden, cfg.dropout, pool=not self.pooled)
        self.body, self.head = net, head
        self.group_spec, self.model_name = cfg.groups, cfg.model

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads: ``(B, C, h, w)``, or ``(B, C)`` from a body that pools."""
        return self.body(x) if self.pooled else self.body.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def layer_groups(self) -> list[nn.Module]:
        """The body's stage groups (stem, each stage, what follows the stages) split as
        ``arch.groups`` says, consecutive ones merged into one group; the head last."""
        coarse = stage_groups(self.body)
        points = split_points(len(coarse), self.group_spec, f"timm's {self.model_name} ({len(coarse)} coarse groups)")
        bounds = [0, *points, len(coarse)]
        return [*(coarse[a] if b - a == 1 else merge_groups(coarse[a:b]) for a, b in zip(bounds[:-1], bounds[1:])),
                self.head]


def merge_groups(groups: list[nn.Module]) -> nn.Module:
    """One view holding ``groups`` (views themselves) as its children, for one rate and one freeze."""
    merged = nn.Module()
    for i, group in enumerate(groups):
        merged.add_module(f"g{i}", group)
    return merged


def stage_groups(net: nn.Module) -> list[nn.Module]:
    """``net``'s parameters by timm's coarse groups, each as a module for freezing and rates.

    A group holds whole the leaf modules its parameters belong to (so freezing still sees a
    norm layer's type), and a parameter of a module with children (a ViT's ``cls_token``) alone.
    These modules only point at the network's own: they are views, not part of the model.
    """
    from timm.models import group_parameters

    matcher = getattr(net, "group_matcher", None)
    if matcher is None:
        return [net]
    try:
        by_group = group_parameters(net, matcher(coarse=True))
    except NotImplementedError:
        return [net]
    groups = []
    for _, names in sorted(by_group.items()):
        group, leaves = nn.Module(), {}
        for i, name in enumerate(names):
            owner_name, _, attr = name.rpartition(".")
            owner = net.get_submodule(owner_name)
            if next(owner.children(), None) is None:
                leaves.setdefault(owner_name, owner)
            else:
                group.register_parameter(f"p{i}", getattr(owner, attr))
        for i, leaf in enumerate(leaves.values()):
            group.add_module(f"m{i}", leaf)
        groups.append(group)
    return groups


@register("arch", "timm", TimmArch, tags={"body"})
def timm_model(cfg: TimmArch, n_in: int, n_out: int) -> TimmClassifier:
    """``timm.create_model(arch.model, num_classes, in_chans=n_in, **arch.kwargs)``, without
    weights (``prepare`` loads ImageNet's when asked), with the head ``arch.head``."""
    timm = import_timm()
    try:
        net = timm.create_model(cfg.model, pretrained=False, num_classes=n_out if cfg.head == "timm" else 0,
                                in_chans=n_in, **cfg.kwargs)
    except (TypeError, ValueError, AssertionError) as e:  # an argument this model does not take
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(f"timm.create_model({cfg.model!r}) refused arch.kwargs={cfg.kwargs} ({first}): "
                          "fix or drop arch.kwargs") from None
    model = TimmClassifier(net, cfg, n_out)
    model.layer_groups()  # an arch.groups above the coarse groups + 1 is refused now, before training
    return model
