"""The ULMFiT tasks: ``language_model`` (next token) and ``text_classify`` (a label per text).

ULMFiT (Howard & Ruder 2018) in two runs: pretrain a language model and save it to the zoo
(``save_as``), then train a classifier with ``arch.pretrained=<that name>``: the classifier takes
the language model's vocabulary (``build_data`` gets the checkpoint's ``meta``) and its encoder
(``body.*``), and unfreezes it gradually (``schedule=gradual``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastlab import registry
from fastlab.config import RunConfig, TaskConfig
from fastlab.data.place import Place
from fastlab.data.text.bunch import TextBunch, text_bunch
from fastlab.data.text.tokens import BOS_ID, PAD, PAD_ID, UNK, UNK_ID, detokenize
from fastlab.errors import ConfigError, FastlabError
from fastlab.metrics import BatchMetric
from fastlab.models.meta import ModelMeta
from fastlab.tasks.base import Task
from fastlab.tasks.classify import SmoothedTask, accuracy, classify_loss, error_rate


@dataclass
class TextClassifyTask(SmoothedTask):
    """A label per text."""

    name: str = "text_classify"
    objective: str = "accuracy"


def lm_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: ``pred (B, T, V)``, ``y (B, T)``."""
    return F.cross_entropy(pred.flatten(0, 1).float(), y.flatten())


class Perplexity(BatchMetric):
    """``exp`` of the mean next-token cross-entropy over the validation tokens, summed batch by
    batch (a language model's predictions, ``(N, T, V)``, are too big to keep)."""

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def accumulate(self, pred: torch.Tensor, yb: torch.Tensor) -> None:
        self.total += F.cross_entropy(pred.flatten(0, 1).float(), yb.flatten(), reduction="sum").item()
        self.count += yb.numel()

    def value(self) -> float:
        return math.exp(self.total / self.count) if self.count else float("nan")


class TokenAccuracy(BatchMetric):
    """Fraction of validation positions whose most likely next token is the true one."""

    def reset(self) -> None:
        self.correct, self.count = 0, 0

    def accumulate(self, pred: torch.Tensor, yb: torch.Tensor) -> None:
        self.correct += int((pred.argmax(dim=-1) == yb).sum())
        self.count += yb.numel()

    def value(self) -> float:
        return self.correct / self.count if self.count else float("nan")


def build_lm_data(run: RunConfig, pretrained_meta: dict | None, place: Place) -> TextBunch:
    return text_bunch(run.data, language_model=True, seed=run.seed, pretrained_meta=pretrained_meta, keep=place.keep)


def build_classifier_data(run: RunConfig, pretrained_meta: dict | None, place: Place) -> TextBunch:
    return text_bunch(run.data, language_model=False, seed=run.seed, pretrained_meta=pretrained_meta, keep=place.keep)


@dataclass(kw_only=True)
class TextMeta(ModelMeta):
    """What a text model records (``TextBunch.meta()``): its vocabulary and how it read texts."""

    vocab: list[str]  # token of each id
    bptt: int  # a language model's context in training
    max_len: int  # a classifier reads a text's first max_len tokens

    def check(self, source: str, error: type[FastlabError] = ConfigError) -> None:
        if not self.vocab or self.vocab[UNK_ID] != UNK or self.vocab[PAD_ID] != PAD:
            raise error(f"'{source}' has no usable vocabulary (it must start with {UNK}, {PAD}): "
                        "retrain or re-export it with this fastlab")


def build_lm(build: Callable[..., nn.Module], arch_cfg, meta: TextMeta) -> nn.Module:
    """A registered text architecture as a language model over the vocabulary:
    ``build(arch_cfg, vocab_sz)``."""
    return build(arch_cfg, len(meta.vocab))


def build_classifier(build: Callable[..., nn.Module], arch_cfg, meta: TextMeta) -> nn.Module:
    """A registered text architecture as a classifier of ``meta.n_out`` classes:
    ``build(arch_cfg, vocab_sz, n_out)``."""
    return build(arch_cfg, len(meta.vocab), meta.n_out)


# ------------------------------------------------------------------------------ show_results


def _table_png(rows: list[list[str]], columns: list[str], widths: list[float], path: Path, title: str) -> Path:
    from fastlab.plots import pyplot, save_figure

    plt = pyplot()
    lines = [max(cell.count("\n") + 1 for cell in row) for row in rows]  # text lines per row
    fig, ax = plt.subplots(figsize=(11, 0.5 + 0.22 * (sum(lines) + 1)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=columns, colWidths=widths, cellLoc="left", bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, _), cell in table.get_celld().items():
        cell.set_height((lines[r - 1] if r else 1) / (sum(lines) + 1))
    ax.set_title(title, fontsize=10)
    return save_figure(fig, Path(path))


def _wrap(text: str, width: int = 95, lines: int = 3) -> str:
    return "\n".join(textwrap.wrap(text, width)[:lines]) or " "


@torch.no_grad()
def greedy_continue(model: nn.Module, ids: list[int], n: int) -> list[int]:
    """The ``n`` most likely next tokens, one at a time (never xxunk or xxpad)."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    out = []
    for _ in range(n):
        logits = model(x)[0, -1].float()  # (V,)
        logits[[UNK_ID, PAD_ID]] = float("-inf")
        nxt = int(logits.argmax())
        out.append(nxt)
        x = torch.cat([x, x.new_tensor([[nxt]])], dim=1)
    return out


def show_lm_results(learn, path: Path, n: int = 6, prompt_len: int = 8, n_words: int = 12) -> Path:
    """A few validation texts' first tokens and the model's greedy continuation, as a PNG."""
    data: TextBunch = learn.data
    vocab, rows = data.vocab, []
    for doc in data.valid.docs[:n]:
        ids = doc[:prompt_len].tolist()
        if ids[0] != BOS_ID:
            continue
        more = greedy_continue(learn.model, ids, n_words)
        rows.append([_wrap(detokenize([vocab[i] for i in ids]), 50, 2), _wrap(detokenize([vocab[i] for i in more]), 60, 2)])
    return _table_png(rows, ["prompt (validation text)", "greedy continuation"], [0.42, 0.58], path,
                      "language model: what comes next")


@torch.no_grad()
def show_classifier_results(learn, path: Path, n: int = 10) -> Path:
    """Validation texts (truncated) with their true and predicted labels, as a PNG table."""
    data: TextBunch = learn.data
    learn.model.eval()
    docs, labels = data.valid.docs, data.valid.labels
    # Spread the picks over the validation set (it is sorted by length, longest first).
    picks = sorted({round(i * (len(docs) - 1) / max(1, n - 1)) for i in range(min(n, len(docs)))})
    x = torch.nn.utils.rnn.pad_sequence([docs[i] for i in picks], batch_first=True, padding_value=PAD_ID)
    preds = learn.model(x.to(data.device)).argmax(dim=1).tolist()
    rows = [[_wrap(detokenize([data.vocab[t] for t in docs[i].tolist()])), data.classes[int(labels[i])],
             data.classes[p]] for i, p in zip(picks, preds)]
    return _table_png(rows, ["text", "true", "predicted"], [0.74, 0.13, 0.13], path, "text classifier: validation texts")


LANGUAGE_MODEL = registry.register("task", "language_model", TaskConfig, Task(
    name="language_model",
    targets="tokens",
    loss_func=lm_loss,
    metrics={"perplexity": Perplexity(), "accuracy": TokenAccuracy()},
    maximize=frozenset({"accuracy"}),
    data_kinds=frozenset({"text"}),
    arch_role="text",
    supports=frozenset(),  # token ids: no image to augment, mix or resize
    build_data=build_lm_data,
    model_from=build_lm,
    show_results=show_lm_results,
    inference="fastlab.inference.text:LanguageModelInference",
    meta_type=TextMeta,
))

TEXT_CLASSIFY = registry.register("task", "text_classify", TextClassifyTask, Task(
    name="text_classify",
    targets="category",
    loss_func=F.cross_entropy,
    metrics={"accuracy": accuracy, "error_rate": error_rate},
    maximize=frozenset({"accuracy"}),
    data_kinds=frozenset({"text"}),
    arch_role="text",
    supports=frozenset(),  # token ids: no image to augment, mix or resize
    build_data=build_classifier_data,
    model_from=build_classifier,
    show_results=show_classifier_results,
    inference="fastlab.inference.text:TextClassifyInference",
    meta_type=TextMeta,
    build_loss=classify_loss,
))
