"""task=segment: generated scenes and CamVid-layout folders, the U-Net, void pixels, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from fastlab.config import to_run_config
from fastlab.data.generated.scenes import CODES, make_scenes
from fastlab.data.masks.bunch import IGNORE, MaskBunch, encode_masks
from fastlab.data.masks.sources import CamvidData, ScenesData, camvid
from fastlab.errors import ConfigError, DataError
from fastlab.models import create_model
from fastlab.models.unet import Unet, UnetArch, encoder_config
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from fastlab.tasks.segment import (
    ConfusionMetric,
    confusion_matrix,
    dice_of,
    mean_iou_of,
    per_class_dice,
    per_class_iou,
    pixel_accuracy_of,
    segment_loss,
)
from tests.conftest import compose_cfg
from tests.test_cli import run_cli

QUIET = ["trainer.progress=none", "trainer.plots=false"]


# ------------------------------------------------------------------------------ a CamVid folder

CAMVID_CODES = ["Sky", "Road", "Car", "Void"]


def write_camvid(root: Path, n: int = 12, w: int = 24, h: int = 20) -> Path:
    """``n`` scenes of sky over road with a car, ``w x h`` PNGs (not square, so resizing is
    exercised), palette masks ``<stem>_P.png`` with a Void border, codes.txt and valid.txt."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        horizon = int(rng.integers(h // 3, 2 * h // 3))
        mask = np.zeros((h, w), np.uint8)  # Sky
        mask[horizon:] = 1  # Road
        cx = int(rng.integers(2, w - 8))
        mask[horizon - 3:horizon + 2, cx:cx + 6] = 2  # Car
        mask[0, :] = 3  # Void: a border row, as CamVid's unlabelled pixels
        palette = np.array([[110, 170, 240], [90, 90, 90], [200, 30, 30], [0, 0, 0]], np.float64)
        img = palette[mask] + rng.normal(0, 20, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"f{i:02d}.png")
        m = Image.fromarray(mask, mode="L").convert("P")
        m.save(root / "labels" / f"f{i:02d}_P.png")
    (root / "codes.txt").write_text("\n".join(CAMVID_CODES) + "\n")
    (root / "valid.txt").write_text("f01.png\nf05.png\nf09.png\n")
    return root


@pytest.fixture
def camvid_dir(tmp_path) -> Path:
    return write_camvid(tmp_path / "camvid")


# ----------------------------------------------------------------------------- (1) scenes


def test_scenes_training_reaches_mean_iou(tmp_path):
    """A short real run (16 epochs of 600 generated scenes, ~1,000 steps; the full experiment runs
    2,500 and reaches 0.71). Predicting background everywhere scores a mean IoU of ~0.21 (IoU
    ~0.84 over 4 codes), finding the shapes without telling their kinds apart ~0.30. Measured
    0.41, 0.38, 0.46 with seeds 0, 1, 2: the bar of 0.33 asks for shape kinds, with margin."""
    # This test runs seed 0 on torch's default threads (2 on the 2-core test machine), re-measured
    # there: 0.480 (0.15 over the bar); the three seeds above did not record their threads.
    metrics = train(compose_cfg("+experiment=segment_scenes", "data.n_images=600", "schedule.epochs=16",
                                *QUIET, small=False), run_dir=tmp_path)
    assert metrics["status"] == "completed" and metrics["objective_name"] == "mean_iou"
    assert metrics["objective"] > 0.33
    assert metrics["final"]["dice"] >= metrics["final"]["mean_iou"]  # Dice >= IoU, code by code
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["meta"]["codes"] == CODES and ckpt["meta"]["void"] is None and ckpt["meta"]["n_out"] == 4


def test_scenes_are_deterministic_and_split_by_data_seed():
    x1, m1 = make_scenes(6, 24, scene_seed=3)
    x2, m2 = make_scenes(9, 24, scene_seed=3)
    assert torch.equal(x1, x2[:6]) and torch.equal(m1, m2[:6])  # scene i depends on (seed, i) only
    assert x1.shape == (6, 3, 24, 24) and x1.dtype == torch.uint8 and m1.shape == (6, 24, 24)
    assert set(m2.unique().tolist()) <= set(range(len(CODES))) and len(m2.unique()) > 1
    assert not torch.equal(make_scenes(6, 24, scene_seed=4)[0], x1)
    a = MaskBunch.from_config(ScenesData(n_images=20, size=16, seed=1), seed=0)
    b = MaskBunch.from_config(ScenesData(n_images=20, size=16, seed=1), seed=7)
    assert a.valid_items == b.valid_items and len(a.valid_items) == 4
    assert a.train.y.dtype == torch.long and a.train.y.shape == (16, 16, 16)


# ------------------------------------------------------------------------- (2) CamVid folder


def test_camvid_folder_trains_end_to_end(tmp_path, camvid_dir):
    run_dir = tmp_path / "run"
    metrics = train(compose_cfg("task=segment", "arch=unet", "data=camvid", f"data.path={camvid_dir}",
                                "data.size=16", "data.bs=4", "data.void_code=Void", "arch.channels=[8,16]",
                                "schedule.epochs=1", "trainer.progress=none", small=False), run_dir=run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert set(on_disk["final"]) >= {"valid_loss", "pixel_accuracy", "mean_iou", "dice"}
    assert (run_dir / "plots" / "show_results.png").stat().st_size > 0
    per_class = json.loads((run_dir / "plots" / "per_class.json").read_text())
    assert per_class["void"] == "Void" and per_class["codes"]["Void"]["pixels"] == 0  # never counted
    assert per_class["codes"]["Road"]["pixels"] > 0
    meta = torch.load(run_dir / "model.pt", weights_only=True)["meta"]
    assert meta["codes"] == CAMVID_CODES and meta["void"] == 3 and meta["size"] == 16


def test_camvid_split_and_resizing(camvid_dir):
    src = camvid(CamvidData(path=str(camvid_dir), size=16))
    assert src.valid_items == ["images/f01.png", "images/f05.png", "images/f09.png"]
    assert src.train_x.shape == (9, 3, 16, 16) and src.train_masks.shape == (9, 16, 16)
    # nearest-neighbour resizing keeps masks to the codes
    assert set(src.train_masks.unique().tolist()) == {0, 1, 2, 3}
    (camvid_dir / "valid.txt").unlink()
    a = camvid(CamvidData(path=str(camvid_dir), size=16, valid_pct=0.25, seed=5))
    b = camvid(CamvidData(path=str(camvid_dir), size=16, valid_pct=0.25, seed=5))
    assert a.valid_items == b.valid_items and len(a.valid_items) == 3


# ------------------------------------------------------------------------------- (3) void


def test_void_pixels_count_in_neither_loss_nor_metrics():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (2, 6, 6), generator=g, dtype=torch.uint8)
    y = encode_masks(masks, void=3)
    assert (y == IGNORE).sum() == (masks == 3).sum() > 0 and y.dtype == torch.long
    pred = torch.randn(2, 4, 6, 6, generator=g)
    other = pred.clone()
    other[(y == IGNORE).unsqueeze(1).expand_as(pred)] = 100 * torch.randn(int((y == IGNORE).sum()) * 4, generator=g)
    assert torch.allclose(segment_loss(pred, y), segment_loss(other, y))
    keep = y != IGNORE
    want = F.cross_entropy(pred.permute(0, 2, 3, 1)[keep], y[keep])
    assert torch.allclose(segment_loss(pred, y), want)
    for score in (pixel_accuracy_of, mean_iou_of, dice_of):
        a, b = ConfusionMetric(score), ConfusionMetric(score)
        a.accumulate(pred, y)
        b.accumulate(other, y)
        assert a.value() == b.value()
    assert confusion_matrix(pred.argmax(1), y, 4).sum() == keep.sum()
    # a batch of void only: loss 0 (not NaN, which would stop the run as diverged)
    assert segment_loss(pred, torch.full_like(y, IGNORE)).item() == 0.0


# -------------------------------------------------------------------------- (4) metric math


def test_metrics_match_sklearn():
    g = torch.Generator().manual_seed(1)
    c = 5
    y = torch.randint(0, c - 1, (3, 8, 8), generator=g)  # code 4 is never true: not "present"
    y[0, :2] = IGNORE
    pred = torch.randn(3, c, 8, 8, generator=g)
    keep = y != IGNORE
    t, p = y[keep].numpy(), pred.argmax(1)[keep].numpy()
    present = sorted(set(t.tolist()))

    metric = ConfusionMetric(mean_iou_of)
    metric.accumulate(pred[:2], y[:2])  # summed batch by batch, as the Recorder does
    metric.accumulate(pred[2:], y[2:])
    cm = metric.cm
    assert torch.equal(cm, confusion_matrix(pred.argmax(1), y, c))
    assert pixel_accuracy_of(cm) == pytest.approx(accuracy_score(t, p))
    assert metric.value() == pytest.approx(jaccard_score(t, p, labels=present, average="macro"))
    assert dice_of(cm) == pytest.approx(f1_score(t, p, labels=present, average="macro"))
    iou, dice = per_class_iou(cm), per_class_dice(cm)
    assert iou[:4].tolist() == pytest.approx(jaccard_score(t, p, labels=present, average=None).tolist())
    assert dice[:4].tolist() == pytest.approx(f1_score(t, p, labels=present, average=None).tolist())
    assert iou[4].isnan() and dice[4].isnan()


# ---------------------------------------------------------------------------- (5) bad input


def _break_missing_mask(root):
    (root / "labels" / "f03_P.png").unlink()


def _break_size(root):
    Image.new("L", (10, 10)).save(root / "labels" / "f03_P.png")


def _break_value(root):
    m = np.zeros((20, 24), np.uint8)
    m[:3, :3] = 7
    Image.fromarray(m, mode="L").save(root / "labels" / "f03_P.png")


def _break_rgb(root):
    Image.new("RGB", (24, 20)).save(root / "labels" / "f03_P.png")


def _break_codes(root):
    (root / "codes.txt").unlink()


def _break_valid_list(root):
    (root / "valid.txt").write_text("f01.png\nnope.png\n")


@pytest.mark.parametrize("breaker, cfg, fragment", [
    (_break_missing_mask, {}, "f03_P.png' of image"),
    (_break_size, {}, "f03_P.png' is 10x10 but its image"),
    (_break_value, {}, "holds value 7 (9 pixels) but"),
    (_break_rgb, {}, "f03_P.png' is a RGB image"),
    (_break_codes, {}, "codes.txt' does not exist"),
    (_break_valid_list, {}, "valid.txt' names 1 file(s) not in images/, e.g. 'nope.png'"),
    (None, {"void_code": "Vod"}, "data.void_code='Vod' is not a code of"),
])
def test_bad_camvid_input_is_one_line(camvid_dir, breaker, cfg, fragment):
    if breaker is not None:
        breaker(camvid_dir)
    with pytest.raises(DataError) as e:
        camvid(CamvidData(path=str(camvid_dir), size=16, **cfg))
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg
    if breaker is _break_value:
        assert "has 4 codes (values 0-3)" in msg
    if cfg:
        assert "codes.txt" in msg


def test_scenes_unknown_void_code_and_bad_encoder():
    with pytest.raises(ConfigError, match="data.void_code='sky' is not a code of the scenes"):
        MaskBunch.from_config(ScenesData(n_images=4, size=8, void_code="sky"))
    with pytest.raises(ConfigError, match="arch.encoder='vgg' is not known"):
        encoder_config(UnetArch(encoder="vgg"))


def test_cli_missing_mask_exits_2_with_one_line(tmp_path, camvid_dir):
    _break_missing_mask(camvid_dir)
    out = run_cli(["task=segment", "arch=unet", "data=camvid", f"data.path={camvid_dir}"], cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlab-train: error: mask ") and "f03_P.png" in lines[0]


def test_segment_needs_masks_data():
    with pytest.raises(ConfigError, match="task=segment learns from masks"):
        prepare(to_run_config(compose_cfg("task=segment", "arch=unet", small=False)))


# ----------------------------------------------------------------------------- (6) the U-Net


@pytest.mark.parametrize("encoder, groups", [("cnn", 3), ("resnet18", 3)])
def test_unet_shapes_keys_and_groups(encoder, groups):
    cfg = UnetArch(encoder=encoder, channels=[8, 16])
    model = Unet(cfg, 3, 5)
    out = model(torch.randn(2, 3, 36, 44))  # odd sizes along the way: 36 -> 18 -> 9 -> 5
    assert out.shape == (2, 5, 36, 44)
    classifier = create_model(encoder_config(cfg), 3, 7)
    body = {k: v.shape for k, v in classifier.state_dict().items() if k.startswith("body.")}
    assert {k: v.shape for k, v in model.state_dict().items() if k.startswith("body.")} == body
    assert len(model.layer_groups()) == len(classifier.layer_groups()) == groups  # encoder's + decoder


def test_unet_loads_a_pretrained_cnn_encoder(tmp_path, image_dirs):
    models = tmp_path / "models"
    pre = train(compose_cfg("data=folder", f"data.path={image_dirs['imagenet']}", "data.size=16",
                            "arch.channels=[8,16]", "arch.head_hidden=16", "schedule.epochs=1",
                            "save_as=tiny_cnn", f"paths.models={models}", *QUIET, small=False),
                run_dir=tmp_path / "pre")
    assert pre["status"] == "completed" and (models / "tiny_cnn.pt").is_file()
    overrides = ["+experiment=segment_scenes", "data.n_images=32", "data.size=16", "arch.channels=[8,16]",
                 "arch.pretrained=tiny_cnn", f"paths.models={models}", "schedule=fine_tune",
                 "schedule.epochs=1", "schedule.freeze_epochs=1", *QUIET]
    ckpt = torch.load(models / "tiny_cnn.pt", weights_only=True)
    prep = prepare(to_run_config(compose_cfg(*overrides, small=False)))
    body = {k: v for k, v in prep.model.state_dict().items() if k.startswith("body.")}
    assert body and all(torch.equal(v, ckpt["state_dict"][k]) for k, v in body.items())
    assert prep.data.mean == ckpt["meta"]["mean"]  # normalised as the encoder's source task
    metrics = train(compose_cfg(*overrides, small=False), run_dir=tmp_path / "seg")
    assert metrics["status"] == "completed"
    assert metrics["pretrained"]["loaded"] == len(body) > 0
    assert metrics["layer_groups"] == 2 + 1  # the cnn's two groups, then the decoder
    assert [s["frozen"] for s in metrics["stages"]] == [2, 0]  # decoder alone first, then all
