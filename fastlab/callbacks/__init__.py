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
from fastlab.callbacks.progress import ProgressCallback
from fastlab.callbacks.recorder import Recorder
from fastlab.callbacks.schedule import ParamScheduler
from fastlab.callbacks.terminate import TerminateOnNaN

__all__ = [
    "EVENTS", "Callback", "CancelBackwardException", "CancelBatchException",
    "CancelEpochException", "CancelFitException", "CancelStepException", "CancelTrainException",
    "CancelValidException", "ParamScheduler", "ProgressCallback", "Recorder", "TerminateOnNaN",
]
