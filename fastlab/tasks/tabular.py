"""Tabular learning: classification or regression of a table's target column.

One task serves both kinds of target, because the kind is a property of the data (``task.target``,
resolved by ``fastlab.data.tables.bunch.target_kind``), known only once the table is read:

- the loss follows the target's dtype: class indices (long) -> cross-entropy, values (float) -> MSE;
- ``accuracy`` is computed for classification and ``rmse`` (in the target's units) for
  regression; each is NaN for the other kind, so ``history.csv`` shows both columns;
- ``task.objective`` must fit the target (``accuracy`` for a category, ``rmse`` for a float;
  ``valid_loss`` fits both): a mismatch is a ``ConfigError`` before training. The default is
  ``accuracy``; regression runs set ``task.objective=rmse`` (``+experiment=tabular_diabetes`` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastlab import registry
from fastlab.config import RunConfig, TaskConfig, check_choice
from fastlab.data.place import Place
from fastlab.data.tables.bunch import TableBunch
from fastlab.data.tables.procs import TabularProcs
from fastlab.errors import ConfigError, FastlabError
from fastlab.models.meta import ModelMeta
from fastlab.tasks.base import Task


@dataclass
class TabularTask(TaskConfig):
    name: str = "tabular"
    target: str = "auto"  # auto (from the target column) | category | float

    def __post_init__(self) -> None:
        check_choice("task.target", self.target, ("auto", "category", "float"))


# Which target kind each objective needs.
OBJECTIVE_TARGET = {"accuracy": "category", "rmse": "float"}


def tabular_loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``preds (B, c)`` logits and ``targets (B,)`` long -> cross-entropy; ``preds (B, 1)`` and
    ``targets (B,)`` float -> mean squared error."""
    if targets.dtype == torch.long:
        return F.cross_entropy(preds, targets)
    return F.mse_loss(preds.view(-1).float(), targets.float())


def accuracy(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of argmax predictions equal to the class; NaN for a float target."""
    if targets.dtype != torch.long:
        return math.nan
    return (preds.argmax(dim=1) == targets).float().mean().item()


def rmse(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Root mean squared error in the target's units; NaN for a class target."""
    if targets.dtype == torch.long:
        return math.nan
    return (preds.view(-1).float() - targets.float()).pow(2).mean().sqrt().item()


def build_data(run: RunConfig, pretrained_meta: dict | None, place: Place) -> TableBunch:
    data = TableBunch.from_config(run.data, run.task.target, seed=run.seed)
    needs = OBJECTIVE_TARGET.get(run.task.objective)
    if needs is not None and needs != data.target:
        fix = "task.objective=rmse" if data.target == "float" else "task.objective=accuracy"
        raise ConfigError(f"task.objective={run.task.objective} needs a {needs} target but '{data.y_name}' is read "
                          f"as {data.target} (task.target={run.task.target}): set {fix} or task.target={needs}")
    return data


@dataclass(kw_only=True)
class TabularMeta(ModelMeta):
    """What a table model records (``TableBunch.meta()``): its columns, embedding sizes, the
    target's kind and scale, and the fitted procs that read a row as training did."""

    target: str  # "category" | "float"
    y_name: str
    cat_names: list[str]  # the model's categorical inputs: the table's, then the <col>_na flags
    cont_names: list[str]
    emb_sizes: list[int]
    procs: dict  # TabularProcs.state()
    y_mean: float | None = None
    y_std: float | None = None

    def check(self, source: str, error: type[FastlabError] = ConfigError) -> None:
        if len(self.emb_sizes) != len(self.cat_names):
            raise error(f"'{source}' has {len(self.cat_names)} categorical columns but "
                        f"{len(self.emb_sizes)} embedding sizes: the file is inconsistent")
        try:
            TabularProcs.from_state(self.procs)
        except (KeyError, TypeError, AttributeError):
            raise error(f"'{source}' has unreadable tabular procs: retrain or re-export it with this fastlab") from None


def table_model(build: Callable[..., nn.Module], arch_cfg, meta: TabularMeta) -> nn.Module:
    """A registered table architecture: ``build(arch_cfg, emb_sizes, n_cont, n_out, y_mean, y_std)``
    (a regression's outputs in the target's units)."""
    return build(arch_cfg, meta.emb_sizes, len(meta.cont_names), meta.n_out, meta.y_mean, meta.y_std)


def _cell(v) -> str:
    if v is None:
        return "(missing)"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def show_results(learn, path: Path, n: int = 10, max_cols: int = 6) -> Path:
    """A table image of the first ``n`` validation rows: some input columns (raw values, as in
    the table), the true target and the prediction (with its probability for a class)."""
    from fastlab.plots import pyplot, save_figure

    data: TableBunch = learn.data
    preds, targets = learn.get_preds()
    n = min(n, len(targets))
    inputs = [c for c in data.valid_rows if c != data.y_name][:max_cols]
    header = [*inputs, f"{data.y_name} (true)", "predicted"]
    rows, colours = [], []
    for i in range(n):
        cells = [_cell(data.valid_rows[c][i]) for c in inputs]
        if data.classes is not None:
            probs = preds[i].softmax(dim=0)
            k = int(probs.argmax())
            true = data.classes[int(targets[i])]
            cells += [true, f"{data.classes[k]} ({probs[k]:.2f})"]
            ok = k == int(targets[i])
        else:
            true, pred = float(targets[i]), float(preds[i].view(-1)[0])
            cells += [f"{true:.4g}", f"{pred:.4g}"]
            ok = abs(pred - true) <= (data.y_std or 1.0)  # within one training std
        rows.append(cells)
        colours.append(["white"] * (len(cells) - 1) + ["#d4f4d4" if ok else "#f8d0d0"])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * len(header), 0.3 * (n + 2)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, cellColours=colours, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.3)
    rule = "right class" if data.classes is not None else "within one training std of the target"
    ax.set_title(f"first {n} validation rows; green = {rule}", fontsize=9)
    return save_figure(fig, Path(path))


TABULAR = registry.register("task", "tabular", TabularTask, Task(
    name="tabular",
    targets="auto",
    loss_func=tabular_loss,
    metrics={"accuracy": accuracy, "rmse": rmse},
    maximize=frozenset({"accuracy"}),
    data_kinds=frozenset({"table"}),
    arch_role="table",
    supports=frozenset(),  # table rows: no image to augment, mix or resize
    build_data=build_data,
    model_from=table_model,
    show_results=show_results,
    inference="fastlab.inference.tabular:TabularInference",
    meta_type=TabularMeta,
))
