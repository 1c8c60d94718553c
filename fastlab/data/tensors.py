"""Checks for ``DataBunch.from_tensors``: what tensors a user may hand in, each refusal one line."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastlab.errors import DataError


def _check_x(x_train: torch.Tensor, x_valid: torch.Tensor) -> None:
    for name, x in (("x_train", x_train), ("x_valid", x_valid)):
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{name} is a {type(x).__name__}, not a tensor: pass torch.as_tensor({name})")
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"{name} has shape {tuple(x.shape)}: give at least one item, shaped (N, C, ...)")
        if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
            raise DataError(f"{name} is {x.dtype}: pass uint8 images (scaled by 1/255) or float inputs")
        if x.dtype == torch.uint8 and x.ndim != 4:
            raise DataError(f"{name} is uint8 of shape {tuple(x.shape)}: uint8 means images (N, C, H, W); "
                            "pass other inputs as float")
    if x_train.shape[1:] != x_valid.shape[1:] or (x_train.dtype == torch.uint8) != (x_valid.dtype == torch.uint8):
        raise DataError(f"x_train is {x_train.dtype} {tuple(x_train.shape[1:])} per item but x_valid "
                        f"{x_valid.dtype} {tuple(x_valid.shape[1:])}: give both splits the same kind of inputs")


def _check_y(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if not isinstance(y, torch.Tensor):
        raise DataError(f"{name} is a {type(y).__name__}, not a tensor: pass torch.as_tensor({name})")
    if len(y) != len(x):
        raise DataError(f"{name} has {len(y)} targets for {len(x)} inputs: give one target per input")
    if y.dtype == torch.bool or y.dtype.is_complex:
        raise DataError(f"{name} is {y.dtype}: pass integer class indices or float targets")


def check_tensors(x_train: torch.Tensor, y_train: torch.Tensor, x_valid: torch.Tensor, y_valid: torch.Tensor,
                  bs: int, classes: Sequence[str] | None, mean: Sequence[float] | None,
                  std: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor, list[str] | None, int]:
    """Validate ``from_tensors``' inputs; return the targets as the loss takes them (class indices
    as int64 ``(N,)``; float targets as float32), the class names and ``c``, the model outputs."""
    if not isinstance(bs, int) or bs <= 0:
        raise DataError(f"bs must be a positive integer, got {bs!r}: e.g. bs=64")
    _check_x(x_train, x_valid)
    _check_y(x_train, y_train, "y_train")
    _check_y(x_valid, y_valid, "y_valid")
    if (mean is None) != (std is None):
        raise DataError("mean and std go together: give both, or neither")
    if y_train.dtype.is_floating_point != y_valid.dtype.is_floating_point or y_train.shape[1:] != y_valid.shape[1:]:
        raise DataError(f"y_train is {y_train.dtype} {tuple(y_train.shape[1:])} per item but y_valid {y_valid.dtype} "
                        f"{tuple(y_valid.shape[1:])}: give both splits the same kind of targets")
    if y_train.dtype.is_floating_point:  # regression: one number, or k, per item
        if classes is not None:
            raise DataError("classes were given but the targets are float (regression): pass integer class "
                            "indices, or classes=None")
        if y_train.ndim > 2:
            raise DataError(f"float targets must be (N,) or (N, k), got {tuple(y_train.shape)}")
        c = 1 if y_train.ndim == 1 else y_train.shape[1]
        return y_train.float(), y_valid.float(), None, c
    if y_train.ndim != 1:
        raise DataError(f"class indices must be (N,), got {tuple(y_train.shape)}: pass float targets for regression")
    top = int(max(y_train.max(), y_valid.max()))
    low = int(min(y_train.min(), y_valid.min()))
    names = [str(i) for i in range(top + 1)] if classes is None else [str(name) for name in classes]
    if low < 0 or top >= len(names):
        raise DataError(f"class indices run from {low} to {top} but there are {len(names)} classes: "
                        f"indices must lie in [0, {len(names)})")
    # int64 for the loss; .long() of int64 targets is the tensor itself (used, not changed).
    return y_train.long(), y_valid.long(), names, len(names)
