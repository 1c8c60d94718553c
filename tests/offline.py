"""What the pretrained-weights tests share: a network that is not there (or only 127.0.0.1),
stand-in ImageNet weights where torchvision and timm look for them or served by a local server
(``WeightsServer``: torchvision's paths and a minimal Hugging Face endpoint), and a small folder
named like Oxford-IIIT Pets (or its archive).

Stand-ins are seeded, randomly initialised networks (with batch-norm statistics moved off their
defaults, so loading them is visible), saved under the real file names; each is made once per
session and copied or linked where a test needs it.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import time
from collections import Counter
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


def local_only(monkeypatch) -> list:
    """Only 127.0.0.1 can be reached: a connect anywhere else raises (and is recorded in the
    returned list). The Hugging Face hub is online, so downloads from a local server are tried."""
    attempts: list = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(real):
        def check(self, address, *args):
            if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "localhost")):
                attempts.append(address)
                raise OSError(f"network blocked in tests: connect to {address}")
            return real(self, address, *args)
        return check

    monkeypatch.setattr(socket.socket, "connect", guard(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(connect_ex))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        from huggingface_hub import constants
    except ImportError:
        pass
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return attempts


class WeightsServer:
    """A threaded HTTP server on 127.0.0.1 (port 0) serving ``files`` (path -> bytes), counting
    each request by (method, path). Paths in ``stall`` send their headers and half the body, then
    nothing until the server closes; in ``truncate`` half the body and the connection closed; in
    ``slow`` the body in ten pieces over a second. ``hub(repo, name, data)`` serves a file as the
    Hugging Face hub does (``/<repo>/resolve/main/<name>`` with ``X-Repo-Commit`` and ``ETag``)."""

    COMMIT = "1" * 40

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.stall: set[str] = set()
        self.truncate: set[str] = set()
        self.slow: set[str] = set()
        self.requests: Counter = Counter()
        self.closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 (http.server's naming)
                self.answer(body=False)

            def do_GET(self):  # noqa: N802
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                server.requests[(self.command, path)] += 1
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                for k, v in server.headers.get(path, {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not body:
                    return
                if path in server.stall:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    server.closing.wait(60)
                elif path in server.truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                elif path in server.slow:
                    step = len(data) // 10 + 1
                    for i in range(0, len(data), step):
                        self.wfile.write(data[i:i + step])
                        time.sleep(0.1)
                else:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def hub(self, repo: str, name: str, data: bytes) -> str:
        """Serve ``data`` as the hub's ``repo``/``name`` at ``main``; returns its path."""
        path = f"/{repo}/resolve/main/{name}"
        self.files[path] = data
        self.headers[path] = {"X-Repo-Commit": self.COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        return path

    def gets(self, path: str) -> int:
        return self.requests[("GET", path)]

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def published(monkeypatch, name: str, data: bytes) -> str:
    """Point torchvision's ``IMAGENET1K_V1`` url of ``name`` at a file named, as torchvision names
    its files, with the SHA-256 prefix of ``data`` (the stand-in's own, since a stand-in cannot
    carry the real file's): ``https://download.pytorch.org/models/<name>-<prefix>.pth``, its
    host kept for ``FASTLAB_WEIGHTS_ENDPOINT`` to replace. Returns the path to serve it at."""
    from torchvision import models as tvm

    path = f"/models/{name}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setattr(tvm.get_model_weights(name).IMAGENET1K_V1.value, "url", "https://download.pytorch.org" + path)
    return path


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


def pets_archive(root: Path, per_breed: int = 12) -> bytes:
    """A .tgz laid out as Oxford-IIIT Pets' (``oxford-iiit-pet/images/Abyssinian_1.jpg`` ...)."""
    images = pets_folder(root / "oxford-iiit-pet" / "images", per_breed=per_breed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(images.parent, arcname="oxford-iiit-pet")
    return buf.getvalue()


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
