"""What a trained model gets wrong (fast.ai's interpretation); ``fastlab-interpret RUN_DIR`` runs it
(``fastlab.cli.interpret``).

The model comes from the run dir's ``model.pt`` (through ``fastlab.inference``); the validation
set is rebuilt from the training config saved in it by the task's own ``build_data``, given the
model's meta as the "pretrained" meta, so it is normalised with the model's statistics and
numericalised with its vocabulary. The split depends on ``data.seed`` alone, so these are the
items the run validated on.

Each task's view (its ``TaskInference.interpret``) writes, atomically, into ``RUN_DIR/interpret/``:

- classify: ``top_losses.png``, ``confusion_matrix.png``, ``most_confused.json``, ``show_results.png``;
- regress (points too): ``top_losses.png``, ``largest_errors.json``, ``show_results.png``;
- segment: ``worst_masks.png`` and ``worst_masks.json``;
- tabular: ``top_losses.json`` (the rows of largest loss), plus the confusion files for classes;
- text_classify: ``top_losses.json`` (texts), ``confusion_matrix.png``, ``most_confused.json``;
- language_model: ``top_losses.json``, the validation texts of highest loss, with their perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastlab.config import to_run_config
from fastlab.data.place import Place
from fastlab.errors import FastlabError
from fastlab.inference import CHECKPOINT, ModelMeta, build_model, inference_for, read_model_file
from fastlab.plots import pyplot, save_figure
from fastlab.rundir import INTERPRET, write_json
from fastlab.tasks import Task, get_task

OUT_DIR = INTERPRET


class InterpretError(FastlabError):
    """A run dir that cannot be interpreted, or a question it cannot answer."""


def _fmt(v: float) -> str:
    return f"{v:.3g}"


@dataclass
class LoadedRun:
    """A run dir's model, its rebuilt data and task, and where its interpretation goes."""

    model: nn.Module
    data: Any  # the task's bunch; its ``valid`` loader in the run's order
    task: Task
    meta: ModelMeta
    out_dir: Path


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load ``run_dir/model.pt`` and rebuild the run's validation set from its saved config."""
    root = Path(run_dir).expanduser()
    if not root.is_dir():
        raise InterpretError(f"run dir '{run_dir}' does not exist: pass a run dir written by fastlab-train")
    ckpt = root / CHECKPOINT
    if not ckpt.is_file():
        raise InterpretError(f"'{run_dir}' has no {CHECKPOINT}: pass a run dir trained with trainer.save_model=true")
    state, meta = read_model_file(ckpt)  # InferenceError (one line) for a corrupt file
    if not isinstance(meta.config, dict):
        raise InterpretError(f"'{ckpt}' does not record its training config: interpret a run trained by "
                             "fastlab-train (or by train(cfg) with a composed config)")
    model = build_model(meta, state, str(ckpt))
    run = to_run_config(meta.config)
    task = get_task(run.task)
    try:
        # The model's own meta stands in for a pretrained one: its normalisation statistics, its
        # vocabulary, whatever the data folder would give today.
        # the run's own cache (data.cache=disk) is reused
        data = task.build_data(run, meta.to_dict(), Place.of(run))
    except FastlabError as e:
        raise InterpretError(f"{e} (the validation set is rebuilt from the run's config: run "
                             "fastlab-interpret from the directory training ran in)") from None
    if getattr(data, "classes", None) != meta.classes:
        raise InterpretError(f"the data now has classes {data.classes} but the model was trained on {meta.classes}: "
                             "interpret with the data the run was trained on")
    return LoadedRun(model, data, task, meta, root / OUT_DIR)


class Interpretation:
    """Predictions, targets and per-item losses of a model over a validation set.

    Parameters
    ----------
    model : nn.Module
        Maps a batch of ``data.valid`` (e.g. normalised images ``(B, C, H, W)``) to ``(B, c, ...)``.
    data : bunch
        Its ``valid`` loader is predicted, in order; image bunches hold the uint8 images in ``valid.x``.
    task : Task
        Gives the loss (per item).
    out_dir : path, optional
        Default folder of the ``plot_*`` and ``save_*`` methods.
    classifier : bool, optional
        Whether the outputs are class scores ``(N, c)``; by default, whether the data has classes
        and the outputs are ``(N, c)``.

    Attributes
    ----------
    preds : Tensor ``(N, c)`` (``(N, c, H, W)`` for a segmentation)
        Raw model outputs (logits, or the value for regression), float32 on the CPU.
    probs : Tensor ``(N, c)`` or None
        Softmax of ``preds`` (classification only).
    decoded : Tensor ``(N,)`` (``(N, k)`` for k numbers per item, ``(N, H, W)`` for masks)
        Predicted class index (per pixel for masks), or predicted value.
    targets : Tensor ``(N,)``, ``(N, k)`` or ``(N, H, W)``
    losses : Tensor ``(N,)``
        ``task.loss_func`` of each item alone.
    """

    def __init__(self, model: nn.Module, data, task: Task, out_dir: str | Path | None = None,
                 classifier: bool | None = None):
        self.data, self.task = data, task
        self.classes = data.classes
        self.out_dir = Path(out_dir) if out_dir is not None else None
        model.eval()
        preds, targets = [], []
        with torch.no_grad():
            for xb, yb in data.valid:
                preds.append(model(xb).float().cpu())  # (B, c, ...)
                targets.append(yb.cpu())
        self.preds, self.targets = torch.cat(preds), torch.cat(targets)
        if classifier is None:  # class scores (N, c) of data with classes (not per pixel, as masks' are)
            classifier = self.classes is not None and self.preds.dim() == 2
        self.is_classifier = classifier
        with torch.no_grad():
            # One item at a time: the task's loss is a mean over its batch, and this keeps it the
            # exact loss training minimised (cross-entropy, MSE, or a task added later).
            self.losses = torch.stack([task.loss_func(p[None], t[None]).float()
                                       for p, t in zip(self.preds, self.targets)])  # (N,)
        if self.is_classifier:
            self.probs = self.preds.softmax(dim=1)
            self.decoded = self.preds.argmax(dim=1)
        elif self.preds.dim() == self.targets.dim() + 1 and self.preds.dim() > 2:
            # per-pixel class scores (N, c, H, W) against codes (N, H, W): the predicted code
            self.probs, self.decoded = None, self.preds.argmax(dim=1)
        else:
            # (N,) for one number per item, (N, k) for several (a point's x, y)
            self.probs, self.decoded = None, self.preds.reshape(self.targets.shape)

    # ------------------------------------------------------------------------- from a run dir
    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> Interpretation:
        """Load ``run_dir/model.pt`` and rebuild the run's validation set from its saved config."""
        return cls.from_loaded(load_run(run_dir))

    @classmethod
    def from_loaded(cls, run: LoadedRun, classifier: bool | None = None) -> Interpretation:
        return cls(run.model, run.data, run.task, out_dir=run.out_dir, classifier=classifier)

    # ------------------------------------------------------------------------------- helpers
    def _path(self, path: str | Path | None, name: str) -> Path:
        if path is not None:
            return Path(path)
        if self.out_dir is None:
            raise InterpretError(f"no path for {name}: pass path=..., or build the Interpretation with out_dir")
        return self.out_dir / name

    def _label(self, i: int, which: str) -> str:
        """Item ``i``'s predicted or actual label as text."""
        t = self.decoded if which == "predicted" else self.targets
        if self.is_classifier:
            return self.classes[int(t[i])]
        if t[i].numel() > 8:  # a mask: no label to print
            return ""
        return ", ".join(_fmt(float(v)) for v in t[i].reshape(-1))

    def _need_classes(self, what: str) -> None:
        if not self.is_classifier:
            raise InterpretError(f"{what} needs a classification run: this run is task={self.task.name}")

    # ----------------------------------------------------------------------------- top losses
    def top_losses(self, k: int = 9) -> list[dict]:
        """The ``k`` validation items with the highest loss, highest first.

        Each is ``{"index", "item", "actual", "predicted", "loss", "probability"}``, where
        ``probability`` is the model's probability of the actual class (fastai's choice: how sure
        it was of the truth), None for regression.
        """
        k = max(0, min(int(k), len(self.losses)))
        losses, idx = self.losses.topk(k)  # sorted, highest first
        out = []
        for loss, i in zip(losses.tolist(), idx.tolist()):
            prob = float(self.probs[i, int(self.targets[i])]) if self.is_classifier else None
            out.append({"index": i, "item": self.data.valid_items[i], "actual": self._label(i, "actual"),
                        "predicted": self._label(i, "predicted"), "loss": loss, "probability": prob})
        return out

    def plot_top_losses(self, k: int = 9, path: str | Path | None = None) -> Path:
        """``top_losses.png``: the ``k`` worst images, titled prediction/actual/loss/probability."""
        top = self.top_losses(k)
        titles = [f"{t['predicted']}/{t['actual']}/{t['loss']:.2f}" + (f"/{t['probability']:.2f}"
                  if t["probability"] is not None else "") for t in top]
        x = self.data.valid.x[[t["index"] for t in top]].cpu()  # (k, C, H, W) uint8
        heading = "prediction/actual/loss" + ("/probability of actual" if self.is_classifier else "")
        return _image_grid(x, titles, heading, self._path(path, "top_losses.png"))

    # ------------------------------------------------------------------------ confusion matrix
    def confusion_matrix(self) -> np.ndarray:
        """``(c, c)`` counts: row = actual class, column = predicted class (sklearn's layout)."""
        self._need_classes("a confusion matrix")
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(self.targets.numpy(), self.decoded.numpy(), labels=list(range(len(self.classes))))

    def plot_confusion_matrix(self, path: str | Path | None = None) -> Path:
        """``confusion_matrix.png``: counts in each cell, actual down, predicted across."""
        cm = self.confusion_matrix()
        c = len(self.classes)
        plt = pyplot()
        side = max(4.0, 0.45 * c + 2)
        fig, ax = plt.subplots(figsize=(side, side))
        ax.imshow(cm, cmap="Blues")
        ticks = range(c)
        ax.set_xticks(ticks, self.classes, rotation=90 if c > 10 else 0)
        ax.set_yticks(ticks, self.classes)
        ax.set(xlabel="Predicted", ylabel="Actual", title="Confusion matrix")
        if c <= 30:  # numbers in the cells stay legible up to about this many classes
            threshold = cm.max() / 2
            for i in range(c):
                for j in range(c):
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if cm[i, j] > threshold else "black")
        return save_figure(fig, self._path(path, "confusion_matrix.png"))

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """Off-diagonal cells with at least ``min_val`` items: ``(actual, predicted, count)``,
        most frequent first (ties by actual, then predicted class order)."""
        cm = self.confusion_matrix()
        pairs = [(self.classes[i], self.classes[j], int(cm[i, j]), i, j)
                 for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] >= min_val]
        pairs.sort(key=lambda p: (-p[2], p[3], p[4]))
        return [(a, p, n) for a, p, n, _, _ in pairs]

    def save_most_confused(self, min_val: int = 1, path: str | Path | None = None) -> Path:
        """``most_confused.json``: ``{"min_val", "n_valid", "pairs": [{"actual", "predicted", "count"}]}``."""
        pairs = [{"actual": a, "predicted": p, "count": n} for a, p, n in self.most_confused(min_val)]
        target = self._path(path, "most_confused.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, {"min_val": min_val, "n_valid": len(self.targets), "pairs": pairs})
        return target

    # ---------------------------------------------------------------------------- show results
    def show_results(self, path: str | Path | None = None, n: int = 16) -> Path:
        """``show_results.png``: the first ``n`` validation images titled with the prediction and
        the truth, ``predicted/actual`` (values for regression)."""
        n = min(n, len(self.targets))
        titles = [f"{self._label(i, 'predicted')}/{self._label(i, 'actual')}" for i in range(n)]
        heading = "prediction/actual" if self.is_classifier else "predicted value/actual value"
        return _image_grid(self.data.valid.x[:n].cpu(), titles, heading, self._path(path, "show_results.png"))

    # --------------------------------------------------------------------------------- summary
    def accuracy(self) -> float | None:
        if not self.is_classifier:
            return None
        return float((self.decoded == self.targets).float().mean())


# ------------------------------------------------------------------------- views' shared parts


def classes_view(interp: Interpretation, min_val: int, echo: Callable[[str], Any], what: str) -> dict[str, Path]:
    """The confusion matrix and the most confused pairs, written and echoed."""
    written = {"confusion_matrix": interp.plot_confusion_matrix(), "most_confused": interp.save_most_confused(min_val)}
    pairs = interp.most_confused(min_val)
    echo(f"{len(interp.targets)} validation {what}, accuracy {interp.accuracy():.4f}")
    echo(f"most confused (actual -> predicted: count, at least {min_val}):")
    for actual, predicted, count in pairs:
        echo(f"  {actual} -> {predicted}: {count}")
    if not pairs:
        echo("  none")
    return written


def save_top_losses(interp: Interpretation, k: int, texts: list[str] | None = None,
                    rows: list[dict] | None = None, name: str | None = None) -> Path:
    """The ``k`` items of highest loss as JSON (``top_losses.json``, or ``largest_errors.json`` for a
    regression), each with its text or its raw table row when given."""
    top = interp.top_losses(k)
    for t in top:
        if texts is not None:
            t["text"] = texts[t["index"]]
        if rows is not None:
            t["row"] = rows[t["index"]]
    name = name or ("top_losses.json" if interp.is_classifier or texts or rows else "largest_errors.json")
    target = interp._path(None, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, {"n_valid": len(interp.targets), "top_losses": top})
    return target


def _image_grid(x: torch.Tensor, titles: list[str], heading: str, path: Path) -> Path:
    """A square-ish grid of uint8 images ``(N, C, H, W)``, a title each and a heading that says
    how to read the titles (``fastlab.plots.show_images`` has no heading, and its cells are too
    narrow for four numbers)."""
    plt = pyplot()
    n = len(x)
    ncols = max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = x[i].permute(1, 2, 0).numpy()  # (H, W, C)
            grey = img.shape[-1] == 1
            ax.imshow(img[..., 0] if grey else img, cmap="gray" if grey else None)
            ax.set_title(titles[i], fontsize=9)
    fig.suptitle(heading)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------ CLI


def interpret_run(run_dir: str | Path, k: int = 9, min_val: int = 1, echo=print) -> dict[str, Path]:
    """Everything ``fastlab-interpret`` writes (the run's task's view); returns ``{name: path}``
    and echoes a summary."""
    run = load_run(run_dir)
    written = inference_for(run.meta.task, str(run_dir))(run.meta).interpret(run, k, min_val, echo)
    for path in written.values():
        echo(f"wrote {path}")
    return written
