"""``fastlab-predict --tta [N]``: each file's answer is the TTA mix of N passes augmented as the
model was trained (the aug config model.pt and bundles record), seeded, independent of the other
files; a model trained without augmentation, or a segment model, is refused with one line."""

from __future__ import annotations

import json

import pytest
import torch

from fastlab.cli.export import export
from fastlab.cli.predict import main as predict_main
from fastlab.cli.predict import predict_files
from fastlab.config import AugConfig
from fastlab.data.augment import (
    AugParams,
    draw_params,
    lighting,
    sampling_grid,
    sampling_matrix,
    warp_images,
)
from fastlab.inference import InferenceError, Predictor
from fastlab.inference.segment import SegmentInference, SegmentMeta
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread
from tests.inference.test_inference import digit_png

QUICK = ["schedule.epochs=1", "trainer.save_last=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny digits classifiers: trained with aug=no_flip, and with aug=none."""
    root = tmp_path_factory.mktemp("tta_runs")
    with one_thread():
        for name in ("no_flip", "none"):
            assert train(compose_cfg(f"aug={name}", *QUICK), run_dir=root / name)["status"] == "completed"
    return root / "no_flip", root / "none"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta_files")
    return [digit_png(root / f"d{i}.png", i)[0] for i in range(3)]


def by_hand(p: Predictor, x: torch.Tensor, n: int, beta: float, seed: int) -> torch.Tensor:
    """uint8 ``(B, 1, 16, 16)`` -> probabilities: the n transforms drawn from ``seed`` at once, pass
    j applying draw j to every image (one resampling, then lighting), lerped with the plain pass."""
    aug = AugConfig(**p.meta.config["aug"])
    drawn = draw_params(aug, n, torch.Generator().manual_seed(seed))
    x = x.float() / 255
    model = p.model

    def probs(xa):
        return model((xa - p.task.mean) / p.task.std).softmax(1)

    passes = []
    for j in range(n):
        pj = AugParams(**{k: v[j:j + 1].expand(len(x)) for k, v in vars(drawn).items()})  # draw j for every image
        mat = sampling_matrix(pj, 16, 16)
        xa = lighting(warp_images(x, sampling_grid(mat, 16, 16, x.device)), pj.brightness, pj.contrast)
        passes.append(probs(xa))
    return torch.lerp(torch.stack(passes).mean(0), probs(x), beta)


def test_model_pt_and_bundle_record_the_training_augmentation(runs, tmp_path):
    aug_run, _ = runs
    p = Predictor.load(aug_run)
    assert p.meta.config["aug"]["name"] == "no_flip" and p.tta_aug(4).max_rotate == 10.0
    bundle = Predictor.load(export(aug_run, tmp_path / "bundle"))
    assert bundle.tta_aug(4) == p.tta_aug(4)


def test_predict_tta_is_the_mix_of_its_passes_and_each_file_its_own(runs, files):
    aug_run, _ = runs
    p = Predictor.load(aug_run)
    x = torch.stack([p.preprocess(f) for f in files])
    with torch.no_grad():
        want = by_hand(p, x, 4, 0.25, 0)
    assert torch.allclose(p.forward_tta(x, p.tta_aug(4), 4, 0.25, 0), want, atol=1e-6)
    results = predict_files(str(aug_run), [str(f) for f in files], top_k=10, tta=4)
    for r, row in zip(results, want):
        got = {t["label"]: t["prob"] for t in r["top"]}
        assert [got[str(c)] for c in range(10)] == pytest.approx(row.tolist(), abs=1e-5)
    # the same answer predicted alone; the plain answer differs
    alone = predict_files(str(aug_run), [str(files[1])], top_k=10, tta=4)[0]
    assert [t["prob"] for t in alone["top"]] == pytest.approx([t["prob"] for t in results[1]["top"]], abs=1e-6)
    plain = predict_files(str(aug_run), [str(f) for f in files], top_k=10)
    assert any(abs(a["top"][0]["prob"] - b["top"][0]["prob"]) > 1e-4 for a, b in zip(plain, results))


def test_cli_predict_tta_is_deterministic(runs, files, capsys):
    aug_run, _ = runs
    outs = []
    for _ in range(2):
        predict_main([str(aug_run), *map(str, files), "--tta"])
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1] and [r["file"] for r in outs[0]] == [str(f) for f in files]
    predict_main([str(aug_run), "--tta", "2", "--seed", "3", *map(str, files)])
    other = json.loads(capsys.readouterr().out)
    assert other != outs[0]


@pytest.mark.parametrize("extra, fragment", [
    (["--tta"], "was trained with aug=none, so there is no augmentation to test with: drop --tta"),
    (["--tta", "0"], "--tta takes a positive number of augmented passes"),
])
def test_cli_predict_tta_refusals_are_one_line_exit_2(runs, files, capsys, extra, fragment):
    _, plain_run = runs
    with pytest.raises(SystemExit) as e:
        predict_main([str(plain_run), str(files[0]), *extra])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert e.value.code == 2 and captured.out == ""
    assert len(lines) == 1 and lines[0].startswith("fastlab-predict: error: ") and fragment in lines[0]


def test_segment_models_refuse_tta():
    meta = SegmentMeta(arch="unet", arch_config={}, task="segment", classes=["a", "b"], n_out=2, n_in=3, size=16,
                       mean=[0.5] * 3, std=[0.25] * 3, codes=["a", "b"])
    with pytest.raises(InferenceError, match="not masks: drop --tta for a segment model"):
        SegmentInference(meta).tta_kind()
