"""Image bytes for the image tasks, with NumPy and Pillow only: header checks, decoding as training
decodes, channel conversion, and :class:`ImageReading`, how an image model reads its inputs (a file
of the CLI, an upload, a JSON body), which the PyTorch side (``fastlab.inference.image``) and the
ONNX runtime share.

:func:`decode_rgb` is Pillow's part of training's ``fastlab.data.images.decode.decode_image``
(draft, EXIF orientation, RGB, bilinear resize to a square), so a served image is resized
exactly as the training images were; ``tests/inference/test_onnx.py`` checks the two agree.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps

from fastlab.portable import errors

# Pillow's names for the formats served and predicted (decode_image's extensions, as formats).
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_FORMATS = "a PNG, JPEG, GIF, BMP, WEBP or TIFF image"
MAX_PIXELS = 40_000_000  # a 40 Mpx photo decodes to 120 MB of RGB: refuse bigger before decoding
IMAGE_JSON = '{"image": "<base64 of the image file>"}'


def check_image_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> str:
    """Read only the header of ``data``: its Pillow format if accepted, else a clear error."""
    if not data:
        raise errors.UnsupportedImage(f"'{name}' is empty: give {_FORMATS}")
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header, decodes no pixels
            fmt, (w, h) = im.format, im.size
    except Image.DecompressionBombError:
        raise errors.ImageTooLarge(f"'{name}' has too many pixels: give an image under {max_pixels / 1e6:g} megapixels") from None
    except (OSError, ValueError, SyntaxError):  # UnidentifiedImageError is an OSError
        raise errors.UnsupportedImage(f"'{name}' is not an image Pillow can read: give {_FORMATS}") from None
    if fmt not in ACCEPTED_FORMATS:
        raise errors.UnsupportedImage(f"'{name}' is in {fmt} format, which is not accepted: give {_FORMATS}")
    if w * h > max_pixels:
        raise errors.ImageTooLarge(f"'{name}' is {w}x{h} pixels: give an image under {max_pixels / 1e6:g} megapixels")
    return fmt


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: 16- and 32-bit greyscale scaled down (a plain convert would
    clip them to white), transparency composited over white (a convert would show whatever
    colour hides under transparent pixels), CMYK, palette and the rest by Pillow's convert."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray((a * (255.0 / top)).round().clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        return Image.fromarray(((a - lo) * (255.0 / max(hi - lo, 1e-12))).round().astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF Orientation tag says (phones store photos sideways and tag them),
    so a portrait photo is decoded as a viewer shows it; untagged images are returned as they are."""
    try:
        return ImageOps.exif_transpose(im) or im
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError):
        # A malformed EXIF block loses only the orientation, never an otherwise readable image.
        return im


def decode_rgb(source: Path | bytes, size: int) -> np.ndarray:
    """A file or encoded bytes -> uint8 ``(size, size, 3)`` RGB, the aspect ratio not kept. Pillow's
    errors (``OSError``, ``ValueError``, ``SyntaxError``, ``DecompressionBombError``) pass through
    for the caller to word."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source) as im:
        # JPEG can decode straight at a reduced scale: much faster for large photos.
        im.draft("RGB", (size, size))
        rgb = to_rgb(upright(im)).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(rgb)


def to_channels(x: np.ndarray, n_in: int) -> np.ndarray:
    """RGB uint8 ``(3, H, W)`` -> ``(n_in, H, W)``: unchanged for 3, luma for 1 (Pillow's ``"L"``
    conversion, same integer rounding, so a grey image comes back exactly as it was)."""
    if n_in == 3:
        return x
    if n_in == 1:
        r, g, b = x.astype(np.int32)
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[None]
    raise errors.InferenceError(f"the model takes {n_in} input channels: only 1 (grey) and 3 (RGB) models predict from images")


def decode_bytes(data: bytes, size: int, n_in: int, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> uint8 ``(n_in, size, size)``, resized as training resized.

    The one decode path: files are read and PIL images encoded (PNG, lossless) into bytes first.
    """
    check_image_bytes(data, name, max_pixels)
    try:
        rgb = decode_rgb(bytes(data), size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise errors.ImageInputError(f"cannot decode '{name}': the file is truncated or corrupt; give a complete image") from None
    return to_channels(np.ascontiguousarray(rgb.transpose(2, 0, 1)), n_in)  # (n_in, size, size)


def read_input(item: Any) -> tuple[bytes, str]:
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
            raise errors.ImageInputError(f"'{item}' is a folder: give image files (e.g. '{item}'/*.png)")
        if not path.is_file():
            raise errors.ImageInputError(f"image '{item}' does not exist: check the file name")
        try:
            return path.read_bytes(), str(item)
        except OSError as e:
            raise errors.ImageInputError(f"cannot read image '{item}' ({e.strerror}): check its permissions") from None
    raise errors.InferenceError(f"cannot predict from a {type(item).__name__}: pass a file path, bytes, a PIL image "
                         "or a uint8 array (C, size, size)")


class ImageReading:
    """How an image model reads its inputs, as training did: decode, resize to ``meta.size``, 1 or
    3 channels (``meta.n_in``). Each read image is handed to :meth:`as_input` (a NumPy array here,
    a tensor on the PyTorch side)."""

    input_kind: ClassVar[str] = "image"
    json_hint: ClassVar[str] = IMAGE_JSON
    meta: Any  # has n_in, size, task

    def as_input(self, x: np.ndarray) -> Any:
        """A read image, uint8 ``(n_in, size, size)``, as what the model's ``collate`` stacks."""
        return x

    def read(self, item: Any, max_pixels: int = MAX_PIXELS) -> Any:
        """A path, bytes or PIL image -> uint8 ``(n_in, size, size)``, as training decoded its
        images. A uint8 array of that shape is taken as already read."""
        m = self.meta
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.shape != (m.n_in, m.size, m.size):
                raise errors.InputError(f"an array input must be uint8 ({m.n_in}, {m.size}, {m.size}), got "
                                 f"{item.dtype} {item.shape}: pass an image file instead")
            return self.as_input(item)
        data, name = read_input(item)
        return self.as_input(decode_bytes(data, m.size, m.n_in, name, max_pixels))

    def items_from_file(self, path: str) -> list[tuple[dict, Any]]:
        return [({"file": path}, path)]  # read (and refused, if need be) by read()

    def items_from_text(self, text: str) -> list[tuple[dict, Any]]:
        raise errors.InputError(f"a {self.meta.task} model reads {self.input_kind} files, not --text: give files instead")

    def items_from_upload(self, data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> tuple[list, bool]:
        return [self.as_input(decode_bytes(data, self.meta.size, self.meta.n_in, name, max_pixels))], False

    def items_from_json(self, doc: Any, max_pixels: int = MAX_PIXELS) -> tuple[list, bool]:
        try:
            text = doc["image"]
            if not isinstance(text, str):
                raise TypeError
            # A data: URL ("data:image/png;base64,....") as a browser's FileReader gives it.
            data = base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
        except (KeyError, TypeError, IndexError, ValueError, binascii.Error):
            raise errors.InputError(f"the JSON body must be {IMAGE_JSON}: encode the file with base64") from None
        return self.items_from_upload(data, errors.clean_name(doc.get("name")), max_pixels=max_pixels)

    def info(self) -> dict:
        return {"input": "image", "n_in": self.meta.n_in, "size": self.meta.size}
