"""Use a trained model: load a run dir or an exported bundle, read inputs as training did, predict.

Every task supplies its inference behaviour through its ``Task.inference`` field (see
:mod:`fastlab.inference.base`): image classes and values (:mod:`~fastlab.inference.image`),
masks (:mod:`~fastlab.inference.segment`), text (:mod:`~fastlab.inference.text`) and table rows
(:mod:`~fastlab.inference.tabular`). Saved models are read in :mod:`~fastlab.inference.files`,
never by unpickling code; :mod:`~fastlab.inference.onnx_export` writes an image model as an ONNX
graph, which :mod:`fastlab.portable` runs without PyTorch, sharing the reading of images and the
decoding of outputs with this package. This package needs neither starlette nor uvicorn.
"""

from fastlab.inference.base import TaskInference, build_model, check_top_k, inference_for
from fastlab.inference.files import (
    BUNDLE_FORMAT,
    BUNDLE_META,
    BUNDLE_ONNX,
    BUNDLE_VERSION,
    BUNDLE_WEIGHTS,
    CHECKPOINT,
    read_model_file,
    write_bundle,
)
from fastlab.inference.image_input import (
    ACCEPTED_FORMATS,
    MAX_PIXELS,
    check_image_bytes,
    decode_bytes,
    to_channels,
)
from fastlab.inference.predictor import Predictor
from fastlab.models.meta import ModelMeta
from fastlab.portable.errors import (
    ImageInputError,
    ImageTooLarge,
    InferenceError,
    InputError,
    UnsupportedImage,
    clean_name,
    http_status,
)

__all__ = ["ACCEPTED_FORMATS", "BUNDLE_FORMAT", "BUNDLE_META", "BUNDLE_ONNX", "BUNDLE_VERSION", "BUNDLE_WEIGHTS", "CHECKPOINT",
           "MAX_PIXELS", "ImageInputError", "ImageTooLarge", "InferenceError", "InputError", "ModelMeta",
           "Predictor", "TaskInference", "UnsupportedImage", "build_model", "check_image_bytes", "check_top_k",
           "clean_name", "decode_bytes", "http_status", "inference_for", "read_model_file", "to_channels",
           "write_bundle"]
