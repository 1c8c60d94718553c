"""A saved model without PyTorch: an ONNX bundle (``fastlab-export RUN OUT --format onnx``) run by
onnxruntime, with NumPy and Pillow only, and what the PyTorch side shares with it.

- :mod:`~fastlab.portable.bundle`: the bundle format's one reader and writer of files;
- :mod:`~fastlab.portable.images`: reading images as training did (:class:`ImageReading`);
- :mod:`~fastlab.portable.decode`: a model's outputs as JSON (classes, values, points, masks);
- :mod:`~fastlab.portable.predictor`: :class:`Predicting`, the interface ``fastlab-predict`` and
  ``fastlab-serve`` use, and :class:`OnnxPredictor`;
- :mod:`~fastlab.portable.errors`: the inference error kinds.

This package never imports torch, nor a fastlab module that does (``tests/inference/test_onnx.py``
serves a bundle and checks ``sys.modules``); onnxruntime is imported only when a bundle is loaded.
"""

from fastlab.portable.bundle import is_onnx_bundle
from fastlab.portable.predictor import OnnxPredictor, Predicting

__all__ = ["OnnxPredictor", "Predicting", "is_onnx_bundle"]
