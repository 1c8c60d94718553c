"""Random state: seeding a run, and capturing every generator a run draws from so that a
finder can undo its draws and a resumed run can continue as if never stopped."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def random_states(loader_generator: torch.Generator | None = None) -> dict:
    """torch (CPU and CUDA), numpy, Python and the training loader's shuffling generator, as plain
    data and tensors only, so the result can be saved in a ``weights_only`` checkpoint."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "mt": list(mt), "gauss": py_gauss},
        "loader": loader_generator.get_state() if loader_generator is not None else None,
    }


def restore_random_states(states: dict, loader_generator: torch.Generator | None = None) -> None:
    """Put back what :func:`random_states` captured."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["mt"]), p["gauss"]))
    if states["loader"] is not None and loader_generator is not None:
        loader_generator.set_state(states["loader"])
