"""fast.ai's TabularModel: entity embeddings and continuous columns into an MLP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fastlab.config import ArchConfig, check
from fastlab.registry import register


@dataclass
class TabularArch(ArchConfig):
    """fast.ai's tabular model: entity embeddings (size rule min(600, 1.6 n^0.56)) and
    continuous columns into an MLP with batch norm and dropout."""

    name: str = "tabular_mlp"
    layers: list[int] = field(default_factory=lambda: [200, 100])
    ps: float = 0.1  # dropout of the hidden layers
    emb_drop: float = 0.0

    def __post_init__(self) -> None:
        check(all(n > 0 for n in self.layers) and 0.0 <= self.ps < 1.0 and 0.0 <= self.emb_drop < 1.0,
              f"arch.layers={list(self.layers)} must be positive sizes and arch.ps={self.ps}, "
              f"arch.emb_drop={self.emb_drop} must lie in [0, 1): e.g. arch.layers=[200,100] arch.ps=0.1")


def emb_sz_rule(n_cat: int) -> int:
    """fast.ai's embedding width for a column of ``n_cat`` values (``#na#`` included)."""
    return min(600, round(1.6 * n_cat**0.56))


class TabularModel(nn.Module):
    """``((cats (B, n_cat) long, conts (B, n_cont) float)) -> (B, n_out)``.

    One embedding per categorical column (width by :func:`emb_sz_rule`) followed by dropout
    ``emb_drop``; batch norm over the continuous columns; then per hidden size
    Linear -> ReLU -> BatchNorm1d -> Dropout(ps) (fast.ai's ``LinBnDrop`` with ``lin_first``, the
    Linear without bias since batch norm follows), and a final Linear.

    Regression (``y_mean``/``y_std`` given): the final Linear predicts the standardised target and
    the model returns ``out * y_std + y_mean``, in the target's own units. Starting at the
    training mean with unit-scale weights keeps training well conditioned, and, unlike fast.ai's
    ``y_range`` sigmoid, it needs no bounds and never saturates. The statistics are buffers, so
    ``model.pt`` carries them.

    Layer groups (for discriminative rates and freezing): ``[embeddings + continuous batch norm,
    hidden layers, final Linear]``.
    """

    def __init__(self, emb_sizes: Sequence[int], n_cont: int, n_out: int, layers: Sequence[int],
                 ps: float = 0.0, emb_drop: float = 0.0, y_mean: float | None = None, y_std: float | None = None):
        super().__init__()
        self.embeds = nn.ModuleList([nn.Embedding(n, emb_sz_rule(n)) for n in emb_sizes])
        self.emb_drop = nn.Dropout(emb_drop)
        self.bn_cont = nn.BatchNorm1d(n_cont) if n_cont else nn.Identity()
        self.n_cont = n_cont
        n_in = sum(e.embedding_dim for e in self.embeds) + n_cont
        sizes = [n_in, *layers]
        body = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            body += [nn.Linear(a, b, bias=False), nn.ReLU(inplace=True), nn.BatchNorm1d(b), nn.Dropout(ps)]
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(sizes[-1], n_out)
        self.regression = y_mean is not None
        self.register_buffer("y_mean", torch.tensor(float(y_mean or 0.0)))
        self.register_buffer("y_std", torch.tensor(float(y_std or 1.0)))

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x_cat, x_cont = x  # (B, n_cat), (B, n_cont)
        parts = []
        if self.embeds:
            emb = torch.cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], dim=1)  # (B, sum emb)
            parts.append(self.emb_drop(emb))
        if self.n_cont:
            parts.append(self.bn_cont(x_cont))
        out = self.head(self.body(torch.cat(parts, dim=1)))  # (B, n_out)
        # in float32: under bf16 autocast a value near 150 would otherwise be rounded to ~1
        return out.float() * self.y_std + self.y_mean if self.regression else out

    def layer_groups(self) -> list[nn.Module]:
        return [nn.ModuleList([self.embeds, self.bn_cont]), self.body, self.head]


@register("arch", "tabular_mlp", TabularArch, tags={"table"})
def tabular_mlp(cfg: TabularArch, emb_sizes: Sequence[int], n_cont: int, n_out: int,
                y_mean: float | None = None, y_std: float | None = None) -> TabularModel:
    """fast.ai's tabular model for columns of ``emb_sizes`` categories and ``n_cont`` numbers."""
    return TabularModel(emb_sizes, n_cont, n_out, cfg.layers, cfg.ps, cfg.emb_drop, y_mean, y_std)
