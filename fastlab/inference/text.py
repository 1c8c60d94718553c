"""Inference of the ULMFiT tasks: text in; a label and probabilities (``text_classify``) or the
most likely next words (``language_model``) out. Texts are tokenised and numericalised with the
model's own vocabulary, by training's functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastlab.data.text.tokens import PAD_ID, UNK_ID, detokenize, numericalize, tokenize
from fastlab.inference.base import CPU, TaskInference, decode_probs
from fastlab.portable.errors import InputError
from fastlab.tasks.text import TextMeta

N_WORDS = 10  # how many words a language model continues a text with
MAX_TEXT_BYTES = 1_000_000  # a text file or upload beyond this is refused (a docstring is ~1 kB)


def _text_of(data: bytes, name: str) -> str:
    if len(data) > MAX_TEXT_BYTES:
        raise InputError(f"'{name}' has {len(data):,} bytes: give a text under {MAX_TEXT_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"'{name}' is not UTF-8 text: give a plain text file") from None


class TextInference(TaskInference):
    """Reading text: one string per input, from a file, ``--text``, an upload or ``{"text": ...}``."""

    input_kind = "text"
    json_hint = '{"text": "<the text>"}'
    onnx_refusal = "its texts are tokenised by training's tokenizer, which the ONNX runtime does not carry"

    def __init__(self, meta: TextMeta, device: torch.device = CPU):
        super().__init__(meta, device)
        self.stoi = {t: i for i, t in enumerate(meta.vocab)}

    def tokens(self, item: Any) -> list[int]:
        """A text -> its ids, ``xxbos`` first; an empty text is an ``InputError``."""
        if not isinstance(item, str):
            raise InputError(f"a {self.meta.task} model reads text: pass a str, got a {type(item).__name__}")
        if not item.strip():
            raise InputError("the text is empty: give at least one word")
        return numericalize(tokenize(item), self.stoi)

    def items_from_file(self, path: str) -> list[tuple[dict, Any]]:
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"text file '{path}' does not exist: check the file name (or pass --text 'the text')")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read text file '{path}' ({e.strerror}): check its permissions") from None
        return [({"file": path}, self._checked(_text_of(data, path), path))]

    def items_from_text(self, text: str) -> list[tuple[dict, Any]]:
        return [({"text": text}, self._checked(text, "--text"))]

    def _checked(self, text: str, name: str) -> str:
        if not text.strip():
            raise InputError(f"'{name}' is empty: give at least one word")
        return text

    def items_from_upload(self, data: bytes, name: str, **limits) -> tuple[list, bool]:
        return [self.read(self._checked(_text_of(data, name), name))], False

    def items_from_json(self, doc: Any, **limits) -> tuple[list, bool]:
        text = doc.get("text") if isinstance(doc, dict) else None
        if not isinstance(text, str):
            raise InputError(f"the JSON body must be {self.json_hint}: send the text as a JSON string")
        return [self.read(text)], False

    def info(self) -> dict:
        return {"input": "text", "vocab_size": len(self.meta.vocab)}

    def texts(self, docs: Sequence[torch.Tensor]) -> list[str]:
        return [detokenize([self.meta.vocab[t] for t in d.tolist()]) for d in docs]


class TextClassifyInference(TextInference):
    """``{"label", "top": [{"label", "prob"}, ...]}`` of a text, read as training read it (its
    first ``max_len`` tokens)."""

    def read(self, item: Any, **limits) -> torch.Tensor:
        return torch.tensor(self.tokens(item)[: self.meta.max_len], dtype=torch.long)  # (T,)

    def collate(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        # right-padded as training's ClassifierLoader pads: the model masks xxpad out when pooling
        return torch.nn.utils.rnn.pad_sequence(list(xs), batch_first=True, padding_value=PAD_ID)  # (B, T)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """ids ``(B, T)`` -> class probabilities ``(B, n_out)``."""
        return model(x.to(self.device)).float().softmax(dim=1).cpu()

    def decode(self, row: torch.Tensor, top_k: int = 3) -> dict:
        return decode_probs(row, self.meta.classes, top_k)

    def interpret(self, run, k: int, min_val: int, echo: Callable[[str], Any]) -> dict[str, Path]:
        from fastlab.interpret import Interpretation, classes_view, save_top_losses

        interp = Interpretation.from_loaded(run, classifier=True)
        texts = self.texts(run.data.valid.docs)  # in the order of the validation loader
        written = {"top_losses": save_top_losses(interp, k, texts=texts)}
        return {**written, **classes_view(interp, min_val, echo, "texts")}


class LanguageModelInference(TextInference):
    """``{"label": the continuation, "next_words": [...], "top": [{"label": token, "prob"}]}``: the
    ``N_WORDS`` most likely words after the text (greedy, never xxunk or xxpad), and the top-k
    candidates for the very next token."""

    def read(self, item: Any, **limits) -> torch.Tensor:
        # The model learnt from bptt-token windows: the text's last bptt tokens are its context.
        return torch.tensor(self.tokens(item)[-self.meta.bptt:], dtype=torch.long)  # (T,)

    def collate(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(xs)  # texts of different lengths continue one by one

    def forward(self, model: nn.Module, xs: list[torch.Tensor]) -> list[tuple[torch.Tensor, list[int]]]:
        """Each text ``(T,)`` -> (next-token probabilities ``(V,)``, the ``N_WORDS`` greedy ids)."""
        rows = []
        for ids in xs:
            x = ids.to(self.device)[None]  # (1, T)
            words, probs = [], None
            for _ in range(N_WORDS):
                logits = model(x)[0, -1].float()  # (V,)
                if probs is None:
                    probs = logits.softmax(dim=0).cpu()
                logits[[UNK_ID, PAD_ID]] = float("-inf")
                nxt = int(logits.argmax())
                words.append(nxt)
                x = torch.cat([x, x.new_tensor([[nxt]])], dim=1)
            rows.append((probs, words))
        return rows

    def decode(self, row: tuple[torch.Tensor, list[int]], top_k: int = 3) -> dict:
        probs, words = row
        vocab = self.meta.vocab
        tokens = [vocab[i] for i in words]
        return {"label": detokenize(tokens), "next_words": tokens, "top": decode_probs(probs, vocab, top_k)["top"]}

    def interpret(self, run, k: int, min_val: int, echo: Callable[[str], Any]) -> dict[str, Path]:
        """``top_losses.json``: the validation texts the model found hardest to predict (highest mean
        next-token cross-entropy), with their perplexity."""
        import math

        import torch.nn.functional as F

        from fastlab.rundir import write_json

        docs = [d for d in run.data.valid.docs if len(d) > 1]
        losses = []
        with torch.inference_mode():
            for d in docs:
                x = d.to(self.device)[None]  # (1, T)
                losses.append(float(F.cross_entropy(run.model(x[:, :-1])[0].float(), x[0, 1:])))
        order = sorted(range(len(docs)), key=lambda i: -losses[i])[:k]
        texts = self.texts([docs[i] for i in order])
        rows = [{"index": i, "text": t[:500], "tokens": len(docs[i]), "loss": losses[i],
                 "perplexity": math.exp(min(losses[i], 50))} for i, t in zip(order, texts)]
        out = run.out_dir
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "top_losses.json", {"n_valid": len(docs), "top_losses": rows})
        mean = sum(losses) / max(1, len(losses))
        echo(f"{len(docs)} validation texts, mean loss {mean:.4g} (perplexity {math.exp(min(mean, 50)):.4g})")
        for r in rows[:3]:
            echo(f"  loss {r['loss']:.3f}: {r['text'][:80]!r}")
        return {"top_losses": out / "top_losses.json"}
