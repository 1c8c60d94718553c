"""Image bytes for the image tasks, as tensors: header checks, decoding as training decoded, channel
conversion. The work is :mod:`fastlab.portable.images`' (NumPy and Pillow, shared with the ONNX
runtime); here its arrays become tensors.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from fastlab.portable import images
from fastlab.portable.images import ACCEPTED_FORMATS, MAX_PIXELS, check_image_bytes, read_input

__all__ = ["ACCEPTED_FORMATS", "MAX_PIXELS", "ImageInput", "check_image_bytes", "decode_bytes", "read_input",
           "to_channels"]

ImageInput = str | os.PathLike | bytes | Image.Image | torch.Tensor


def to_channels(x: torch.Tensor, n_in: int) -> torch.Tensor:
    """RGB uint8 ``(3, H, W)`` -> ``(n_in, H, W)``: unchanged for 3, luma for 1 (Pillow's ``"L"``
    conversion, same integer rounding, so a grey image comes back exactly as it was)."""
    return x if n_in == 3 else torch.from_numpy(images.to_channels(np.asarray(x), n_in))


def decode_bytes(data: bytes, size: int, n_in: int, name: str = "image",
                 max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Encoded image bytes -> uint8 ``(n_in, size, size)``, resized as training resized (the one
    decode path: :func:`fastlab.portable.images.decode_bytes`)."""
    return torch.from_numpy(images.decode_bytes(data, size, n_in, name, max_pixels))
