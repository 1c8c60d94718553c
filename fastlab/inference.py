"""Use a trained model: load a run dir or an exported bundle, preprocess as training did, predict.

Two kinds of saved model are read, neither by unpickling code:

- a run dir's ``model.pt`` (``torch.load(weights_only=True)``: ``{"state_dict", "meta"}``);
- a bundle written by ``fastlab-export``: ``model.safetensors`` (weights) and ``meta.json``
  (``{"format": "fastlab-bundle", "version": 1, "weights": ..., "weights_sha256": ..., "meta": {...}}``).

Every input (a file, bytes, a PIL image) goes through one decode path, :func:`decode_bytes`,
which hands the bytes to training's own :func:`fastlab.data.images.decode_image`, so a served image
is resized exactly as the training images were. This module needs neither starlette nor uvicorn.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from fastlab.config import SCHEMAS
from fastlab.data.images import decode_image
from fastlab.errors import DataError, FastlabError
from fastlab.models import create_model
from fastlab.models.core import SigmoidRange
from fastlab.models.zoo import read_checkpoint

BUNDLE_FORMAT, BUNDLE_VERSION = "fastlab-bundle", 1
BUNDLE_META, BUNDLE_WEIGHTS = "meta.json", "model.safetensors"
CHECKPOINT = "model.pt"
# Pillow's names for the formats served and predicted (decode_image's extensions, as formats).
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_FORMATS = "a PNG, JPEG, GIF, BMP, WEBP or TIFF image"
MAX_PIXELS = 40_000_000  # a 40 Mpx photo decodes to 120 MB of RGB: refuse bigger before decoding


class InferenceError(FastlabError):
    """A saved model that cannot be loaded, or an argument that cannot be used."""


class ImageInputError(InferenceError):
    """An input image that cannot be predicted (corrupt, truncated): a 400 from the server."""


class UnsupportedImage(ImageInputError):
    """Not an image, or a format outside :data:`ACCEPTED_FORMATS`: a 415 from the server."""


class ImageTooLarge(ImageInputError):
    """More pixels than the limit: a 413 from the server."""


# ------------------------------------------------------------------------------------ metadata


@dataclass(frozen=True)
class ModelMeta:
    """What inference needs to know about a model: ``model.pt``'s ``meta`` as a dataclass."""

    arch: str
    arch_config: dict
    task: str  # "classify" | "regress"
    classes: list[str] | None
    n_in: int  # input channels: 1 for digits, 3 for image files
    n_out: int
    size: int  # images are resized to (size, size)
    mean: list[float]  # per channel, of images scaled to [0, 1]
    std: list[float]
    config: dict | None = None  # the resolved training config, for provenance only
    y_range: list[float] | None = None  # a regression model's outputs squashed into [lo, hi]

    @classmethod
    def from_dict(cls, d: Any, source: str) -> ModelMeta:
        """Check ``d`` (a checkpoint's or bundle's meta) and convert it; ``source`` names it in errors."""
        if not isinstance(d, dict):
            raise InferenceError(f"'{source}' has no model metadata: it was not written by fastlab-train or fastlab-export")
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise InferenceError(f"'{source}' lacks metadata {missing}: retrain or re-export it with this fastlab")
        meta = cls(**{f.name: d.get(f.name) for f in fields(cls)})
        if meta.arch not in SCHEMAS["arch"]:
            raise InferenceError(f"'{source}' is a {meta.arch!r} model, which this fastlab does not know: "
                                 f"use a model of {sorted(SCHEMAS['arch'])}")
        if meta.task not in ("classify", "regress"):
            raise InferenceError(f"'{source}' has task {meta.task!r}: only classify and regress models can predict")
        if meta.task == "classify" and (not meta.classes or len(meta.classes) != meta.n_out):
            raise InferenceError(f"'{source}' has {meta.n_out} outputs but classes {meta.classes}: the file is inconsistent")
        y = meta.y_range
        if y is not None and not (isinstance(y, list | tuple) and len(y) == 2 and all(isinstance(v, int | float) for v in y)):
            raise InferenceError(f"'{source}' has y_range {y!r}, not [lo, hi]: the file is inconsistent")
        if len(meta.mean) != meta.n_in or len(meta.std) != meta.n_in:
            raise InferenceError(f"'{source}' has {meta.n_in} channel(s) but mean/std {meta.mean}/{meta.std}: "
                                 "the file is inconsistent")
        return meta

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------- loading


def _load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    ckpt = read_checkpoint(path, InferenceError)
    return ckpt["state_dict"], ModelMeta.from_dict(ckpt["meta"], str(path))


def _load_bundle(root: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    meta_path = root / BUNDLE_META
    try:
        doc = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InferenceError(f"cannot read bundle metadata '{meta_path}' ({type(e).__name__}): "
                             "re-export the run with fastlab-export") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise InferenceError(f"'{meta_path}' is not a fastlab bundle: make one with fastlab-export RUN_DIR OUT")
    if doc.get("version") != BUNDLE_VERSION:
        raise InferenceError(f"bundle '{root}' has version {doc.get('version')}, this fastlab reads "
                             f"{BUNDLE_VERSION}: re-export the run with this fastlab")
    weights = root / str(doc.get("weights", BUNDLE_WEIGHTS))
    try:
        blob = weights.read_bytes()
    except OSError as e:
        raise InferenceError(f"cannot read bundle weights '{weights}' ({type(e).__name__}): "
                             "re-export the run with fastlab-export") from None
    if doc.get("weights_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
        raise InferenceError(f"bundle weights '{weights}' do not match '{meta_path}' (sha256 differs): "
                             "re-export the run with fastlab-export")
    try:
        from safetensors.torch import load as load_safetensors
    except ImportError:
        raise InferenceError("reading a bundle needs safetensors: pip install 'fastlab[serve]'") from None
    try:
        state = load_safetensors(blob)
    except Exception as e:  # SafetensorError: a header or length that does not parse
        raise InferenceError(f"cannot read bundle weights '{weights}' ({type(e).__name__}: {e}): "
                             "re-export the run with fastlab-export") from None
    return state, ModelMeta.from_dict(doc.get("meta"), str(meta_path))


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Weights and metadata of a run dir, a ``model.pt``, or a bundle (its folder or ``meta.json``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InferenceError(f"'{path}' does not exist: pass a run dir (with model.pt) or a bundle made by fastlab-export")
    if p.is_dir():
        if (p / BUNDLE_META).is_file():
            return _load_bundle(p)
        if (p / CHECKPOINT).is_file():
            return _load_checkpoint(p / CHECKPOINT)
        raise InferenceError(f"'{path}' holds neither {CHECKPOINT} nor {BUNDLE_META}: pass a run dir trained with "
                             "trainer.save_model=true, or a bundle made by fastlab-export")
    if p.name == BUNDLE_META:
        return _load_bundle(p.parent)
    return _load_checkpoint(p)


def build_model(meta: ModelMeta, state_dict: dict[str, torch.Tensor], source: str = "the model") -> nn.Module:
    """Rebuild the architecture from ``meta``, load ``state_dict`` and switch to eval mode."""
    try:
        arch_cfg = SCHEMAS["arch"][meta.arch](**meta.arch_config)
    except TypeError as e:
        raise InferenceError(f"arch_config of '{source}' does not fit arch {meta.arch} ({e}): "
                             "retrain or re-export it with this fastlab") from None
    model = create_model(arch_cfg, meta.n_in, meta.n_out)
    if meta.y_range is not None:  # no weights of its own: appended as training appended it
        model.head.append(SigmoidRange(*meta.y_range))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        # PyTorch's message lists every missing/unexpected key and shape mismatch: keep its head.
        detail = " ".join(str(e).split())[:300]
        raise InferenceError(f"weights of '{source}' do not fit arch {meta.arch} with {meta.arch_config} "
                             f"({detail}): the file is inconsistent, retrain or re-export it") from None
    return model.eval()


# -------------------------------------------------------------------------------------- images


def check_image_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> str:
    """Read only the header of ``data``: its Pillow format if accepted, else a clear error."""
    if not data:
        raise UnsupportedImage(f"'{name}' is empty: give {_FORMATS}")
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header, decodes no pixels
            fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"'{name}' has too many pixels: give an image under {max_pixels / 1e6:g} megapixels") from None
    except (OSError, ValueError, SyntaxError):  # UnidentifiedImageError is an OSError
        raise UnsupportedImage(f"'{name}' is not an image Pillow can read: give {_FORMATS}") from None
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"'{name}' is in {fmt} format, which is not accepted: give {_FORMATS}")
    if w * h > max_pixels:
        raise ImageTooLarge(f"'{name}' is {w}x{h} pixels: give an image under {max_pixels / 1e6:g} megapixels")
    return fmt


def to_channels(x: torch.Tensor, n_in: int) -> torch.Tensor:
    """RGB uint8 ``(3, H, W)`` -> ``(n_in, H, W)``: unchanged for 3, luma for 1 (Pillow's ``"L"``
    conversion, same integer rounding, so a grey image comes back exactly as it was)."""
    if n_in == 3:
        return x
    if n_in == 1:
        r, g, b = x.to(torch.int32).unbind(0)
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(0)
    raise InferenceError(f"the model takes {n_in} input channels: only 1 (grey) and 3 (RGB) models predict from images")


def decode_bytes(data: bytes, size: int, n_in: int, name: str = "image",
                 max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Encoded image bytes -> uint8 ``(n_in, size, size)``, resized as training resized.

    The one decode path: files are read and PIL images encoded (PNG, lossless) into bytes first.
    """
    check_image_bytes(data, name, max_pixels)
    try:
        rgb = decode_image(bytes(data), size, name)  # (3, size, size) uint8, as training decodes
    except DataError:
        raise ImageInputError(f"cannot decode '{name}': the file is truncated or corrupt; give a complete image") from None
    return to_channels(rgb, n_in)


ImageInput = str | os.PathLike | bytes | Image.Image | torch.Tensor


def read_input(item: ImageInput) -> tuple[bytes, str]:
    """Encoded bytes and a name for a file path, bytes or PIL image."""
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item), "image"
    if isinstance(item, Image.Image):
        buf = io.BytesIO()
        # PNG keeps every pixel; P/LA/... are converted the way load_image converts files.
        (item if item.mode in ("L", "RGB", "RGBA") else item.convert("RGB")).save(buf, format="PNG")
        return buf.getvalue(), "PIL image"
    if isinstance(item, str | os.PathLike):
        path = Path(item).expanduser()
        if path.is_dir():
            raise ImageInputError(f"'{item}' is a folder: give image files (e.g. '{item}'/*.png)")
        if not path.is_file():
            raise ImageInputError(f"image '{item}' does not exist: check the file name")
        try:
            return path.read_bytes(), str(item)
        except OSError as e:
            raise ImageInputError(f"cannot read image '{item}' ({e.strerror}): check its permissions") from None
    raise InferenceError(f"cannot predict from a {type(item).__name__}: pass a file path, bytes, a PIL image "
                         "or a uint8 tensor (C, size, size)")


# ----------------------------------------------------------------------------------- predictor


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"device {name} asked for but CUDA is not available here: use cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InferenceError(f"device {name!r} is not known: use cpu, cuda, cuda:N or auto") from None


class Predictor:
    """A trained model ready to predict: preprocessing, forward pass and decoding in one object.

    Parameters
    ----------
    model : nn.Module
        Takes normalised float ``(B, n_in, size, size)``, returns ``(B, n_out)``.
    meta : ModelMeta
    device : str
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, device: str = "cpu", source: str = "model"):
        self.meta, self.source = meta, source
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.mean = torch.tensor(meta.mean, device=self.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
        self.std = torch.tensor(meta.std, device=self.device).view(1, -1, 1, 1)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Predictor:
        """From a run dir, a ``model.pt`` or a bundle made by ``fastlab-export``."""
        state, meta = read_model_file(path)
        return cls(build_model(meta, state, str(path)), meta, device, source=str(path))

    # ------------------------------------------------------------------ steps
    def preprocess(self, item: ImageInput, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
        """Any input -> uint8 ``(n_in, size, size)``, as training decoded its images. A uint8
        tensor of that shape is taken as already preprocessed."""
        m = self.meta
        if isinstance(item, torch.Tensor):
            if item.dtype != torch.uint8 or tuple(item.shape) != (m.n_in, m.size, m.size):
                raise InferenceError(f"a tensor input must be uint8 ({m.n_in}, {m.size}, {m.size}), got "
                                     f"{item.dtype} {tuple(item.shape)}: pass an image file instead")
            return item.cpu()
        data, name = read_input(item)
        return decode_bytes(data, m.size, m.n_in, name, max_pixels)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> float32, exactly as ``TensorLoader.normalize`` in training."""
        return (x.to(self.device).float().div_(255.0) - self.mean) / self.std

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, size, size)`` -> ``(B, n_out)`` on the CPU: class probabilities for
        classify (softmax), the predicted value for regress."""
        out = self.model(self.normalize(x)).float()
        return (out.softmax(dim=1) if self.meta.task == "classify" else out).cpu()

    def decode(self, out: torch.Tensor, top_k: int = 3) -> dict:
        """One row of :meth:`forward` ``(n_out,)`` -> ``{"label", "top": [{"label", "prob"}]}``
        (classify, the ``top_k`` most probable first) or ``{"label", "value", "top": []}`` (regress:
        ``value`` is a float for one output, a list of ``n_out`` floats for several, e.g. a
        point's ``[x, y]`` in [-1, 1])."""
        if self.meta.task == "regress":
            values = [float(v) for v in out.view(-1)]
            value = values[0] if len(values) == 1 else values
            return {"label": ", ".join(f"{v:.4g}" for v in values), "value": value, "top": []}
        probs, idx = out.topk(min(check_top_k(top_k), self.meta.n_out))
        classes = self.meta.classes
        top = [{"label": classes[int(i)], "prob": float(p)} for p, i in zip(probs, idx)]
        return {"label": top[0]["label"], "top": top}

    # ------------------------------------------------------------------ all at once
    def predict(self, item: ImageInput, top_k: int = 3) -> dict:
        """Label and top-k probabilities of one image (path, bytes, PIL image or uint8 tensor)."""
        return self.predict_many([item], top_k)[0]

    def predict_many(self, items: Sequence[ImageInput], top_k: int = 3, bs: int = 64) -> list[dict]:
        """:meth:`predict` for many images, forwarded in batches of ``bs``."""
        check_top_k(top_k)
        x = [self.preprocess(item) for item in items]
        out = []
        for i in range(0, len(x), bs):
            out.extend(self.forward(torch.stack(x[i:i + bs])))  # (B, n_out) -> B rows
        return [self.decode(row, top_k) for row in out]

    def info(self) -> dict:
        """What a client may want to know: arch, task, classes, input size and channels (not the
        model's path: a server should not tell its file layout)."""
        m = self.meta
        return {"arch": m.arch, "task": m.task, "classes": m.classes, "n_in": m.n_in, "size": m.size}


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InferenceError(f"top_k must be a positive integer, got {top_k!r}: e.g. top_k=3")
    return top_k
