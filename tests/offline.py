"""What the pretrained-weights tests share: a network that is not there, stand-in ImageNet weights
where torchvision and timm look for them, and a small folder named like Oxford-IIIT Pets.

Stand-ins are seeded, randomly initialised networks (with batch-norm statistics moved off their
defaults, so loading them is visible), saved under the real file names; each is made once per
session and copied or linked where a test needs it.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import torch
from PIL import Image

_MADE: dict[str, Path] = {}  # stand-in files made this session, by name


def block_network(monkeypatch) -> list:
    """Every socket connect raises (and is recorded in the returned list), and the Hugging Face
    hub is offline: a test using it proves nothing reached for the network. Each test module
    wraps it in its own ``no_network`` fixture."""
    attempts: list = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError(f"network blocked in tests: connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        from huggingface_hub import constants
    except ImportError:
        pass
    else:  # read at import: the environment alone would come too late
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return attempts


def seeded(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``net`` with seeded weights and batch-norm running statistics away from 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net.eval()


def torchvision_net(name: str, seed: int = 0) -> torch.nn.Module:
    """The seeded stand-in for torchvision's ``name`` (the same network every call)."""
    from torchvision import models as tvm

    torch.manual_seed(seed)
    return seeded(getattr(tvm, name)(weights=None), seed)


def tv_file_name(name: str) -> str:
    from torchvision import models as tvm

    return os.path.basename(tvm.get_model_weights(name).IMAGENET1K_V1.url)


def torchvision_weights(tmp_path_factory, name: str) -> Path:
    """A state-dict file of the stand-in ``name``, as torchvision would cache it (made once)."""
    key = f"tv-{name}"
    if key not in _MADE:
        path = tmp_path_factory.mktemp(key) / tv_file_name(name)
        torch.save(torchvision_net(name).state_dict(), path)
        _MADE[key] = path
    return _MADE[key]


def torch_home(root: Path, files: dict[str, Path]) -> Path:
    """``root`` as TORCH_HOME with ``files`` (cache name -> file) in ``hub/checkpoints``."""
    checkpoints = root / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (checkpoints / name).symlink_to(source)
    return root


def timm_net(model: str, seed: int = 0) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return seeded(timm.create_model(model, pretrained=False), seed)


def hub_cache(root: Path, repo: str, state: dict[str, torch.Tensor], revision: str = "0" * 40) -> Path:
    """Put ``state`` into a Hugging Face hub cache at ``root`` as ``hf download`` leaves it:
    ``models--<org>--<name>/blobs/<sha256>``, ``snapshots/<revision>/model.safetensors`` linking
    to that blob, and ``refs/main`` naming the revision. Returns the snapshot file."""
    from safetensors.torch import save_file

    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    tmp = folder / "blobs" / "incoming"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    blob = folder / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(blob)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot / "model.safetensors"


BREEDS = ("Abyssinian", "yorkshire_terrier")


def pets_folder(root: Path, per_breed: int = 12, side: int = 48) -> Path:
    """``per_breed`` small JPEGs of each of two breeds, named as in Oxford-IIIT Pets
    (``Abyssinian_1.jpg``, ``yorkshire_terrier_3.jpg``); the breeds differ in colour."""
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for b, breed in enumerate(BREEDS):
        for i in range(1, per_breed + 1):
            base = torch.tensor([200, 120, 60] if b == 0 else [60, 90, 200]).view(3, 1, 1)
            img = (base + 40 * torch.randn(3, side, side, generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / f"{breed}_{i}.jpg", quality=90)
    return root
