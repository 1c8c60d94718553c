"""Callbacks: the loop's events and the behaviour that hangs off them."""

from fastlab.callbacks.core import (
    EVENTS,
    Callback,
    CancelBackwardException,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    CancelTrainException,
    CancelValidException,
)
from fastlab.callbacks.csv_logger import CSVLogger
from fastlab.callbacks.early_stopping import EarlyStopping
from fastlab.callbacks.grad_clip import GradientClip
from fastlab.callbacks.progress import ProgressCallback
from fastlab.callbacks.recorder import Recorder
from fastlab.callbacks.save_best import SaveBestModel
from fastlab.callbacks.schedule import ParamScheduler
from fastlab.callbacks.tensorboard import TensorBoardLogger
from fastlab.callbacks.terminate import TerminateOnNaN

__all__ = [
    "CSVLogger", "EVENTS", "Callback", "CancelBackwardException", "CancelBatchException",
    "CancelEpochException", "CancelFitException", "CancelStepException", "CancelTrainException",
    "CancelValidException", "EarlyStopping", "GradientClip", "ParamScheduler", "ProgressCallback",
    "Recorder", "SaveBestModel", "TensorBoardLogger", "TerminateOnNaN",
]
