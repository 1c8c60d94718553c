"""Token loaders for the text tasks: a language model's token streams and a classifier's padded
batches, wrapped in a :class:`TextBunch` that meets the ``fastlab.data.base.Bunch`` contract."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from fastlab import registry
from fastlab.context import Keep
from fastlab.data.base import valid_batch_size
from fastlab.data.images.bunch import _label_key
from fastlab.data.text.sources import TextData, TextSource
from fastlab.data.text.tokens import PAD_ID, make_vocab, numericalize, tokenize
from fastlab.errors import ConfigError, DataError


class LMLoader:
    """A language model's batches: the texts' ids concatenated into one stream (texts shuffled by
    ``generator`` each epoch when ``shuffle``), cut into ``bs`` parallel rows and read ``bptt``
    tokens at a time. ``x (B, bptt)`` long, ``y (B, bptt)`` = the next token of each position."""

    def __init__(self, docs: Sequence[torch.Tensor], bs: int, bptt: int, shuffle: bool = False,
                 generator: torch.Generator | None = None):
        self.docs, self.bptt, self.shuffle, self.generator = list(docs), bptt, shuffle, generator
        n_tokens = sum(len(d) for d in self.docs)
        # Each row must hold at least one (x, y) pair; a small validation stream uses fewer rows.
        self.bs = min(bs, n_tokens // 2)
        self.n_cols = n_tokens // self.bs if self.bs else 0  # tokens per row
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> LMLoader:
        self.device = device
        return self

    def __len__(self) -> int:
        return -(-(self.n_cols - 1) // self.bptt) if self.n_cols > 1 else 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.docs), generator=self.generator).tolist() if self.shuffle else range(len(self.docs))
        stream = torch.cat([self.docs[i] for i in order])
        rows = stream[: self.bs * self.n_cols].view(self.bs, self.n_cols).to(self.device)  # (B, n_cols)
        for i in range(0, self.n_cols - 1, self.bptt):
            seq = min(self.bptt, self.n_cols - 1 - i)
            yield rows[:, i : i + seq], rows[:, i + 1 : i + 1 + seq]


class ClassifierLoader:
    """A classifier's batches: ``x (B, T)`` long, right-padded with xxpad to the batch's longest
    text, and ``y (B,)`` long. Training batches group texts of similar length (fastai's
    SortedDL): shuffle, sort within chunks of ``50 * bs``, then shuffle the batches; a ragged
    last batch is dropped (batch norm in the head). Validation runs in the given order."""

    def __init__(self, docs: Sequence[torch.Tensor], labels: torch.Tensor, bs: int, shuffle: bool = False,
                 generator: torch.Generator | None = None):
        self.docs, self.labels, self.bs = list(docs), labels, bs
        self.shuffle, self.generator = shuffle, generator
        self.drop_last = shuffle and len(self.docs) > bs
        self.lengths = torch.tensor([len(d) for d in self.docs])
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> ClassifierLoader:
        self.device = device
        return self

    def __len__(self) -> int:
        n = len(self.docs)
        return n // self.bs if self.drop_last else -(-n // self.bs)

    def _batches(self) -> list[list[int]]:
        n = len(self.docs)
        if not self.shuffle:
            return [list(range(b, min(n, b + self.bs))) for b in range(0, n, self.bs)]
        perm = torch.randperm(n, generator=self.generator)
        chunk = 50 * self.bs
        order = torch.cat([c[self.lengths[c].argsort(descending=True, stable=True)] for c in perm.split(chunk)]).tolist()
        batches = [order[b : b + self.bs] for b in range(0, len(self) * self.bs, self.bs)]
        return [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self._batches():
            x = torch.nn.utils.rnn.pad_sequence([self.docs[i] for i in idx], batch_first=True, padding_value=PAD_ID)
            yield x.to(self.device), self.labels[idx].to(self.device)


class TextBunch:
    """Loaders, vocabulary and classes of a text run.

    Attributes
    ----------
    train, valid : LMLoader or ClassifierLoader
    vocab : list of str
        Token of each id; the special tokens first (``xxunk`` 0, ``xxpad`` 1).
    classes : list of str, or None for a language model (its outputs are the vocabulary)
    c : int
        Model outputs: ``len(classes)``, or ``len(vocab)`` for a language model.
    """

    def __init__(self, train, valid, vocab: list[str], classes: list[str] | None,
                 train_items: list[str], valid_items: list[str], cfg: TextData):
        self.train, self.valid, self.vocab, self.classes = train, valid, vocab, classes
        self.c = len(classes) if classes is not None else len(vocab)
        self.train_items, self.valid_items = train_items, valid_items
        self.bptt, self.max_len = cfg.bptt, cfg.max_len
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str, max_resident_gb: float | None = None) -> TextBunch:
        self.device = torch.device(device)
        self.train.to(self.device)
        self.valid.to(self.device)
        return self

    def meta(self) -> dict[str, Any]:
        """What ``model.pt`` records: the vocabulary, so that a classifier can reuse it, and the classes."""
        return {"vocab": list(self.vocab), "classes": self.classes, "n_out": self.c,
                "bptt": self.bptt, "max_len": self.max_len}


def _vocab(train_tokens: list[list[str]], cfg: TextData, pretrained_meta: dict | None) -> list[str]:
    """The pretrained model's vocabulary when there is one (ULMFiT: token ids must mean what they
    meant to the language model), else one built from the training texts."""
    if pretrained_meta is None:
        return make_vocab(train_tokens, cfg.min_freq, cfg.max_vocab)
    vocab = pretrained_meta.get("vocab")
    if not isinstance(vocab, list) or not vocab:
        raise ConfigError(f"arch.pretrained holds a {pretrained_meta.get('arch')!r} model without a vocabulary: "
                          "use a checkpoint of task=language_model (e.g. +experiment=ulmfit_lm, save_as=<name>)")
    return [str(t) for t in vocab]


def _read_tokens(cfg: TextData, language_model: bool) -> tuple[TextSource, list[list[str]], list[list[str]]]:
    """``cfg``'s source and the tokens of its training texts (with the unlabelled ones for a
    language model) and validation texts."""
    src: TextSource = registry.get("data", cfg.name).builder(cfg)
    train_texts = src.train_texts + (src.unlabelled_texts if language_model else [])
    return src, [tokenize(t) for t in train_texts], [tokenize(t) for t in src.valid_texts]


def text_bunch(cfg: TextData, language_model: bool, seed: int, pretrained_meta: dict | None = None,
               keep: Keep | None = None) -> TextBunch:
    """Read ``cfg``'s source and build the loaders of a language model or a classifier.

    The language model learns from the training texts and the unlabelled ones, and validates on
    the validation texts: the classifier's validation texts stay unread by both. Training order
    is drawn from a generator seeded with ``seed`` (the training seed).
    """
    # A sweep worker reads and tokenizes its trials' texts once (``keep``, the run's): they depend
    # on data.* but the batch size, and no run changes them.
    key = (repr(dataclasses.replace(cfg, bs=1)), language_model)
    src, train_tok, valid_tok = (keep or Keep()).kept("text tokens", key, lambda: _read_tokens(cfg, language_model))
    train_items = src.train_items + (src.unlabelled_items if language_model else [])
    vocab = _vocab(train_tok, cfg, pretrained_meta)
    stoi = {t: i for i, t in enumerate(vocab)}
    gen = torch.Generator().manual_seed(seed)
    if language_model:
        train_ids = [torch.tensor(numericalize(t, stoi), dtype=torch.long) for t in train_tok]
        valid_ids = [torch.tensor(numericalize(t, stoi), dtype=torch.long) for t in valid_tok]
        train = LMLoader(train_ids, cfg.bs, cfg.bptt, shuffle=True, generator=gen)
        valid = LMLoader(valid_ids, cfg.bs, cfg.bptt)
        if len(train) == 0 or len(valid) == 0:
            raise DataError(f"data={cfg.name} has too few tokens for a language model ({sum(map(len, train_ids))} to "
                            f"train, {sum(map(len, valid_ids))} to validate): add texts or lower data.bs")
        return TextBunch(train, valid, vocab, None, train_items, src.valid_items, cfg)
    classes = sorted({*src.train_labels, *src.valid_labels}, key=_label_key)
    if len(classes) < 2:
        raise DataError(f"data={cfg.name} has a single label {classes}: a classifier needs texts of at least two labels")
    index = {c: i for i, c in enumerate(classes)}
    # Long texts keep their beginning: the encoder is stateless per batch, so it reads at most
    # max_len tokens, and the opening (xxbos, a docstring's summary line, a title) says most.
    train_ids = [torch.tensor(numericalize(t[: cfg.max_len], stoi), dtype=torch.long) for t in train_tok]
    valid_ids = [torch.tensor(numericalize(t[: cfg.max_len], stoi), dtype=torch.long) for t in valid_tok]
    # Validation in order of length (longest first) wastes little padding; valid_items follow it.
    by_len = sorted(range(len(valid_ids)), key=lambda i: -len(valid_ids[i]))
    valid_ids = [valid_ids[i] for i in by_len]
    valid_items = [src.valid_items[i] for i in by_len]
    y_train = torch.tensor([index[v] for v in src.train_labels], dtype=torch.long)
    y_valid = torch.tensor([index[src.valid_labels[i]] for i in by_len], dtype=torch.long)
    train = ClassifierLoader(train_ids, y_train, cfg.bs, shuffle=True, generator=gen)
    # texts vary in length: twice bs, as fastai (unless data.valid_bs)
    valid = ClassifierLoader(valid_ids, y_valid, valid_batch_size(cfg.bs, None, len(valid_ids), cfg.valid_bs))
    return TextBunch(train, valid, vocab, classes, train_items, valid_items, cfg)
