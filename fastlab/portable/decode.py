"""A model's outputs as JSON, with NumPy: the one decoding of classes, values, points and masks,
which the PyTorch predictor (``fastlab.inference``) and the ONNX runtime both use, so the two
answer the same JSON.

A :class:`Decoding` is what one row of an image model's outputs means: ``probs`` (class
probabilities), ``values`` (numbers, and points for a points model) or ``codes`` (a mask of code
indices). An ONNX bundle records its kind (``meta.json``'s ``onnx.output``); ``activate`` turns the
graph's raw outputs into the rows the PyTorch side's ``forward`` gives.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from fastlab.portable.errors import InferenceError


def check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InferenceError(f"top_k must be a positive integer, got {top_k!r}: e.g. top_k=3")
    return top_k


def finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values``, or one line when the model answered NaN or inf: no answer holds NaN as a
    probability or a value (the weights or the input overflowed)."""
    if not np.isfinite(values).all():
        raise InferenceError(f"the model answered non-finite {what} (NaN or inf): its weights or "
                             "this input overflow; check the input, or retrain the model")
    return values


def decode_probs(probs: Any, labels: Sequence[str], top_k: int) -> dict:
    """Probabilities ``(c,)`` (an array or a CPU tensor) -> ``{"label", "top": [{"label", "prob"}]}``,
    the ``top_k`` most probable first (ties: the lower index first)."""
    p = finite(np.asarray(probs, dtype=float).reshape(-1), "probabilities")
    idx = np.argsort(-p, kind="stable")[: min(check_top_k(top_k), len(p))]
    top = [{"label": labels[int(i)], "prob": float(p[i])} for i in idx]
    return {"label": top[0]["label"], "top": top}


def decode_values(out: Any) -> dict:
    """Regression outputs ``(k,)`` -> ``{"label", "value", "top": []}``: ``value`` a float for one
    output, a list of ``k`` floats for several."""
    values = [float(v) for v in finite(np.asarray(out, dtype=float).reshape(-1), "values")]
    return {"label": ", ".join(f"{v:.4g}" for v in values), "value": values[0] if len(values) == 1 else values,
            "top": []}


def palette(n: int) -> list[int]:
    """A flat RGB palette of 256 entries, the first ``n`` distinct (matplotlib's tab10/tab20, as
    in show_results), so the PNG is readable by eye and its values stay the code indices."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "gist_ncar"].resampled(max(n, 1))
    rgb = [round(255 * c) for i in range(n) for c in cmap(i)[:3]]
    return rgb + [0] * (768 - len(rgb))


def mask_png(mask: Any, n_codes: int) -> bytes:
    """``(H, W)`` code indices -> a palette PNG whose pixel values are the indices."""
    im = Image.fromarray(np.asarray(mask).astype(np.uint8), mode="P")
    im.putpalette(palette(n_codes))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def decode_mask(mask: Any, codes: Sequence[str]) -> dict:
    """``(H, W)`` code indices -> ``{"label": codes present (most pixels first), "codes", "pixels":
    {code: n}, "size": [W, H], "mask_png": base64 PNG}``."""
    m = np.asarray(mask)
    counts = np.bincount(m.reshape(-1).astype(np.int64), minlength=len(codes)).tolist()
    present = sorted((i for i, n in enumerate(counts) if n), key=lambda i: (-counts[i], i))
    return {"label": ", ".join(codes[i] for i in present), "codes": list(codes),
            "pixels": {c: int(n) for c, n in zip(codes, counts)}, "size": [m.shape[1], m.shape[0]],
            "mask_png": base64.b64encode(mask_png(m, len(codes))).decode()}


class Decoding:
    """What one row of an image model's outputs means, built from the model's meta (an object
    with the meta's fields as attributes: a ``ModelMeta``, or the ONNX runtime's view of it)."""

    kind: ClassVar[str]

    def __init__(self, meta: Any):
        self.meta = meta

    def activate(self, scores: np.ndarray) -> np.ndarray:
        """The model's raw outputs ``(B, ...)`` -> one row per input, as ``decode`` reads them."""
        return scores.astype(np.float32, copy=False)

    def decode(self, row: Any, top_k: int = 3) -> dict:
        raise NotImplementedError

    def info(self) -> dict:
        """What ``/health`` and the page say beyond what the model reads."""
        return {}


class Probs(Decoding):
    """Class probabilities ``(c,)``: ``{"label", "top": [{"label", "prob"}, ...]}``."""

    kind = "probs"

    def activate(self, scores: np.ndarray) -> np.ndarray:
        z = scores.astype(np.float32) - scores.max(axis=1, keepdims=True)  # (B, c), softmax as PyTorch's
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def decode(self, row: Any, top_k: int = 3) -> dict:
        return decode_probs(row, self.meta.classes, top_k)


class Values(Decoding):
    """Numbers ``(k,)``: ``{"label", "value", "top": []}``, plus ``points`` (``[[x, y], ...]`` in
    [-1, 1], (-1, -1) the top-left corner) for a points model."""

    kind = "values"

    def decode(self, row: Any, top_k: int = 3) -> dict:
        out = decode_values(row)
        r = np.asarray(row).reshape(-1)
        if self.meta.points and len(r) % 2 == 0:
            out["points"] = r.reshape(-1, 2).tolist()
        return out

    def info(self) -> dict:
        return {"points": bool(self.meta.points)}


class Codes(Decoding):
    """A mask of code indices ``(H, W)`` uint8 (scores ``(c, H, W)`` before ``activate``)."""

    kind = "codes"

    def activate(self, scores: np.ndarray) -> np.ndarray:
        return scores.argmax(axis=1).astype(np.uint8)  # (B, c, H, W) -> (B, H, W)

    def decode(self, row: Any, top_k: int = 3) -> dict:
        return decode_mask(row, self.meta.codes)

    def info(self) -> dict:
        return {"codes": list(self.meta.codes)}


DECODINGS: dict[str, type[Decoding]] = {d.kind: d for d in (Probs, Values, Codes)}


def decoding_of(kind: Any, meta: Any, source: str) -> Decoding:
    """The decoding a bundle names (``onnx.output``); one line when this fastlab has none such."""
    if kind not in DECODINGS:
        raise InferenceError(f"'{source}' gives outputs of kind {kind!r}, which this fastlab cannot decode "
                             f"(it knows {sorted(DECODINGS)}): re-export the run with this fastlab")
    return DECODINGS[kind](meta)
