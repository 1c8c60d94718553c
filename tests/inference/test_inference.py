"""Using a trained model: loading run dirs and bundles, preprocessing as training did, predicting,
``fastlab-export`` and ``fastlab-predict``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastlab.cli.export import export
from fastlab.cli.export import main as export_main
from fastlab.cli.predict import main as predict_main
from fastlab.config import to_run_config
from fastlab.data import DataBunch
from fastlab.data.images.bunch import TensorLoader
from fastlab.data.images.decode import load_image
from fastlab.inference import (
    BUNDLE_META,
    BUNDLE_WEIGHTS,
    ImageInputError,
    ImageTooLarge,
    InferenceError,
    ModelMeta,
    Predictor,
    UnsupportedImage,
    build_model,
    read_model_file,
    to_channels,
)
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread

BIN = Path(sys.executable).parent




@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny digits classifier (1 channel, 16 px) and its composed config."""
    cfg = compose_cfg()
    run_dir = tmp_path_factory.mktemp("digits_run")
    with one_thread():
        metrics = train(cfg, run_dir=run_dir)
    assert metrics["status"] == "completed"
    return run_dir, cfg, metrics


@pytest.fixture(scope="module")
def bundle(digits_run, tmp_path_factory):
    return export(digits_run[0], tmp_path_factory.mktemp("bundles") / "digits")


@pytest.fixture(scope="module")
def valid_pngs(digits_run, tmp_path_factory):
    """The run's validation images, exactly as training held them ``(N, 1, 16, 16)`` uint8,
    saved as grey PNG files; with their class indices."""
    data = DataBunch.from_config(to_run_config(digits_run[1]).data)
    root = tmp_path_factory.mktemp("valid_pngs")
    x, y = data.valid.x, data.valid.y
    paths = []
    for i, img in enumerate(x):
        paths.append(root / f"{i}.png")
        Image.fromarray(img[0].numpy(), mode="L").save(paths[-1])
    return paths, x, y, data


def digit_png(path: Path, index: int = 0, px: int = 64) -> tuple[Path, int]:
    """An sklearn digit, white on black, upscaled to ``px`` (what a user would upload)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    arr = (d.images[index] * (255 / 16)).round().astype(np.uint8)
    Image.fromarray(arr, mode="L").resize((px, px), Image.Resampling.BILINEAR).save(path)
    return path, int(d.target[index])


# ------------------------------------------------------------------------------ preprocessing


def test_files_decode_to_exactly_the_training_tensors_and_predict_as_validation_did(digits_run, valid_pngs):
    run_dir, _, metrics = digits_run
    paths, x, y, _ = valid_pngs
    p = Predictor.load(run_dir)
    decoded = torch.stack([p.preprocess(path) for path in paths])
    assert decoded.dtype == torch.uint8 and torch.equal(decoded, x)  # (N, 1, 16, 16), bit for bit
    # Training's normalisation with the run's recorded statistics (recomputing them may differ
    # in the last bit: a float sum's order depends on the thread count).
    loader = TensorLoader(x, y, 8, torch.tensor(p.meta.mean), torch.tensor(p.meta.std))
    assert torch.equal(p.normalize(x), loader.normalize(x))
    results = p.predict_many(paths, top_k=10)
    acc = np.mean([int(r["label"]) == int(t) for r, t in zip(results, y)])
    # The same model on the same validation tensors: the run's own accuracy, up to argmax ties.
    assert acc == pytest.approx(metrics["final"]["accuracy"], abs=1.5 / len(y))
    probs = [sum(t["prob"] for t in r["top"]) for r in results]
    assert probs == pytest.approx([1.0] * len(results), abs=1e-5)


def test_bytes_pil_and_path_share_one_decode(digits_run, tmp_path):
    p = Predictor.load(digits_run[0])
    path, _ = digit_png(tmp_path / "d.png")
    via_path = p.preprocess(path)
    assert via_path.shape == (1, 16, 16)
    assert torch.equal(p.preprocess(path.read_bytes()), via_path)
    with Image.open(path) as im:
        assert torch.equal(p.preprocess(im.convert("RGB")), via_path)
    assert p.predict(path) == p.predict(path.read_bytes())


def test_grey_conversion_matches_pillow_L():
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8))
    x = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)  # (3, 9, 11)
    assert torch.equal(to_channels(x, 1)[0], torch.from_numpy(np.asarray(rgb.convert("L")).copy()))
    assert to_channels(x, 3) is x


def test_rgb_model_decodes_like_load_image(image_dirs, tmp_path):
    run_dir = tmp_path / "folder_run"
    with one_thread():
        train(compose_cfg("data=folder", f"data.path={image_dirs['imagenet']}", "schedule.epochs=1"), run_dir=run_dir)
    p = Predictor.load(run_dir)
    assert p.meta.n_in == 3 and p.meta.classes == ["one", "two", "zero"]
    files = sorted((image_dirs["imagenet"] / "valid").rglob("*.*"))[:6]  # PNG and JPEG
    for f in files:
        assert torch.equal(p.preprocess(f), load_image(f, 16))
    r = p.predict(files[0], top_k=5)
    assert r["label"] in p.meta.classes and len(r["top"]) == 3  # top_k is capped at the class count


def test_regression_model_predicts_a_value(digits_run, tmp_path):
    # A regression checkpoint as fastlab-train writes one (untrained: only the decoding matters).
    ckpt = torch.load(digits_run[0] / "model.pt", weights_only=True)
    meta = dict(ckpt["meta"], task="regress", classes=None, n_out=1)
    model = build_model(ModelMeta.from_dict(dict(meta, n_out=10, task="classify", classes=list("0123456789")), "x"),
                        ckpt["state_dict"])
    model.head[-1] = torch.nn.Linear(model.head[-1].in_features, 1)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp_path / "model.pt")
    path, _ = digit_png(tmp_path / "d.png")
    r = Predictor.load(tmp_path).predict(path)
    assert r["top"] == [] and isinstance(r["value"], float) and r["label"] == f"{r['value']:.4g}"


@pytest.mark.parametrize("make, error, fragment", [
    (lambda d: d / "missing.png", ImageInputError, "does not exist"),
    (lambda d: d, ImageInputError, "is a folder: give image files"),
    (lambda d: _write(d / "a.png", b"not an image at all"), UnsupportedImage, "is not an image Pillow can read"),
    (lambda d: _write(d / "e.png", b""), UnsupportedImage, "is empty"),
    (lambda d: _write(d / "t.png", _png_bytes((64, 64))[:120]), ImageInputError, "truncated or corrupt"),
    (lambda d: _write(d / "i.ico", _png_bytes((16, 16), "ICO")), UnsupportedImage, "in ICO format"),
])
def test_bad_images_are_named_with_a_fix(digits_run, tmp_path, make, error, fragment):
    p = Predictor.load(digits_run[0])
    with pytest.raises(error, match=fragment) as e:
        p.preprocess(make(tmp_path))
    assert "\n" not in str(e.value) and ": " in str(e.value)


def test_too_many_pixels_is_refused_before_decoding(digits_run):
    p = Predictor.load(digits_run[0])
    with pytest.raises(ImageTooLarge, match="400x300 pixels"):
        p.preprocess(_png_bytes((400, 300)), max_pixels=100_000)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png_bytes(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format=fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------------ loading


def test_run_dir_model_pt_and_bundle_predict_alike(digits_run, bundle, valid_pngs):
    x = valid_pngs[1][:32]
    outs = [Predictor.load(src).forward(x) for src in (digits_run[0], digits_run[0] / "model.pt", bundle,
                                                       bundle / BUNDLE_META)]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def test_bundle_is_safetensors_and_json_and_stands_alone(digits_run, bundle, tmp_path):
    assert sorted(p.name for p in bundle.iterdir()) == [BUNDLE_META, BUNDLE_WEIGHTS]
    doc = json.loads((bundle / BUNDLE_META).read_text())
    assert doc["format"] == "fastlab-bundle" and doc["version"] == 1
    meta = doc["meta"]
    assert {meta[k] for k in ("arch", "task", "n_in", "size")} == {"cnn", "classify", 1, 16}
    assert meta["classes"] == [str(i) for i in range(10)] and len(meta["mean"]) == 1
    blob = (bundle / BUNDLE_WEIGHTS).read_bytes()
    assert not blob.startswith((b"PK", b"\x80"))  # neither a torch zip nor a pickle
    # A copy elsewhere, with the run dir (and its config) gone, still loads and predicts.
    copy = shutil.copytree(bundle, tmp_path / "elsewhere")
    run_copy = shutil.copytree(digits_run[0], tmp_path / "run")
    state, _ = read_model_file(run_copy)
    shutil.rmtree(run_copy)
    p = Predictor.load(copy)
    for k, v in p.model.state_dict().items():
        assert torch.equal(v, state[k])


class NotData:  # pickling this needs code: weights_only loading must refuse it
    pass


def _bad_sources(root: Path, bundle: Path, run_dir: Path):
    """(name, path, message fragment): inputs every loader must refuse with one clear line."""
    (root / "empty").mkdir()
    _write(root / "junk.pt", b"junk")
    torch.save({"state_dict": {}, "meta": NotData()}, root / "code.pt")
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    torch.save({"state_dict": ckpt["state_dict"], "meta": {"arch": "cnn"}}, root / "nometa.pt")
    meta = dict(ckpt["meta"], n_out=3, classes=["a", "b", "c"])
    torch.save({"state_dict": ckpt["state_dict"], "meta": meta}, root / "mismatch.pt")
    tampered = shutil.copytree(bundle, root / "tampered")
    (tampered / BUNDLE_WEIGHTS).write_bytes((bundle / BUNDLE_WEIGHTS).read_bytes()[:-4] + b"\0\0\0\0")
    old = shutil.copytree(bundle, root / "old")
    doc = json.loads((old / BUNDLE_META).read_text())
    (old / BUNDLE_META).write_text(json.dumps(dict(doc, version=99)))
    return [
        ("missing", root / "nope", "does not exist"),
        ("empty dir", root / "empty", "holds neither model.pt nor meta.json"),
        ("junk", root / "junk.pt", "cannot read checkpoint"),
        ("code", root / "code.pt", "cannot read checkpoint"),
        ("no meta", root / "nometa.pt", "lacks metadata"),
        ("shape mismatch", root / "mismatch.pt", "do not fit arch cnn"),
        ("tampered", tampered, "sha256 differs"),
        ("old version", old, "has version 99"),
    ]


def test_bad_model_files_are_refused_with_one_line(digits_run, bundle, tmp_path):
    for name, path, fragment in _bad_sources(tmp_path, bundle, digits_run[0]):
        with pytest.raises(InferenceError) as e:
            Predictor.load(path)
        msg = str(e.value)
        assert fragment in msg and "\n" not in msg, (name, msg)


def test_unknown_device_is_refused(digits_run):
    with pytest.raises(InferenceError, match="device 'gpu' is not known"):
        Predictor.load(digits_run[0], device="gpu")


def test_export_refuses_a_folder_with_other_files(digits_run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(InferenceError, match="other files"):
        export(digits_run[0], tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    again = export(digits_run[0], export(digits_run[0], tmp_path / "b"))  # re-export over a bundle
    assert sorted(p.name for p in again.iterdir()) == [BUNDLE_META, BUNDLE_WEIGHTS]


# ------------------------------------------------------------------------------ CLIs


def test_cli_export_then_predict(digits_run, tmp_path):
    run_dir = digits_run[0]
    files = [digit_png(tmp_path / f"d{i}.png", i)[0] for i in range(3)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([str(BIN / "fastlab-export"), str(run_dir), str(tmp_path / "bundle")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([str(BIN / "fastlab-predict"), str(tmp_path / "bundle"), *map(str, files), "--top-k", "2"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [r["file"] for r in results] == [str(f) for f in files]
    assert all(len(r["top"]) == 2 and r["label"] == r["top"][0]["label"] for r in results)
    expected = Predictor.load(run_dir).predict_many(files, top_k=2)
    for r, e in zip(results, expected):
        assert [t["label"] for t in r["top"]] == [t["label"] for t in e["top"]]
        assert [t["prob"] for t in r["top"]] == pytest.approx([t["prob"] for t in e["top"]], abs=1e-5)


@pytest.mark.parametrize("args, fragment", [
    (["{run}", "{tmp}/nope.png"], "image '{tmp}/nope.png' does not exist"),
    (["{run}", "{tmp}/good.png", "{tmp}/bad.png"], "'{tmp}/bad.png' is not an image Pillow can read"),
    (["{tmp}/norun", "{tmp}/good.png"], "'{tmp}/norun' does not exist"),
    (["{run}", "{tmp}/good.png", "--top-k", "0"], "top_k must be a positive integer"),
])
def test_cli_predict_errors_are_one_line_exit_2(digits_run, tmp_path, capsys, args, fragment):
    digit_png(tmp_path / "good.png")
    _write(tmp_path / "bad.png", b"hello")
    fill = {"run": digits_run[0], "tmp": tmp_path}
    with pytest.raises(SystemExit) as e:
        predict_main([a.format(**fill) for a in args])
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastlab-predict: error: ") and fragment.format(**fill) in lines[0]


def test_cli_export_error_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export_main([str(tmp_path), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "holds neither model.pt nor meta.json" in err[0]
    assert not (tmp_path / "out").exists()
