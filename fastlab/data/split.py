"""The validation split: seeded by ``data.seed`` alone, so the training seed never moves it."""

from __future__ import annotations

import torch


def seeded_split(n: int, valid_pct: float, data_seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into sorted train and valid indices; ``round(n * valid_pct)`` (at
    least 1 when n > 1) are validated. Items must be in a stable order (e.g. sorted paths)."""
    n_valid = min(n - 1, max(1, round(n * valid_pct))) if n > 1 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(data_seed)).tolist()
    valid = sorted(perm[:n_valid])
    valid_set = set(valid)
    return [i for i in range(n) if i not in valid_set], valid
