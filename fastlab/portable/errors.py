"""What can go wrong when a saved model predicts, as exception kinds the CLIs and the server map
to one line (exit 2) or a status code (4xx). They live here, below ``fastlab.inference`` (which
exports them too), so the PyTorch side and the ONNX runtime raise the same kinds."""

from __future__ import annotations

from fastlab.errors import FastlabError


class InferenceError(FastlabError):
    """A saved model that cannot be loaded, or an argument that cannot be used."""


class InputError(InferenceError):
    """An input the model cannot predict (empty text, a table without a column, ...): a 400."""


class ImageInputError(InputError):
    """An input image that cannot be predicted (corrupt, truncated): a 400 from the server."""


class UnsupportedImage(ImageInputError):
    """Not an image, or a format outside ``ACCEPTED_FORMATS``: a 415 from the server."""


class ImageTooLarge(ImageInputError):
    """More pixels than the limit: a 413 from the server."""


def http_status(e: InputError) -> int:
    """The status code a server answers an input error with."""
    return 413 if isinstance(e, ImageTooLarge) else 415 if isinstance(e, UnsupportedImage) else 400


def clean_name(name) -> str:
    """A client's file name, safe to quote in a one-line message."""
    name = " ".join(name.split())[:100] if isinstance(name, str) else ""
    return name or "upload"
