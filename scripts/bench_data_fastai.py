"""fastai's rows of ``scripts/bench_data.py``, run by an interpreter that has fastai.

    PYTHON_WITH_FASTAI scripts/bench_data_fastai.py --row fastai '{"path": ..., "size": 128, "threads": 2}'

``ImageDataLoaders.from_folder`` over a ``<class>/<image>`` folder (``valid_pct=0.2``, seed 42),
each image decoded and squished to ``(S, S)`` (``item_tfms=Resize(S, method="squish")``), batches
of 64 in two worker processes, scaled and normalised on the batch (``batch_tfms``) as fastlab's
are; then one pass over ``dls.train`` on the CPU, as ``bench_data.py`` times every side. Prints
one JSON line, the same fields as the other rows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark: its timing rule

from bench_data import BS, MEAN, STD, epoch, peaks  # noqa: E402


def row_fastai(spec: dict) -> dict:
    import torch
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageDataLoaders

    torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    dls = ImageDataLoaders.from_folder(spec["path"], valid_pct=0.2, seed=42, bs=BS, num_workers=2, device="cpu",
                                       item_tfms=Resize(spec["size"], method="squish"),
                                       batch_tfms=Normalize.from_stats(MEAN, STD))
    prepare = time.perf_counter() - start
    seconds, n = epoch(dls.train)
    return {"prepare_s": prepare, "epoch_s": seconds, "images": n, **peaks()}


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1:3] != ["--row", "fastai"]:
        sys.exit("usage: bench_data_fastai.py --row fastai SPEC")
    import warnings

    warnings.filterwarnings("ignore")
    print(json.dumps(row_fastai(json.loads(sys.argv[3]))))
