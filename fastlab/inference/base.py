"""A task's inference behaviour: the one interface ``fastlab.inference`` calls, one class per task.

A ``Task`` names its class in its ``inference`` field (a ``"module:Class"`` string, imported only
when a saved model is used, so ``fastlab-train`` never imports serving code). The class says

- nothing about building the model: a saved model is rebuilt by its task's ``Task.build`` (the
  one way training builds it too) from the task's ``meta_type``, in :func:`build_model`;
- what it reads (``input_kind``: ``image``, ``text`` or ``table``) and how: one item from the
  Python API (``read``), from a file or a literal of the CLI (``items_from_file``,
  ``items_from_text``), from an upload or a JSON body of the server (``items_from_upload``,
  ``items_from_json``);
- how a batch goes through the model (``collate``, ``forward``) and how one row of the output
  becomes JSON (``decode``);
- what ``fastlab-interpret`` shows for it (``interpret``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fastlab import registry
from fastlab.models.meta import ModelMeta
from fastlab.portable.decode import check_top_k, decode_probs, decode_values
from fastlab.portable.errors import InferenceError, InputError

__all__ = ["CPU", "Named", "TaskInference", "build_model", "check_top_k", "decode_probs", "decode_values",
           "inference_for", "resolve_device"]

CPU = torch.device("cpu")
Named = tuple[dict, Any]  # ({"file": ..., ...} naming an input in the CLI's output, the input)


class TaskInference(ABC):
    """Inference for one task, bound to a model's meta (its task's ``Task.meta_type``) and a device."""

    input_kind: ClassVar[str]  # "image" | "text" | "table": the upload page's input and /predict's body
    json_hint: ClassVar[str]  # the JSON body /predict takes, for error messages and the README

    def __init__(self, meta: ModelMeta, device: torch.device = CPU):
        self.meta, self.device = meta, device

    # ------------------------------------------------------------------ inputs
    @abstractmethod
    def read(self, item: Any, **limits) -> Any:
        """One input (Python API) -> what :meth:`collate` stacks; bad input is an ``InputError``."""

    @abstractmethod
    def items_from_file(self, path: str) -> list[Named]:
        """A file named on the command line -> its inputs (one image or text, or a table's rows)."""

    def items_from_text(self, text: str) -> list[Named]:
        """A literal ``--text`` of the CLI -> its inputs."""
        raise InputError(f"a {self.meta.task} model reads {self.input_kind} files, not --text: give files instead")

    @abstractmethod
    def items_from_upload(self, data: bytes, name: str, **limits) -> tuple[list[Any], bool]:
        """An uploaded file -> (read inputs, whether to answer a list). Called off the event loop."""

    @abstractmethod
    def items_from_json(self, doc: Any, **limits) -> tuple[list[Any], bool]:
        """A parsed JSON body (``None`` when it did not parse) -> (read inputs, whether to answer a list)."""

    # ------------------------------------------------------------------ the forward pass
    def collate(self, xs: Sequence[Any]) -> Any:
        """Read inputs -> one batch; the default stacks tensors of one shape."""
        return torch.stack(list(xs))

    @abstractmethod
    def forward(self, model: nn.Module, batch: Any) -> Sequence[Any]:
        """A batch -> one row per input, on the CPU (under ``torch.inference_mode``)."""

    @abstractmethod
    def decode(self, row: Any, top_k: int = 3) -> dict:
        """One row of :meth:`forward` -> a JSON-able answer with at least ``label``."""

    def info(self) -> dict:
        """What ``/health`` and the page say about the model, beyond arch, task and classes."""
        return {"input": self.input_kind}

    # ------------------------------------------------------------------ test-time augmentation
    def tta_kind(self) -> str:
        """What test-time augmentation averages for this task (``labels``: one answer per input,
        or ``points`` on it; see ``fastlab.tta``); a task that has none refuses with one line."""
        raise InferenceError(f"--tta averages a model's answers over augmented images, which a {self.meta.task} "
                             f"model ({self.input_kind} in) has not: drop --tta")

    def forward_tta(self, model: nn.Module, batch: Any, aug: Any, n: int = 4, beta: float = 0.25,
                    seed: int = 0) -> Sequence[Any]:
        """:meth:`forward` with test-time augmentation: ``n`` passes augmented with ``aug`` (the
        model's training ``AugConfig``), seeded with ``seed``, mixed with the plain pass by ``beta``."""
        self.tta_kind()
        raise NotImplementedError

    # ------------------------------------------------------------------ export
    onnx_refusal: ClassVar[str] = "it has no ONNX form"

    def onnx_module(self, model: nn.Module) -> tuple[nn.Module, str]:
        """What ``fastlab-export --format onnx`` exports: a module from what :meth:`collate` stacks to
        the model's raw outputs, and the :mod:`fastlab.portable.decode` kind that decodes them.
        A task whose inputs cannot be read without PyTorch refuses with one line."""
        raise InferenceError(f"a {self.meta.task} model cannot be exported to ONNX: {self.onnx_refusal}. Export "
                             "the default bundle instead (fastlab-export RUN OUT, model.safetensors), which "
                             "fastlab-predict and fastlab-serve run with PyTorch")

    # ------------------------------------------------------------------ interpretation
    @abstractmethod
    def interpret(self, run: Any, k: int, min_val: int, echo: Callable[[str], Any]) -> dict[str, Path]:
        """Write this task's view of a run's mistakes into ``run.out_dir``; ``{name: path}``."""


def inference_for(task_name: Any, source: str = "the model") -> type[TaskInference]:
    """The inference class of the task ``task_name``, through the task's ``inference`` field."""
    tasks = {name: e.builder for name, e in registry.options("task").items()}
    task = tasks.get(task_name) if isinstance(task_name, str) else None
    spec = getattr(task, "inference", None)
    if spec is None:
        raise InferenceError(f"'{source}' has task {task_name!r}, which this fastlab cannot predict with: "
                             f"use a model of {sorted(tasks)}")
    if isinstance(spec, str):  # "module:Class", imported now that a saved model is used
        module, _, attr = spec.partition(":")
        spec = getattr(importlib.import_module(module), attr)
    return spec


def build_model(meta: ModelMeta, state_dict: dict[str, torch.Tensor], source: str = "the model") -> nn.Module:
    """Rebuild the architecture from ``meta`` as training built it (``Task.build`` of the meta's
    task, with the registered architecture's schema and builder), load ``state_dict`` and switch
    to eval mode. Any registered architecture of the task's role rebuilds, a user's own too."""
    archs = registry.options("arch")
    if meta.arch not in archs:
        raise InferenceError(f"'{source}' is a {meta.arch!r} model, which this fastlab does not know: "
                             f"use a model of {sorted(archs)}")
    try:
        arch_cfg = archs[meta.arch].schema(**meta.arch_config)
    except TypeError as e:
        raise InferenceError(f"arch_config of '{source}' does not fit arch {meta.arch} ({e}): "
                             "retrain or re-export it with this fastlab") from None
    tasks = registry.options("task")
    if meta.task not in tasks:
        raise InferenceError(f"'{source}' has task {meta.task!r}, which this fastlab cannot predict with: "
                             f"use a model of {sorted(tasks)}")
    model = tasks[meta.task].builder.build(arch_cfg, meta, InferenceError)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        # PyTorch's message lists every missing/unexpected key and shape mismatch: keep its head.
        detail = " ".join(str(e).split())[:300]
        raise InferenceError(f"weights of '{source}' do not fit arch {meta.arch} with {meta.arch_config} "
                             f"({detail}): the file is inconsistent, retrain or re-export it") from None
    return model.eval()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"device {name} asked for but CUDA is not available here: use cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InferenceError(f"device {name!r} is not known: use cpu, cuda, cuda:N or auto") from None
