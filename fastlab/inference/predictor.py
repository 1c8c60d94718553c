"""``Predictor``: a saved model ready to predict, whatever its task."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fastlab.inference.base import (
    TaskInference,
    build_model,
    inference_for,
    resolve_device,
)
from fastlab.inference.files import read_model_file
from fastlab.models.meta import ModelMeta
from fastlab.portable.errors import InferenceError
from fastlab.portable.predictor import Predicting


class Predictor(Predicting):
    """A trained model with its task's reading, forward pass and decoding (``self.task``, a
    :class:`~fastlab.inference.base.TaskInference`); ``predict``, ``predict_many``, ``preprocess``,
    ``decode`` and ``info`` are :class:`~fastlab.portable.predictor.Predicting`'s, which an ONNX
    bundle's predictor shares.

    Parameters
    ----------
    model : nn.Module
        The trained model (switched to eval mode).
    meta : ModelMeta
        Its meta, of its task's meta type.
    device : str
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, device: str = "cpu", source: str = "model"):
        self.meta, self.source = meta, source
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.task: TaskInference = inference_for(meta.task, source)(meta, self.device)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Predictor:
        """From a run dir, a ``model.pt`` or a bundle made by ``fastlab-export``."""
        state, meta = read_model_file(path)
        return cls(build_model(meta, state, str(path)), meta, device, source=str(path))

    @classmethod
    def from_meta(cls, model: nn.Module, meta: ModelMeta | dict, device: str = "cpu") -> Predictor:
        """From a model in memory and its ``ModelMeta`` (``learn.meta``, what its ``model.pt`` would
        record), or that meta as plain data, checked here (``Learner.predict``)."""
        if not isinstance(meta, ModelMeta):
            meta = ModelMeta.from_dict(meta, "the learner", InferenceError)
        return cls(model, meta, device, source="the learner")

    # ------------------------------------------------------------------ steps
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Image models: uint8 ``(B, C, H, W)`` -> float32, exactly as training normalised."""
        return self.task.normalize(x)

    @torch.inference_mode()
    def forward(self, batch: Any) -> Sequence[Any]:
        """A batch (``self.task.collate`` of preprocessed inputs, e.g. uint8 ``(B, C, S, S)``) ->
        one row per input, on the CPU (class probabilities ``(B, n_out)`` for a classifier)."""
        return self.task.forward(self.model, batch)

    @torch.inference_mode()
    def forward_tta(self, batch: Any, aug: Any, n: int = 4, beta: float = 0.25, seed: int = 0) -> Sequence[Any]:
        """:meth:`forward` averaged over ``n`` passes augmented with ``aug`` (an ``AugConfig``) and
        mixed with the plain pass by ``beta``; deterministic for a given ``seed``."""
        return self.task.forward_tta(self.model, batch, aug, n, beta, seed)

    def tta_aug(self, n: Any = 4) -> Any:
        """The ``AugConfig`` the model was trained with (recorded in its meta's ``config``), checked
        for test-time augmentation with ``n`` passes; one-line ``InferenceError`` otherwise."""
        from fastlab.config import AugConfig, build
        from fastlab.errors import ConfigError

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InferenceError(f"--tta takes a positive number of augmented passes, got {n!r}: e.g. --tta 4")
        self.task.tta_kind()  # a task whose answers cannot be averaged refuses here, before any input is read
        values = (self.meta.config or {}).get("aug")
        try:
            aug = build(AugConfig, values, "aug") if isinstance(values, dict) else AugConfig()
        except ConfigError as e:
            raise InferenceError(f"'{self.source}' records an aug config this fastlab cannot read ({e}): "
                                 "retrain it, or drop --tta") from None
        if not aug.active:
            raise InferenceError(f"'{self.source}' was trained with aug={aug.name}, so there is no augmentation to "
                                 "test with: drop --tta, or retrain with e.g. aug=no_flip")
        return aug
