"""Image bytes for the image tasks: header checks, decoding as training decoded, channel conversion.

Every input (a file, bytes, a PIL image) goes through one decode path, :func:`decode_bytes`,
which hands the bytes to training's own :func:`fastlab.data.images.decode.decode_image`, so a served image
is resized exactly as the training images were.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from PIL import Image

from fastlab.data.images.decode import decode_image
from fastlab.errors import DataError
from fastlab.inference.errors import (
    ImageInputError,
    ImageTooLarge,
    InferenceError,
    UnsupportedImage,
)

# Pillow's names for the formats served and predicted (decode_image's extensions, as formats).
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_FORMATS = "a PNG, JPEG, GIF, BMP, WEBP or TIFF image"
MAX_PIXELS = 40_000_000  # a 40 Mpx photo decodes to 120 MB of RGB: refuse bigger before decoding

ImageInput = str | os.PathLike | bytes | Image.Image | torch.Tensor


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
