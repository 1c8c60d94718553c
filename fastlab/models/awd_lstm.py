"""AWD-LSTM (Merity et al. 2017) as ULMFiT uses it: a language model and a classifier that share
one encoder, the ``body`` (embedding + LSTM layers), so a language model's body loads into a
classifier (``fastlab.models.zoo.load_pretrained`` copies ``body.*``).

The encoder is stateless: the hidden state starts at zero for every batch (fastai carries it
over between a language model's consecutive batches). With short ``bptt`` this costs some
context, and it keeps the loop and validation free of hidden state.

Regularisation, each scaled by ``drop_mult`` (fastai's awd_lstm_lm_config / awd_lstm_clas_config):
``embed_p`` drops whole words from the embedding, ``input_p`` the embedded inputs, ``weight_p``
the LSTMs' hidden-to-hidden weights (DropConnect), ``hidden_p`` the outputs between LSTM layers,
``output_p`` what goes into the decoder or the head. Dropout masks of sequences are the same at
every time step (variational dropout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fastlab.config import ArchConfig, check, check_positive_ints
from fastlab.data.text.tokens import PAD_ID
from fastlab.registry import register

LM_DROPS = {"output_p": 0.1, "hidden_p": 0.15, "input_p": 0.25, "embed_p": 0.02, "weight_p": 0.2}
CLAS_DROPS = {"output_p": 0.4, "hidden_p": 0.3, "input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5}
CLAS_HEAD_P = 0.1  # fastai's ps for the head's hidden layer (not scaled by drop_mult)
EMB_INIT_RANGE = 0.5  # the embedding's uniform init (see AwdLstmEncoder)


@dataclass
class AwdLstmArch(ArchConfig):
    """AWD-LSTM (Merity et al.): embedding dropout, weight-dropped LSTM layers, the course's
    dropouts scaled by ``drop_mult``. Language model: tied decoder; classifier: concat pooling."""

    name: str = "awd_lstm"
    emb_sz: int = 128
    n_hid: int = 256
    n_layers: int = 3
    drop_mult: float = 0.5
    head_hidden: int = 50  # the classifier head's hidden layer (fastai's lin_ftrs=[50])

    def __post_init__(self) -> None:
        check_positive_ints(self, "arch", ("emb_sz", "n_hid", "n_layers", "head_hidden"))
        top = max(CLAS_DROPS.values())
        check(0 <= self.drop_mult * top < 1, f"arch.drop_mult={self.drop_mult} makes a dropout of "
              f"{self.drop_mult * top:g}: use 0 <= drop_mult < {1 / top:g}")


def scaled_drops(drops: dict[str, float], drop_mult: float) -> dict[str, float]:
    return {k: v * drop_mult for k, v in drops.items()}


class RNNDropout(nn.Module):
    """Dropout with one mask per sequence, shared over time: ``(B, T, F) -> (B, T, F)``."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)  # (B, 1, F)
        return x * mask


class WeightDropout(nn.Module):
    """DropConnect on an LSTM's hidden-to-hidden weights, fresh each forward in training.

    The LSTM keeps its own ``weight_hh_l0`` as the parameter (the raw weight, which the optimiser
    trains); each forward runs the LSTM through ``torch.func.functional_call`` with a dropped-out
    copy in its place, so gradients flow through the dropout into the raw weight.
    """

    def __init__(self, module: nn.LSTM, p: float, names: tuple[str, ...] = ("weight_hh_l0",)):
        super().__init__()
        self.module, self.p, self.names = module, p, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        weights = {n: F.dropout(getattr(self.module, n), self.p, self.training) for n in self.names}
        return functional_call(self.module, weights, (x,))


def init_lstm(lstm: nn.LSTM) -> None:
    """Each gate's input weights Xavier-uniform, its recurrent weights orthogonal, the forget
    gate's bias 1 (Jozefowicz et al. 2015). PyTorch's default, uniform(+-1/sqrt(hidden)), shrinks
    the signal about threefold per layer: a three-layer stack then starts with outputs near zero,
    and on a small corpus spends its whole budget predicting unigram frequencies."""
    h = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            chunks = p.view(4, h, -1) if p.ndim == 2 else p.view(4, h)  # gates i, f, g, o
            for gate in chunks:
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(gate)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(gate)
                else:
                    gate.zero_()
            if name.startswith("bias_ih"):
                chunks[1].fill_(1.0)


class AwdLstmEncoder(nn.Module):
    """Embedding and ``n_layers`` weight-dropped LSTMs: ``(B, T)`` ids -> ``(B, T, emb_sz)``.

    Hidden layers have ``n_hid`` units; the last has ``emb_sz`` so a language model's decoder can
    share the embedding's weights.
    """

    def __init__(self, vocab_sz: int, emb_sz: int, n_hid: int, n_layers: int, hidden_p: float, input_p: float,
                 embed_p: float, weight_p: float, pad_id: int = PAD_ID):
        super().__init__()
        self.embed_p, self.pad_id = embed_p, pad_id
        self.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=pad_id)
        with torch.no_grad():
            # fastai's initrange is 0.1 (for emb_sz 400 and Wikitext-103's budget). Measured on
            # pydocs with three layers: from +-0.1 the model stays at the unigram loss (about 5.55)
            # for its first hundreds of steps; from +-0.5 it is at 4.9 after two epochs.
            self.encoder.weight.uniform_(-EMB_INIT_RANGE, EMB_INIT_RANGE)
            self.encoder.weight[pad_id].zero_()
        sizes = [emb_sz] + [n_hid] * (n_layers - 1) + [emb_sz]
        lstms = [nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(n_layers)]
        for lstm in lstms:
            init_lstm(lstm)
        self.rnns = nn.ModuleList(WeightDropout(lstm, weight_p) for lstm in lstms)
        self.input_dp = RNNDropout(input_p)
        self.hidden_dps = nn.ModuleList(RNNDropout(hidden_p) for _ in range(n_layers))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T) -> (B, T, emb_sz)``; in training whole words (rows of the embedding) drop out."""
        weight = self.encoder.weight
        if self.training and self.embed_p > 0:
            mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - self.embed_p) / (1 - self.embed_p)
            weight = weight * mask  # (V, emb_sz)
        return F.embedding(x, weight, self.pad_id)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.input_dp(self.embed(x))  # (B, T, emb_sz)
        last = len(self.rnns) - 1
        for i, (rnn, hidden_dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            out, _ = rnn(out)  # (B, T, n_hid), or (B, T, emb_sz) for the last layer
            if i != last:
                out = hidden_dp(out)
        return out

    def groups(self) -> list[nn.Module]:
        """The embedding, then one group per LSTM layer (with its dropout)."""
        return [nn.Sequential(self.encoder), *(nn.Sequential(r, d) for r, d in zip(self.rnns, self.hidden_dps))]


def _encoder(cfg: AwdLstmArch, vocab_sz: int, drops: dict[str, float]) -> AwdLstmEncoder:
    return AwdLstmEncoder(vocab_sz, cfg.emb_sz, cfg.n_hid, cfg.n_layers, drops["hidden_p"], drops["input_p"],
                          drops["embed_p"], drops["weight_p"])


class AwdLstmLM(nn.Module):
    """Language model: ``(B, T)`` ids -> ``(B, T, vocab)`` next-token logits. The decoder's
    weight is the embedding's (tied, Press & Wolf 2017), so it adds only a bias."""

    def __init__(self, cfg: AwdLstmArch, vocab_sz: int):
        super().__init__()
        drops = scaled_drops(LM_DROPS, cfg.drop_mult)
        self.body = _encoder(cfg, vocab_sz, drops)
        self.output_dp = RNNDropout(drops["output_p"])
        self.decoder = nn.Linear(cfg.emb_sz, vocab_sz)
        self.decoder.weight = self.body.encoder.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.output_dp(self.body(x)))

    def layer_groups(self) -> list[nn.Module]:
        """Embedding, each LSTM, decoder. The tied weight trains with the embedding's group (an
        optimiser sees a shared parameter once); the decoder's group holds its bias."""
        return [*self.body.groups(), nn.Sequential(self.output_dp, self.decoder)]


def masked_concat_pool(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """fastai's concat pooling over a right-padded sequence, padding ignored.

    ``out (B, T, E)``, ``mask (B, T)`` true at real tokens -> ``(B, 3E)``: the output at each
    text's last token, the max and the mean over its tokens.
    """
    lengths = mask.sum(dim=1).clamp_min(1)  # (B,)
    last = out[torch.arange(out.shape[0], device=out.device), lengths - 1]  # (B, E)
    m = mask.unsqueeze(-1)  # (B, T, 1)
    top = out.masked_fill(~m, float("-inf")).max(dim=1).values  # (B, E)
    mean = (out * m).sum(dim=1) / lengths.unsqueeze(-1).to(out.dtype)  # (B, E)
    return torch.cat([last, top, mean], dim=1)


class AwdLstmClassifier(nn.Module):
    """Classifier: ``(B, T)`` right-padded ids -> ``(B, n_out)`` logits. The encoder's outputs
    are concat-pooled, then fast.ai's head: (batch norm, dropout, linear) twice, ReLU between."""

    def __init__(self, cfg: AwdLstmArch, vocab_sz: int, n_out: int):
        super().__init__()
        drops = scaled_drops(CLAS_DROPS, cfg.drop_mult)
        self.body = _encoder(cfg, vocab_sz, drops)
        n_pool = 3 * cfg.emb_sz
        self.head = nn.Sequential(
            nn.BatchNorm1d(n_pool),
            nn.Dropout(drops["output_p"]),
            nn.Linear(n_pool, cfg.head_hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(cfg.head_hidden),
            nn.Dropout(CLAS_HEAD_P),
            nn.Linear(cfg.head_hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x != self.body.pad_id  # (B, T)
        return self.head(masked_concat_pool(self.body(x), mask))

    def layer_groups(self) -> list[nn.Module]:
        """Embedding, each LSTM, head: ``n_layers + 2`` groups (ULMFiT's gradual unfreezing)."""
        return [*self.body.groups(), self.head]


@register("arch", "awd_lstm", AwdLstmArch, tags={"text"})
def awd_lstm(cfg: AwdLstmArch, vocab_sz: int, n_out: int | None = None) -> AwdLstmLM | AwdLstmClassifier:
    """The language model (``n_out`` None) or a classifier with ``n_out`` classes."""
    return AwdLstmLM(cfg, vocab_sz) if n_out is None else AwdLstmClassifier(cfg, vocab_sz, n_out)
