"""One small real run per task's built-in experiment, and the inputs each task's tools read."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.conftest import compose_cfg

QUIET = ["trainer.progress=none", "trainer.plots=false"]
# A tiny AWD-LSTM on a 200-docstring subset: seconds per run on one core.
TEXT = ["arch.emb_sz=32", "arch.n_hid=48", "data.bptt=16", "data.max_len=32", "data.max_docs=200"]

EXPERIMENTS = {
    "classify": ["schedule.epochs=1"],  # the default digits classifier, shrunk by conftest.SMALL
    "points": ["+experiment=points", "data.n_images=120", "data.size=24", "arch.channels=[8,16]",
               "arch.head_hidden=16", "schedule.epochs=1", *QUIET],
    "segment": ["+experiment=segment_scenes", "data.n_images=48", "arch.channels=[8,16]", "schedule.epochs=1", *QUIET],
    "language_model": ["+experiment=ulmfit_lm", *TEXT, "data.unlabelled=false", "data.max_vocab=600",
                       "schedule.epochs=1", *QUIET],
    "text_classify": ["+experiment=ulmfit_classify", *TEXT, "schedule.freeze_epochs=0", "schedule.epochs=1", *QUIET],
    "tabular": ["+experiment=tabular", "schedule.epochs=1", *QUIET],
    "tabular_diabetes": ["+experiment=tabular_diabetes", "schedule.epochs=1", *QUIET],
}
IMAGE_CASES = ("classify", "points", "segment")
TEXT_CASES = ("language_model", "text_classify")
TABLE_CASES = ("tabular", "tabular_diabetes")




def compose(name: str, zoo: Path):
    return compose_cfg(*EXPERIMENTS[name], f"paths.models={zoo}", small=name == "classify")


@dataclass
class Inputs:
    """What the tools are given for one task: files for the CLI, one upload and one JSON body
    for the server."""

    files: list[Path]
    upload: tuple[str, bytes, str]  # (name, bytes, content type) of multipart field 'file'
    json_body: dict
    rows: list[dict] = field(default_factory=list)  # tabular: the CSV's rows as dicts


def digit_png(path: Path) -> Path:
    from sklearn.datasets import load_digits

    arr = (load_digits().images[0] * (255 / 16)).round().astype(np.uint8)
    Image.fromarray(arr, mode="L").resize((64, 64), Image.Resampling.BILINEAR).save(path)
    return path


def shape_png(path: Path) -> Path:
    """A 40x30 RGB picture (not square: inputs are squashed as in training) with a disc on stripes."""
    im = Image.new("RGB", (40, 30), (30, 30, 90))
    draw = ImageDraw.Draw(im)
    for x in range(0, 40, 6):
        draw.rectangle([x, 0, x + 2, 30], fill=(60, 60, 130))
    draw.ellipse([8, 6, 24, 22], fill=(230, 200, 40))
    im.save(path)
    return path


TEXT_1 = "Return a copy of the string with leading and trailing whitespace removed."
TEXT_2 = "Open the file and return a stream; raise OSError upon failure."


def table_csv(run_cfg, path: Path, n: int = 12) -> tuple[Path, list[dict]]:
    """The run's first ``n`` validation rows, raw, as a CSV (an empty cell where a value is missing)."""
    from fastlab.config import to_run_config
    from fastlab.data.place import Place
    from fastlab.tasks import get_task

    run = to_run_config(run_cfg)
    data = get_task("tabular").build_data(run, None, Place.of(run))
    cols = list(data.valid_rows)
    rows = [{c: data.valid_rows[c][i] for c in cols} for i in range(n)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in r.values()])
    return path, rows


def make_inputs(name: str, cfg, root: Path) -> Inputs:
    root.mkdir(parents=True, exist_ok=True)
    if name in IMAGE_CASES:
        f = (digit_png if name == "classify" else shape_png)(root / f"{name}.png")
        return Inputs([f], (f.name, f.read_bytes(), "image/png"), {"image": _b64(f.read_bytes())})
    if name in TEXT_CASES:
        files = [root / "a.txt", root / "b.txt"]
        files[0].write_text(TEXT_1)
        files[1].write_text(TEXT_2)
        return Inputs(files, ("a.txt", TEXT_1.encode(), "text/plain"), {"text": TEXT_1})
    f, rows = table_csv(cfg, root / "rows.csv")
    return Inputs([f], ("rows.csv", f.read_bytes(), "text/csv"), {"row": rows[0]}, rows)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def png_values(b64: str) -> np.ndarray:
    import base64

    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.mode == "P"
        return np.asarray(im)
