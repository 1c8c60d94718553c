"""Damaged checkpoints: a byte flipped in a tensor of ``last.pt`` or ``model.pt`` after it was
written (a bad disk, an interrupted copy). ``torch.load`` would load it silently; fastlab names
the file in one line and leaves it where it is."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from tests.faults.cases import RNG, Result, kill_when, reference, run, train_cmd


def _flip_in_largest_tensor(path: Path, key: str) -> None:
    """Flip one byte in the middle of the stored bytes of the largest float tensor under ``key``."""
    state = torch.load(path, weights_only=True)[key]
    t = max((v for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()),
            key=lambda v: v.numel())
    raw = t.contiguous().numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw[len(raw) // 2:len(raw) // 2 + 32])
    assert at > 0, f"the tensor's bytes are not in {path}"
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def _one_line(proc: subprocess.CompletedProcess, fragment: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert len(lines) == 1 and fragment in lines[0], proc.stderr[-500:]
    return lines[0]


def damaged_last_pt(tmp: Path) -> Result:
    overrides = ("schedule.epochs=3", "trainer.checkpoint_every_n_steps=3")  # as kill_mid_epoch
    run_dir = tmp / "damaged_last"
    last = run_dir / "last.pt"
    proc = subprocess.Popen(train_cmd(run_dir, *overrides), cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when(proc, last.exists, RNG.uniform(0.0, 0.1))
    assert proc.returncode == -signal.SIGKILL
    _flip_in_largest_tensor(last, "model")
    before = last.read_bytes()
    line = _one_line(run(train_cmd(tmp / "damaged_last_resume", f"trainer.resume={run_dir}",
                                   *overrides), cwd=tmp), f"'{last}' is damaged")
    assert last.read_bytes() == before  # kept as it was, for the user to look at
    return Result("damaged_last_pt", f"resume refused: {line[:150]}")


def damaged_model_pt(tmp: Path) -> Result:
    ref = reference(tmp, ("schedule.epochs=3", "trainer.checkpoint_every_n_steps=3"))
    run_dir = tmp / "damaged_model"
    shutil.copytree(ref, run_dir)
    _flip_in_largest_tensor(run_dir / "model.pt", "state_dict")
    Image.new("L", (16, 16), 128).save(tmp / "grey.png")
    proc = run([sys.executable, "-m", "fastlab.cli.predict", str(run_dir), str(tmp / "grey.png")],
               cwd=tmp)
    line = _one_line(proc, f"'{run_dir / 'model.pt'}' is damaged")
    assert proc.stdout == ""  # no prediction from damaged weights
    return Result("damaged_model_pt", f"fastlab-predict refused: {line[:150]}")


CASES = [damaged_last_pt, damaged_model_pt]
