"""Inference of the image tasks that give one answer per image: ``classify`` and ``regress``
(one number, several, or points ``(x, y)`` in [-1, 1]). ``segment`` reuses the image reading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fastlab.data.augment import LABELS, POINTS
from fastlab.inference.base import CPU, TaskInference
from fastlab.inference.image_input import MAX_PIXELS
from fastlab.portable.decode import Decoding, Probs, Values
from fastlab.portable.errors import InferenceError, InputError
from fastlab.portable.images import ImageReading
from fastlab.tasks.images import ImageMeta


class ImageInference(ImageReading, TaskInference):
    """Reading images as training did (:class:`~fastlab.portable.images.ImageReading`: decode, resize
    to ``size``, 1 or 3 channels), normalising, and decoding a row by the task's
    :class:`~fastlab.portable.decode.Decoding` (``decoding_type``), which an ONNX bundle shares."""

    decoding_type: ClassVar[type[Decoding]]

    def __init__(self, meta: ImageMeta, device: torch.device = CPU):
        super().__init__(meta, device)
        self.mean = torch.tensor(meta.mean, device=device).view(1, -1, 1, 1)  # (1, C, 1, 1)
        self.std = torch.tensor(meta.std, device=device).view(1, -1, 1, 1)
        self.decoding = self.decoding_type(meta)

    def as_input(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x)

    def read(self, item: Any, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
        """A path, bytes or PIL image -> uint8 ``(n_in, size, size)``, as training decoded its
        images. A uint8 tensor of that shape is taken as already read."""
        m = self.meta
        if isinstance(item, torch.Tensor):
            if item.dtype != torch.uint8 or tuple(item.shape) != (m.n_in, m.size, m.size):
                raise InputError(f"a tensor input must be uint8 ({m.n_in}, {m.size}, {m.size}), got "
                                 f"{item.dtype} {tuple(item.shape)}: pass an image file instead")
            return item.cpu()
        return super().read(item, max_pixels)

    def decode(self, row: torch.Tensor, top_k: int = 3) -> dict:
        return self.decoding.decode(row, top_k)

    def info(self) -> dict:
        return {**super().info(), **self.decoding.info()}

    def onnx_module(self, model: nn.Module) -> tuple[nn.Module, str]:
        """What an ONNX bundle runs: uint8 images ``(B, C, S, S)`` -> the model's raw outputs, normalised
        by :meth:`normalize` inside the graph; and the decoding kind of those outputs."""
        return _Normalized(model, self), self.decoding.kind

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> float32, exactly as ``TensorLoader.normalize`` in training."""
        return (self.to_unit(x) - self.mean) / self.std

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> float32 in [0, 1] on the device: what augmentation changes."""
        return x.to(self.device).float().div_(255.0)

    def forward_unit(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Float images ``(B, C, S, S)`` in [0, 1] -> rows as :meth:`forward` gives them."""
        raise NotImplementedError

    def tta_kind(self) -> str:
        return POINTS if getattr(self.meta, "points", False) else LABELS

    def forward_tta(self, model: nn.Module, x: torch.Tensor, aug: Any, n: int = 4, beta: float = 0.25,
                    seed: int = 0) -> torch.Tensor:
        """uint8 ``(B, C, S, S)`` -> rows as :meth:`forward` gives them, averaged over ``n`` passes
        augmented with ``aug`` (the ``AugConfig`` the model trained with) and mixed with the plain
        pass by ``beta`` (see ``fastlab.tta.tta_images``); points mapped back to the image."""
        from fastlab.data.augment import BatchAugment
        from fastlab.tta import tta_images

        kind = self.tta_kind()
        return tta_images(lambda xa: self.forward_unit(model, xa), self.to_unit(x), BatchAugment(aug, seed, kind),
                          n, beta, seed, kind)


class ClassifyInference(ImageInference):
    """One class per image: ``{"label", "top": [{"label", "prob"}, ...]}``."""

    decoding_type = Probs

    def __init__(self, meta: ImageMeta, device: torch.device = CPU):
        if not meta.classes:
            raise InferenceError("a classify model must record its classes: the file is inconsistent")
        super().__init__(meta, device)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, S, S)`` -> class probabilities ``(B, n_out)``."""
        return self.forward_unit(model, self.to_unit(x))

    def forward_unit(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model((x - self.mean) / self.std).float().softmax(dim=1).cpu()

    def interpret(self, run, k: int, min_val: int, echo: Callable[[str], Any]) -> dict[str, Path]:
        from fastlab.interpret import Interpretation, classes_view

        interp = Interpretation.from_loaded(run, classifier=True)
        written = {"top_losses": interp.plot_top_losses(k), "show_results": interp.show_results()}
        return {**written, **classes_view(interp, min_val, echo, "images")}


class RegressInference(ImageInference):
    """Numbers per image: ``{"label", "value", "top": []}``, plus ``points`` (``[[x, y], ...]`` in
    [-1, 1], (-1, -1) the top-left corner) for a points model."""

    decoding_type = Values

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, S, S)`` -> predicted values ``(B, n_out)``."""
        return self.forward_unit(model, self.to_unit(x))

    def forward_unit(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model((x - self.mean) / self.std).float().cpu()

    def interpret(self, run, k: int, min_val: int, echo: Callable[[str], Any]) -> dict[str, Path]:
        from fastlab.interpret import Interpretation, save_top_losses

        interp = Interpretation.from_loaded(run, classifier=False)
        written = {"top_losses": interp.plot_top_losses(k), "largest_errors": save_top_losses(interp, k),
                   "show_results": interp.show_results()}
        echo(f"{len(interp.targets)} validation items, mean loss {float(interp.losses.mean()):.4g}")
        echo(f"no confusion matrix or most_confused: this is a regression run (task={interp.task.name}), "
             "which has no classes to confuse")
        return written


class _Normalized(nn.Module):
    """``model(task.normalize(x))``: uint8 images in, raw outputs out (what ``onnx_module`` exports)."""

    def __init__(self, model: nn.Module, task: ImageInference):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.task.normalize(x))
