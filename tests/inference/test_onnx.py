"""``fastlab-export --format onnx``: small real runs of every image task exported to ONNX, predicted
and served by onnxruntime without PyTorch, answering what the PyTorch predictor answers; the
export check, and every refusal as one line (text and tables, a missing onnxruntime, --tta, an
ONNX bundle where weights are needed, a tampered model file)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from PIL import Image

from fastlab.cli.export import export
from fastlab.cli.export import main as export_main
from fastlab.cli.predict import load_predictor
from fastlab.cli.predict import main as predict_main
from fastlab.data.images.decode import decode_image
from fastlab.inference import (
    BUNDLE_META,
    BUNDLE_ONNX,
    BUNDLE_WEIGHTS,
    InferenceError,
    Predictor,
    read_model_file,
)
from fastlab.portable import OnnxPredictor
from fastlab.portable.images import decode_rgb
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread
from tests.inference.cases import compose, digit_png, shape_png

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
RUNS = {
    "classify": lambda zoo: compose("classify", zoo),
    "regress": lambda zoo: compose_cfg("task=regress", "schedule.epochs=1", f"paths.models={zoo}"),
    "points": lambda zoo: compose("points", zoo),
    "segment": lambda zoo: compose("segment", zoo),
}


@pytest.fixture(scope="module", autouse=True)
def zoo(tmp_path_factory):
    """The runs' model zoo; and PyTorch on one thread all module long (a shared CPU's threads wait
    on each other)."""
    with one_thread():
        yield tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="module")
def trained(zoo, tmp_path_factory):
    """``trained(name)``: (name, run dir, ONNX bundle, what fastlab-export printed, image files) of
    one image task, trained and exported once per module."""
    done: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in done:
            run_dir = tmp_path_factory.mktemp(name)
            assert train(RUNS[name](zoo), run_dir=run_dir)["status"] == "completed"
            said: list[str] = []
            bundle = export(run_dir, tmp_path_factory.mktemp("bundles") / name, "onnx", echo=said.append)
            done[name] = name, run_dir, bundle, said, images(tmp_path_factory.mktemp(f"{name}_inputs"), name)
        return done[name]

    return get


@pytest.fixture(params=list(RUNS))
def case(request, trained):
    return trained(request.param)


def images(root: Path, name: str) -> list[Path]:
    """Five inputs: the task's own picture, then seeded ones of other sizes and modes (grey, RGBA)."""
    files = [(digit_png if name in ("classify", "regress") else shape_png)(root / "first.png")]
    rng = np.random.default_rng(0)
    for i, (size, mode) in enumerate([((20, 20), "RGB"), ((37, 23), "L"), ((64, 48), "RGBA"), ((9, 13), "RGB")]):
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(root / f"{i}.png")
        files.append(root / f"{i}.png")
    return files


def cli(capsys, *args) -> list[dict]:
    predict_main([str(a) for a in args])
    return json.loads(capsys.readouterr().out)


def one_line_exit_2(capsys, main, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_onnx_bundle_is_a_checked_graph_with_a_dynamic_batch_axis(case):
    name, run_dir, bundle, said, _ = case
    assert sorted(p.name for p in bundle.iterdir()) == [BUNDLE_META, BUNDLE_ONNX]
    doc = json.loads((bundle / BUNDLE_META).read_text())
    assert doc["weights_format"] == "onnx" and doc["weights"] == BUNDLE_ONNX
    assert doc["onnx"]["output"] == {"classify": "probs", "segment": "codes"}.get(name, "values")
    model = onnx.load(str(bundle / BUNDLE_ONNX))
    onnx.checker.check_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # the batch axis is named, not fixed
    assert [d.dim_value for d in dims[1:]] == [doc["meta"]["n_in"], doc["meta"]["size"], doc["meta"]["size"]]
    assert model.opset_import[0].version == doc["onnx"]["opset"]
    assert len(said) == 1 and "largest absolute difference" in said[0]
    assert float(said[0].rsplit(" ", 1)[1]) < 1e-4


def test_onnx_predicts_what_pytorch_predicts(case, capsys):
    """The same files through fastlab-predict on the run dir (PyTorch) and on the ONNX bundle
    (onnxruntime): the same JSON keys and labels, numbers within float32 noise, the same masks."""
    name, run_dir, bundle, _, files = case
    want, got = cli(capsys, run_dir, *files), cli(capsys, bundle, *files)
    assert len(got) == len(want) == len(files)
    for w, g in zip(want, got):
        assert list(g) == list(w)  # the same keys in the same order
        assert g["file"] == w["file"]
        if name == "classify":
            assert g["label"] == w["label"]
            assert [t["label"] for t in g["top"]] == [t["label"] for t in w["top"]]
            assert np.allclose([t["prob"] for t in g["top"]], [t["prob"] for t in w["top"]], atol=1e-5)
        elif name == "segment":
            assert g["size"] == w["size"] and g["codes"] == w["codes"]
            total = w["size"][0] * w["size"][1]
            assert sum(abs(g["pixels"][c] - w["pixels"][c]) for c in w["codes"]) <= total // 500
        else:
            assert np.allclose(g["value"], w["value"], atol=1e-5)
            if name == "points":
                assert np.allclose(g["points"], w["points"], atol=1e-5)
    # The Python API too, in batches of 2 (the graph's batch axis is dynamic), and what it tells.
    onnx_p, torch_p = OnnxPredictor.load(bundle), Predictor.load(run_dir)
    assert onnx_p.info() == torch_p.info()
    batched = onnx_p.predict_many(files, bs=2)
    assert [r["label"] for r in batched] == [r["label"] for r in got]


def test_onnx_reads_images_as_training_decodes(tmp_path):
    """The ONNX runtime's Pillow decoding equals training's ``decode_image`` on hostile modes:
    grey, 16-bit grey, RGBA over white, palette with transparency, a JPEG turned by its EXIF tag."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    made = {"grey.png": Image.fromarray(rgb[..., 0], "L"),
            "grey16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),  # mode I;16
            "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
            "palette.gif": Image.fromarray(rgb).convert("P")}
    for name, im in made.items():
        if name == "palette.gif":
            im.info["transparency"] = 3
        im.save(tmp_path / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=90)
    for path in sorted(tmp_path.iterdir()):
        for size in (16, 50):
            want = decode_image(path.read_bytes(), size).permute(1, 2, 0).numpy()
            assert np.array_equal(decode_rgb(path.read_bytes(), size), want), (path.name, size)


def test_serving_an_onnx_bundle_never_imports_torch(trained, tmp_path):
    """fastlab-predict's and fastlab-serve's code over an ONNX bundle answer in a process that has not
    imported torch: in-process through starlette's TestClient (``sys.modules``), and as the real
    ``fastlab-serve`` on 127.0.0.1 (PyTorch's library is not mapped into the server's memory)."""
    _, run_dir, bundle, _, files = trained("classify")
    want = Predictor.load(run_dir).predict(files[0])["label"]
    code = f"""
import json, sys
from starlette.testclient import TestClient
from fastlab.cli.predict import load_predictor, predict_files
from fastlab.serve.app import create_app
predicted = predict_files({str(bundle)!r}, [{str(files[0])!r}])[0]["label"]
app = create_app(load_predictor({str(bundle)!r}))
with TestClient(app) as client:
    r = client.post("/predict", files={{"file": ("x.png", open({str(files[0])!r}, "rb").read(), "image/png")}})
    health = client.get("/health").json()
print(json.dumps({{"status": r.status_code, "label": r.json()["label"], "predicted": predicted, "task": health["task"],
                  "torch": "torch" in sys.modules, "inference": "fastlab.inference" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"status": 200, "label": want, "predicted": want, "task": "classify", "torch": False,
                    "inference": False}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN / "fastlab-serve"), str(bundle), "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "fastlab-serve did not answer /health within 60 s"
                time.sleep(0.2)
        r = httpx.post(url + "/predict", files={"file": ("x.png", files[0].read_bytes(), "image/png")}, timeout=30)
        assert r.status_code == 200 and r.json()["label"] == want
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "onnxruntime" in maps and "libtorch" not in maps
    finally:
        proc.terminate()
        proc.wait(30)


def test_onnx_refusals_are_one_line(trained, capsys, tmp_path):
    name, run_dir, bundle, _, files = trained("classify")
    err = one_line_exit_2(capsys, predict_main, bundle, files[0], "--tta", "2")
    assert "--tta" in err and "ONNX" in err
    with pytest.raises(InferenceError, match="ONNX bundle.*fastlab-export RUN OUT"):
        read_model_file(bundle)  # what needs the weights (interpret, a re-export) is told what to use
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in bundle.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    (tampered / BUNDLE_ONNX).write_bytes((tampered / BUNDLE_ONNX).read_bytes()[:-10])
    err = one_line_exit_2(capsys, predict_main, tampered, files[0])
    assert "sha256 differs" in err


def test_an_export_that_fails_its_check_leaves_nothing(trained, capsys, tmp_path, monkeypatch):
    name, run_dir, _, _, _ = trained("segment")
    import fastlab.inference.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # no difference passes: the refusal path
    err = one_line_exit_2(capsys, export_main, run_dir, tmp_path / "out", "--format", "onnx")
    assert "differs from PyTorch by up to" in err and "fastlab-export RUN OUT" in err
    assert not (tmp_path / "out").exists()


def test_onnx_export_replaces_a_safetensors_bundle_and_back(trained, tmp_path):
    name, run_dir, _, _, files = trained("regress")
    out = export(run_dir, tmp_path / "b")
    assert (out / BUNDLE_WEIGHTS).is_file()
    export(run_dir, out, "onnx", echo=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == [BUNDLE_META, BUNDLE_ONNX]
    assert isinstance(load_predictor(str(out)), OnnxPredictor)
    export(run_dir, out)
    assert sorted(p.name for p in out.iterdir()) == [BUNDLE_META, BUNDLE_WEIGHTS]
    assert isinstance(load_predictor(str(out)), Predictor)


@pytest.mark.parametrize("name", ["tabular", "language_model"])
def test_text_and_tables_refuse_onnx_export_with_one_line(name, zoo, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train(compose(name, zoo), run_dir=run_dir)["status"] == "completed"
    err = one_line_exit_2(capsys, export_main, run_dir, tmp_path / "out", "--format", "onnx")
    assert f"a {name} model cannot be exported to ONNX" in err and "fastlab-export RUN OUT" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing, main", [("onnxruntime", "fastlab.cli.predict"), ("onnxscript", "fastlab.cli.export")])
def test_a_missing_onnx_package_is_one_line_naming_the_extra(trained, missing, main, tmp_path):
    """Without onnxruntime (predict) or onnxscript (export): one line naming fastlab[onnx], exit 2."""
    name, run_dir, bundle, _, files = trained("classify")
    args = [str(bundle), str(files[0])] if main.endswith("predict") else [str(run_dir), str(tmp_path / "out"),
                                                                          "--format", "onnx"]
    code = (f"import sys; sys.modules[{missing!r}] = None  # import {missing} now fails\n"
            f"from {main} import main; main({args!r})")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "pip install 'fastlab[onnx]'" in out.stderr, out.stderr
    assert missing in out.stderr
    assert not (tmp_path / "out").exists()


def test_pil_and_array_inputs_read_alike(trained):
    name, _, bundle, _, files = trained("points")
    p = OnnxPredictor.load(bundle)
    with Image.open(files[0]) as im:
        from_pil = p.predict(im.copy())
    arr = p.preprocess(files[0])
    assert arr.dtype == np.uint8 and arr.shape == (3, p.meta.size, p.meta.size)
    assert p.predict(arr) == p.predict(files[0].read_bytes()) == from_pil
