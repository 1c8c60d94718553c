"""``fastlab-export --format onnx``: a model as an ONNX graph that onnxruntime runs without PyTorch.

The graph is the task's ``TaskInference.onnx_module``: uint8 images ``(B, C, S, S)`` in, normalised
inside as training normalised, the model's raw outputs out; the batch axis is dynamic. It is made
by ``torch.onnx.export``'s default exporter (``dynamo=True``, through ``torch.export``) at
:data:`OPSET`, then checked: the PyTorch module and an onnxruntime session of the graph run one
seeded batch, and a largest absolute difference above :data:`TOLERANCE` (relative to the outputs'
scale) is refused with one line before anything is written.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fastlab.inference.base import inference_for
from fastlab.models.meta import ModelMeta
from fastlab.portable.errors import InferenceError
from fastlab.portable.predictor import ONNX_EXTRA, open_session

OPSET = 20  # onnxruntime has run opset 20 since 1.17 (2024)
INPUT = "x"
TOLERANCE = 1e-3  # of max(1, largest |output|): float32 graphs agree to ~1e-6
CHECK_BATCH = 3  # not the export example's batch of 2, so the check also proves the batch axis dynamic


@dataclass
class OnnxExport:
    """The graph's bytes, what ``meta.json`` records of it (``onnx``), and the export check's result."""

    blob: bytes
    spec: dict
    max_diff: float
    check_batch: int


def _exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise InferenceError(f"fastlab-export --format onnx needs onnx and onnxscript ({e.name} is missing): "
                             f"{ONNX_EXTRA}") from None


def _batch(meta: ModelMeta, n: int, seed: int) -> torch.Tensor:
    """Seeded uint8 images ``(n, n_in, size, size)``: what the graph takes, from the meta's input shape."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, meta.n_in, meta.size, meta.size), generator=g, dtype=torch.uint8)


def export_onnx(model: nn.Module, meta: ModelMeta, source: str = "the model") -> OnnxExport:
    """``model`` (on the CPU, in eval mode) as a checked ONNX graph; one ``InferenceError`` line
    when its task has no ONNX form, the exporter fails, or the graph's outputs differ."""
    task = inference_for(meta.task, source)(meta)
    module, output = task.onnx_module(model)  # a task without an ONNX form refuses here
    _exporter()
    module.eval()
    batch = torch.export.Dim("batch", min=1)
    quiet = io.StringIO()
    try:
        # The exporter reports each of its steps on stdout, and warns of what it decides.
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (_batch(meta, 2, 0),), dynamo=True, opset_version=OPSET,
                                        input_names=[INPUT], dynamic_shapes=({0: batch},), verbose=False)
            blob = program.model_proto.SerializeToString()
    except Exception as e:  # torch.export / onnxscript raise many kinds: name it in one line
        raise InferenceError(f"cannot export '{source}' ({meta.arch}, {meta.task}) to ONNX ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]}): export the default bundle (fastlab-export RUN OUT) "
                             "instead") from None
    x = _batch(meta, CHECK_BATCH, 1)
    with torch.inference_mode():
        want = module(x).float().numpy()
    got = open_session(blob).run(None, {INPUT: x.numpy()})[0]
    if got.shape != want.shape:
        raise InferenceError(f"the ONNX graph of '{source}' gives outputs {got.shape}, PyTorch {want.shape}: "
                             "export the default bundle (fastlab-export RUN OUT) instead")
    diff = float(np.abs(got.astype(np.float64) - want).max())
    if not diff <= TOLERANCE * max(1.0, float(np.abs(want).max())):
        raise InferenceError(f"the ONNX graph of '{source}' differs from PyTorch by up to {diff:.3g} on a seeded "
                             f"batch (tolerance {TOLERANCE:g}): export the default bundle (fastlab-export RUN OUT) "
                             "instead")
    return OnnxExport(blob, {"input": INPUT, "output": output, "opset": OPSET}, diff, CHECK_BATCH)
