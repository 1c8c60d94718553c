"""``fastlab-interpret RUN_DIR``: look at what a trained model gets wrong (fast.ai's interpretation).

The model comes from the run dir's ``model.pt`` (through ``fastlab.inference``); the validation
set is rebuilt from the training config saved in it, with the model's own normalisation. The
split depends on ``data.seed`` alone, so these are the images the run validated on.

Writes, atomically, into ``RUN_DIR/interpret/``: ``top_losses.png``, ``confusion_matrix.png``,
``most_confused.json`` and ``show_results.png`` (a regression run skips the two that need
classes, and says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastlab.config import to_run_config
from fastlab.data import DataBunch
from fastlab.errors import FastlabError
from fastlab.inference import CHECKPOINT, build_model, read_model_file
from fastlab.plots import pyplot, save_figure
from fastlab.rundir import write_json
from fastlab.tasks import Task, get_task

OUT_DIR = "interpret"


class InterpretError(FastlabError):
    """A run dir that cannot be interpreted, or a question it cannot answer."""


def _fmt(v: float) -> str:
    return f"{v:.3g}"


class Interpretation:
    """Predictions, targets and per-item losses of a model over a validation set.

    Parameters
    ----------
    model : nn.Module
        Maps a normalised batch ``(B, C, H, W)`` to ``(B, c)``.
    data : DataBunch
        Its ``valid`` loader is predicted, in order; ``valid.x`` holds the uint8 images.
    task : Task
        Gives the loss (per item) and whether there are classes.
    out_dir : path, optional
        Default folder of the ``plot_*`` and ``save_*`` methods.

    Attributes
    ----------
    preds : Tensor ``(N, c)``
        Raw model outputs (logits, or the value for regression), float32 on the CPU.
    probs : Tensor ``(N, c)`` or None
        Softmax of ``preds`` (classification only).
    decoded : Tensor ``(N,)`` (``(N, k)`` for a regression of k numbers per item)
        Predicted class index, or predicted value.
    targets : Tensor ``(N,)``
    losses : Tensor ``(N,)``
        ``task.loss_func`` of each item alone.
    """

    def __init__(self, model: nn.Module, data: DataBunch, task: Task, out_dir: str | Path | None = None):
        self.data, self.task = data, task
        self.classes = data.classes
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.is_classifier = task.targets == "category"
        model.eval()
        preds, targets = [], []
        with torch.no_grad():
            for xb, yb in data.valid:
                preds.append(model(xb).float().cpu())  # (B, c)
                targets.append(yb.cpu())
        self.preds, self.targets = torch.cat(preds), torch.cat(targets)
        with torch.no_grad():
            # One item at a time: the task's loss is a mean over its batch, and this keeps it the
            # exact loss training minimised (cross-entropy, MSE, or a task added later).
            self.losses = torch.stack([task.loss_func(p[None], t[None]).float()
                                       for p, t in zip(self.preds, self.targets)])  # (N,)
        if self.is_classifier:
            self.probs = self.preds.softmax(dim=1)
            self.decoded = self.preds.argmax(dim=1)
        else:
            # (N,) for one number per item, (N, k) for several (a point's x, y)
            self.probs, self.decoded = None, self.preds.reshape(self.targets.shape)

    # ------------------------------------------------------------------------- from a run dir
    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> Interpretation:
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
        # The model's own normalisation: the statistics it was trained with, whatever the data
        # folder holds today.
        data_cfg = dataclasses.replace(run.data, mean=list(meta.mean), std=list(meta.std))
        try:
            data = DataBunch.from_config(data_cfg, task.targets)
        except FastlabError as e:
            raise InterpretError(f"{e} (the validation set is rebuilt from the run's config: run "
                                 "fastlab-interpret from the directory training ran in)") from None
        if data.classes != meta.classes:
            raise InterpretError(f"the data now has classes {data.classes} but the model was trained on {meta.classes}: "
                                 "interpret with the data the run was trained on")
        return cls(model, data, task, out_dir=root / OUT_DIR)

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
        """``top_losses.png``: the ``k`` worst items, titled prediction/actual/loss/probability."""
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def interpret_run(run_dir: str | Path, k: int = 9, min_val: int = 1, echo=print) -> dict[str, Path]:
    """Everything ``fastlab-interpret`` writes; returns ``{name: path}`` and echoes a summary."""
    interp = Interpretation.from_run_dir(run_dir)
    written = {"top_losses": interp.plot_top_losses(k), "show_results": interp.show_results()}
    n = len(interp.targets)
    if interp.is_classifier:
        written["confusion_matrix"] = interp.plot_confusion_matrix()
        written["most_confused"] = interp.save_most_confused(min_val)
        pairs = interp.most_confused(min_val)
        echo(f"{n} validation images, accuracy {interp.accuracy():.4f}")
        echo(f"most confused (actual -> predicted: count, at least {min_val}):")
        for actual, predicted, count in pairs:
            echo(f"  {actual} -> {predicted}: {count}")
        if not pairs:
            echo("  none")
    else:
        echo(f"{n} validation items, mean loss {float(interp.losses.mean()):.4g}")
        echo(f"no confusion matrix or most_confused: this is a regression run (task={interp.task.name}), "
             "which has no classes to confuse")
    for path in written.values():
        echo(f"wrote {path}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fastlab-interpret",
        description="What a trained run gets wrong: top losses, confusion matrix, most confused pairs and "
                    "sample results, written to RUN_DIR/interpret/.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run dir written by fastlab-train (with model.pt)")
    parser.add_argument("--k", type=_positive_int, default=9, help="how many top losses to show (default 9)")
    parser.add_argument("--min-val", type=_positive_int, default=1,
                        help="least count of a confused pair to report (default 1)")
    args = parser.parse_args(argv)
    try:
        interpret_run(args.run_dir, args.k, args.min_val)
    except FastlabError as e:
        print(f"fastlab-interpret: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
