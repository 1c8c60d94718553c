"""fastai's side of ``scripts/bench_aug.py``, and the data and timing rule every side shares.

    PYTHON_WITH_FASTAI scripts/bench_aug_fastai.py '{"bs": 64, "threads": 2}'

fastai cannot be installed into fastlab's environment (``scripts/fastai_venv.sh`` makes one
beside it that reuses fastlab's torch), so ``bench_aug.py`` starts this file with that interpreter
(``--fastai-python``) and talks to it in JSON lines: it answers ``{"ready": true, ...}`` (or
``{"error": ...}`` when fastai does not import), then one ``{"images_per_s": ...}`` for each
``{"size": S, "batches": N, "device": D}`` it reads on stdin, until stdin closes. Staying up lets
the caller alternate fastai's windows with the other sides' instead of timing them hours apart.

This module imports only torch at the top, so ``bench_aug.py`` imports :func:`make_images` and
:func:`time_window` from it too: every side gets the same images and the same clock.

fastai's path is a training ``TfmdDL``'s ``after_batch`` as ``ImageDataLoaders(...,
batch_tfms=aug_transforms())`` builds it: ``IntToFloatTensor`` (uint8 -> [0, 1]), then
``aug_transforms()`` (Flip, Warp, Rotate and Zoom composed into one ``AffineCoordTfm``: one
``grid_sample``; Brightness and Contrast into one ``LightingTfm``), then ``Normalize``; a
``Pipeline`` with ``split_idx=0`` (training, so the ``RandTransform``s fire) applied to
``(TensorImage, TensorCategory)`` batches copied to the device first, as ``DataLoader.__iter__``
does before ``after_batch``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import partial

import torch

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images ``(n, 3, size, size)`` and labels ``(n,)`` on the host, the same numbers
    in every process (resampling costs the same whatever the pixels are)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=gen)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_window(run: Callable[[], object], images: int, device: str) -> float:
    """Images per second of ``run()``, which handles ``images`` images on ``device``: timed from the
    device's idle state to its idle state."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return images / (time.perf_counter() - start)


def describe(tfms) -> str:
    """The pipeline's steps, the composed ones with what they hold (fastai names a composed
    transform after its first part: "Flip" holds the whole affine change)."""
    steps = []
    for f in tfms.fs:
        if hasattr(f, "aff_fs"):
            steps.append(f"affine({len(f.aff_fs)} matrices + {len(f.coord_fs)} coord)")
        elif type(f).__name__ in ("Brightness", "Contrast") and hasattr(f, "fs"):
            steps.append(f"lighting({len(f.fs)})")
        else:
            steps.append(type(f).__name__)
    return " -> ".join(steps)


def serve(bs: int, threads: int) -> None:
    torch.set_num_threads(threads)  # the caller's, so both processes compute alike
    try:
        import fastai
        from fastai.data.transforms import IntToFloatTensor, Normalize
        from fastai.vision.augment import aug_transforms
        from fasttransform import Pipeline
    except Exception as e:  # any import failure is the row's reason, not a crash
        print(json.dumps({"error": f"fastai does not import: {type(e).__name__}: {e}"}), flush=True)
        return

    def pipeline(device: str):
        norm = Normalize.from_stats(IMAGENET_MEAN, IMAGENET_STD, cuda=False)
        norm.mean, norm.std = norm.mean.to(device), norm.std.to(device)
        return Pipeline([IntToFloatTensor(), *aug_transforms(), norm], split_idx=0)

    print(json.dumps({"ready": True, "version": fastai.__version__, "torch": torch.__version__,
                      "pipeline": describe(pipeline("cpu"))}), flush=True)
    pipelines: dict[str, object] = {}  # per device
    images: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # per (size, batches)
    for line in sys.stdin:
        req = json.loads(line)
        size, batches, device = req["size"], req["batches"], req["device"]
        if device not in pipelines:
            pipelines[device] = pipeline(device)
        if (size, batches) not in images:
            images[size, batches] = make_images(batches * bs, size)
        run = partial(run_batches, pipelines[device], *images[size, batches], bs, device)
        rate = time_window(run, batches * bs, device)
        print(json.dumps({"images_per_s": rate}), flush=True)


def run_batches(tfms, x: torch.Tensor, y: torch.Tensor, bs: int, device: str) -> None:
    """Each batch of ``x`` ``(N, 3, S, S)`` uint8 and ``y`` ``(N,)`` to ``device``, then through ``tfms``."""
    from fastai.torch_core import TensorCategory, TensorImage

    for b in range(0, len(x), bs):
        tfms((TensorImage(x[b:b + bs].to(device)), TensorCategory(y[b:b + bs].to(device))))


if __name__ == "__main__":
    serve(**json.loads(sys.argv[1]))
