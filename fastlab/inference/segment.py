"""Inference of ``segment``: an image in; its mask (a PNG of code indices) and pixels per code out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastlab.inference.image import ImageInference
from fastlab.portable.decode import Codes, mask_png, palette
from fastlab.portable.errors import InferenceError
from fastlab.tasks.segment import SegmentMeta

__all__ = ["SegmentInference", "mask_png", "palette"]


class SegmentInference(ImageInference):
    """``{"label": codes present (most pixels first), "codes", "pixels": {code: n}, "size": [W, H],
    "mask_png": base64 PNG}``: the mask at the model's input size, the image squashed to it as in
    training."""

    meta: SegmentMeta
    decoding_type = Codes

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, S, S)`` -> predicted codes ``(B, S, S)`` uint8 (scores are ``(B, c, S, S)``)."""
        return model(self.normalize(x)).float().argmax(dim=1).to(torch.uint8).cpu()

    def tta_kind(self) -> str:
        raise InferenceError("--tta averages one answer per image (classes, values or points), not masks: "
                             "drop --tta for a segment model")

    def interpret(self, run, k: int, min_val: int, echo: Callable[[str], Any]) -> dict[str, Path]:
        """``worst_masks.png`` (the ``k`` validation images of highest loss: truth and prediction
        overlaid) and ``worst_masks.json`` (their loss and pixel accuracy)."""
        from fastlab.interpret import Interpretation
        from fastlab.plots import plot_masks
        from fastlab.rundir import write_json

        interp = Interpretation.from_loaded(run, classifier=False)
        top = interp.top_losses(k)
        idx = [t["index"] for t in top]
        truth, pred = interp.targets[idx], interp.decoded[idx]  # (k, H, W)
        counted = truth < len(self.meta.codes)  # void pixels count in neither
        acc = ((pred == truth) & counted).flatten(1).sum(1) / counted.flatten(1).sum(1).clamp_min(1)
        rows = [{"index": t["index"], "item": t["item"], "loss": t["loss"], "pixel_accuracy": float(a)}
                for t, a in zip(top, acc)]
        out = run.out_dir
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "worst_masks.json", {"n_valid": len(interp.targets), "worst": rows})
        png = plot_masks(interp.data.valid.x[idx].cpu(), [truth, pred], ["truth", "prediction"],
                         self.meta.codes, out / "worst_masks.png")
        pixel_acc = float(np.mean([r["pixel_accuracy"] for r in rows])) if rows else float("nan")
        echo(f"{len(interp.targets)} validation images, mean loss {float(interp.losses.mean()):.4g}; "
             f"the {len(rows)} worst have pixel accuracy {pixel_acc:.3f}")
        return {"worst_masks": png, "worst_masks_json": out / "worst_masks.json"}
