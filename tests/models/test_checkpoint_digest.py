"""A damaged checkpoint is named, not half-loaded: ``torch.load`` checks no checksum (a flipped
byte in a tensor loads silently), so every checkpoint fastlab writes carries the SHA-256 of its
content, checked when it is read back (``model.pt``, ``best.pt``, ``last.pt``, the zoo)."""

from __future__ import annotations

import shutil

import pytest
import torch

from fastlab.cli.predict import main as predict_main
from fastlab.errors import ConfigError
from fastlab.models.zoo import load_plain, read_checkpoint
from fastlab.rundir import INTEGRITY, content_digest, save_checkpoint
from tests.inference.test_inference import digit_png, digits_run  # noqa: F401 (a fixture)

WEIGHTS = torch.arange(4096, dtype=torch.float32)


def flip_a_weight_byte(path, weights: torch.Tensor = WEIGHTS, at: int = 2000) -> None:
    """Flip one byte inside the stored bytes of ``weights`` (the zip stores them uncompressed):
    the file stays a valid zip and a valid pickle; only the tensor changes."""
    data = bytearray(path.read_bytes())
    raw = weights.numpy().tobytes()
    start = data.find(raw[at:at + 32])
    assert start > 0, "the tensor's bytes are not in the file"
    data[start] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_checkpoint_round_trips_with_its_digest_hidden(tmp_path):
    obj = {"state_dict": {"w": WEIGHTS, "b": torch.zeros(3, dtype=torch.bfloat16)},
           "meta": {"arch": "x", "sizes": (1, 2), "lr": 1e-3, "none": None}}
    save_checkpoint(tmp_path / "m.pt", obj)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw[INTEGRITY]["sha256"] == content_digest(obj)
    back = load_plain(tmp_path / "m.pt")
    assert INTEGRITY not in back and set(back) == {"state_dict", "meta"}
    assert torch.equal(back["state_dict"]["w"], WEIGHTS) and back["meta"]["sizes"] == (1, 2)


def test_a_flipped_byte_in_a_tensor_is_named_not_loaded(tmp_path):
    save_checkpoint(tmp_path / "m.pt", {"state_dict": {"w": WEIGHTS}, "meta": {}})
    flip_a_weight_byte(tmp_path / "m.pt")
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # torch itself loads it, changed
    assert not torch.equal(raw["state_dict"]["w"], WEIGHTS)
    with pytest.raises(ConfigError) as e:
        read_checkpoint(tmp_path / "m.pt")
    msg = str(e.value)
    assert "\n" not in msg and f"checkpoint '{tmp_path / 'm.pt'}' is damaged" in msg
    assert "SHA-256" in msg


def test_a_checkpoint_without_a_digest_still_loads(tmp_path):
    """Files written before digests (and other tools' .pt files) load as before."""
    torch.save({"state_dict": {"w": WEIGHTS}, "meta": {}}, tmp_path / "old.pt")
    assert torch.equal(read_checkpoint(tmp_path / "old.pt")["state_dict"]["w"], WEIGHTS)


def test_fastlab_predict_names_a_damaged_model_pt(digits_run, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(digits_run[0], run)
    weights = next(v for v in load_plain(run / "model.pt")["state_dict"].values()
                   if v.dtype == torch.float32 and v.numel() >= 64)
    flip_a_weight_byte(run / "model.pt", weights, at=4 * (weights.numel() // 2))
    digit_png(tmp_path / "d.png")
    with pytest.raises(SystemExit) as e:
        predict_main([str(run), str(tmp_path / "d.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert f"'{run / 'model.pt'}' is damaged" in err[0]
