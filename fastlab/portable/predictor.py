"""Predicting with a model, whatever runs it: :class:`Predicting`, the interface ``fastlab-predict``
and ``fastlab-serve`` use (the PyTorch ``fastlab.inference.Predictor`` is one), and
:class:`OnnxPredictor`, an ONNX bundle run by onnxruntime without importing PyTorch.

An ONNX bundle's graph takes uint8 images ``(B, n_in, size, size)`` (normalised inside the graph,
as training normalised) and gives the model's raw outputs; its ``meta.json`` says what they mean
(``onnx.output``, a :mod:`fastlab.portable.decode` kind), so reading (:class:`ImageReading`) and
decoding are the PyTorch predictor's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from fastlab.portable.bundle import ONNX, bundle_root, read_bundle, weights_format
from fastlab.portable.decode import Decoding, check_top_k, decoding_of
from fastlab.portable.errors import InferenceError
from fastlab.portable.images import MAX_PIXELS, ImageReading

ONNX_EXTRA = "pip install 'fastlab[onnx]'"


class Predicting:
    """A saved model ready to predict: ``task`` reads its inputs and decodes its rows (a task's
    inference behaviour), ``forward`` runs a batch. Subclasses set ``meta``, ``source``, ``task``
    and implement :meth:`forward`."""

    meta: Any  # arch, task, classes and the task's fields, as attributes
    source: str
    task: Any

    def preprocess(self, item: Any, max_pixels: int = MAX_PIXELS) -> Any:
        """One input (an image path/bytes/PIL image, a text, a table row) -> what :meth:`forward`
        takes, as training read its data."""
        return self.task.read(item, max_pixels=max_pixels)

    def forward(self, batch: Any) -> Sequence[Any]:
        """A batch (``self.task.collate`` of preprocessed inputs) -> one row per input."""
        raise NotImplementedError

    def forward_tta(self, batch: Any, aug: Any, n: int = 4, beta: float = 0.25, seed: int = 0) -> Sequence[Any]:
        raise NotImplementedError

    def tta_aug(self, n: Any = 4) -> Any:
        """What test-time augmentation with ``n`` passes applies; one line when it cannot."""
        raise NotImplementedError

    def decode(self, row: Any, top_k: int = 3) -> dict:
        """One row of :meth:`forward` -> the JSON-able answer of the model's task."""
        return self.task.decode(row, top_k)

    def predict(self, item: Any, top_k: int = 3) -> dict:
        """The answer for one input."""
        return self.predict_many([item], top_k)[0]

    def predict_many(self, items: Sequence[Any], top_k: int = 3, bs: int = 64, tta: int | None = None,
                     beta: float = 0.25, seed: int = 0) -> list[dict]:
        """:meth:`predict` for many inputs: every one is read before any is forwarded, in batches of ``bs``.

        ``tta``: test-time augmentation with that many augmented passes of each input (the
        augmentation the model was trained with, drawn from ``seed``), mixed with the plain pass
        by ``beta`` (fast.ai's ``learn.tta``); ``None``: the plain pass only."""
        check_top_k(top_k)
        aug = self.tta_aug(tta) if tta is not None else None
        xs = [self.preprocess(item) for item in items]
        rows: list[Any] = []
        for i in range(0, len(xs), bs):
            batch = self.task.collate(xs[i:i + bs])
            rows.extend(self.forward(batch) if aug is None else self.forward_tta(batch, aug, tta, beta, seed))
        return [self.decode(row, top_k) for row in rows]

    def info(self) -> dict:
        """What a client may want to know: arch, task, classes and what the model reads (not the
        model's path: a server should not tell its file layout)."""
        m = self.meta
        return {"arch": m.arch, "task": m.task, "classes": m.classes, **self.task.info()}


# The meta fields the ONNX runtime reads (every image model records them: fastlab.tasks.images).
IMAGE_FIELDS = ("arch", "task", "classes", "n_in", "size")


class OnnxImageTask(ImageReading):
    """An image model's inference on onnxruntime: read as training read (:class:`ImageReading`),
    stacked into uint8 ``(B, n_in, size, size)``, run, decoded by the bundle's :class:`Decoding`."""

    def __init__(self, meta: Any, decoding: Decoding, session: Any, input_name: str):
        self.meta, self.decoding, self.session, self.input_name = meta, decoding, session, input_name

    def collate(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(list(xs))  # (B, n_in, size, size) uint8

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.decoding.activate(self.session.run(None, {self.input_name: batch})[0])

    def decode(self, row: Any, top_k: int = 3) -> dict:
        return self.decoding.decode(row, top_k)

    def info(self) -> dict:
        return {**super().info(), **self.decoding.info()}


def onnxruntime() -> Any:
    """The onnxruntime module; one line naming the extra when it is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InferenceError(f"running an ONNX bundle needs onnxruntime: {ONNX_EXTRA}") from None
    return ort


def open_session(model: bytes, device: str = "cpu", threads: int | None = None) -> Any:
    """An onnxruntime session of the ONNX ``model`` on ``device`` (``cpu``, ``auto``, ``cuda``, ``cuda:N``)."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda") and not cuda:
        raise InferenceError(f"device {device} asked for but onnxruntime has no CUDA here: use cpu or auto "
                             "(or install onnxruntime-gpu)")
    if device not in ("cpu", "auto") and not device.startswith("cuda"):
        raise InferenceError(f"device {device!r} is not known: use cpu, cuda, cuda:N or auto")
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda") or (device == "auto" and cuda):
        index = int(device.partition(":")[2] or 0) if device.startswith("cuda") else 0
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
    try:
        return ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime's own error kinds (InvalidGraph, Fail, ...)
        raise InferenceError(f"onnxruntime cannot load the model ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]}): re-export the run with fastlab-export") from None


class OnnxPredictor(Predicting):
    """An ONNX bundle (``fastlab-export RUN OUT --format onnx``) ready to predict with onnxruntime."""

    def __init__(self, session: Any, meta: Any, decoding: Decoding, input_name: str, source: str = "model"):
        self.meta, self.source, self.session = meta, source, session
        self.task = OnnxImageTask(meta, decoding, session, input_name)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> OnnxPredictor:
        """From an ONNX bundle's folder or its ``meta.json``."""
        root = bundle_root(path)
        if root is None:
            raise InferenceError(f"'{path}' is not a bundle: make one with fastlab-export RUN_DIR OUT --format onnx")
        doc, blob = read_bundle(root)
        source = str(root / "meta.json")
        if weights_format(doc) != ONNX:
            raise InferenceError(f"'{path}' is a {weights_format(doc)} bundle, which runs with PyTorch: "
                                 "load it with fastlab.inference.Predictor")
        meta, spec = doc.get("meta"), doc.get("onnx")
        if not isinstance(meta, dict) or not isinstance(spec, dict):
            raise InferenceError(f"'{source}' has no model metadata: re-export the run with fastlab-export")
        missing = [k for k in IMAGE_FIELDS if k not in meta]
        if missing:
            raise InferenceError(f"'{source}' lacks metadata {missing}: re-export the run with this fastlab")
        view = SimpleNamespace(**meta)  # the meta's fields as attributes, as a ModelMeta has them
        decoding = decoding_of(spec.get("output"), view, source)
        return cls(open_session(blob, device, threads), view, decoding, str(spec.get("input", "x")), str(path))

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(B, n_in, size, size)`` -> one row per input (probabilities, values or codes)."""
        return self.task.forward(batch)

    def tta_aug(self, n: Any = 4) -> Any:
        raise InferenceError("--tta augments images with PyTorch, which an ONNX bundle runs without: predict "
                             "with the run dir or its default bundle (fastlab-export RUN OUT) to use --tta")
