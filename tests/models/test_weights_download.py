"""arch.pretrained=imagenet downloads its weights on first use, from a local server (tests/offline.py
WeightsServer on 127.0.0.1, every other address blocked) serving seeded stand-ins: torchvision's
files at their path (through FASTLAB_WEIGHTS_ENDPOINT, the mirror setting) into torch.hub's
checkpoints with torchvision's hash check, timm's through huggingface_hub from a minimal hub
endpoint (HF_ENDPOINT) into the Hugging Face cache. The first run downloads and the second does
not (the server's request count); a stalled server meets the timeout; a truncated or corrupt
download is refused and removed; two processes at once download once; offline (no route, a
refused connect, HF_HUB_OFFLINE=1, arch.download=never) is one line at once (no sleep, no retry) naming the
file, where it goes and how to fetch it elsewhere; arch.weights takes a URL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fastlab.config import to_run_config
from fastlab.errors import ConfigError
from fastlab.models import create_model
from fastlab.models.imagenet import read_imagenet
from fastlab.models.resnet import ResnetArch
from tests.conftest import compose_cfg, require
from tests.offline import (
    WeightsServer,
    block_network,
    local_only,
    published,
    timm_net,
    torchvision_net,
    torchvision_weights,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server():
    s = WeightsServer()
    yield s
    s.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty TORCH_HOME in tmp_path (and the working directory there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def resnet18(server, home, monkeypatch, tmp_path_factory):
    """The resnet18 stand-in published at torchvision's path on the local server, which
    FASTLAB_WEIGHTS_ENDPOINT names; only 127.0.0.1 reachable. Returns (url path, connects elsewhere)."""
    data = torchvision_weights(tmp_path_factory, "resnet18").read_bytes()
    path = published(monkeypatch, "resnet18", data)
    server.files[path] = data
    monkeypatch.setenv("FASTLAB_WEIGHTS_ENDPOINT", server.url)
    return path, local_only(monkeypatch)


def resnet18_cfg(**kw) -> ResnetArch:
    return ResnetArch(name="resnet18", pretrained="imagenet", **kw)


def test_first_use_downloads_into_torch_hub_and_the_second_reads_the_cache(server, resnet18, home):
    path, elsewhere = resnet18
    body = read_imagenet(resnet18_cfg())
    assert body.weights.file == home / Path(path).name and body.weights.file.is_file()
    model = create_model(resnet18_cfg(), 3, 4)
    body.load_into(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the downloaded weights are the stand-in's, exactly
        want = torch.nn.Sequential(*list(torchvision_net("resnet18").children())[:-2])(x)
        assert torch.equal(model.eval().body(x), want)
    assert server.gets(path) == 1
    read_imagenet(resnet18_cfg())
    assert server.gets(path) == 1 and sum(server.requests.values()) == 1  # the second: no request at all
    assert sorted(p.name for p in home.iterdir()) == [Path(path).name, Path(path).name + ".lock"]
    assert elsewhere == []


def test_a_corrupt_download_fails_torchvisions_hash_check_and_is_removed(server, resnet18, home):
    path, _ = resnet18
    server.files[path] = server.files[path][:-10] + b"0123456789"  # the announced size, other bytes
    with pytest.raises(ConfigError) as info:
        read_imagenet(resnet18_cfg())
    message = str(info.value)
    assert "\n" not in message and "has SHA-256" in message and "it was removed" in message
    assert Path(path).name in message and str(home) in message  # where it goes, still said
    assert not any(p.suffix in (".pth", ".part") for p in home.iterdir())


def test_a_truncated_download_is_refused_and_removed(server, resnet18, home):
    path, _ = resnet18
    server.truncate.add(path)
    with pytest.raises(ConfigError, match=r"ended early \(\d+ of \d+ bytes\)") as info:
        read_imagenet(resnet18_cfg())
    assert "\n" not in str(info.value) and "run again" in str(info.value)
    assert not any(p.suffix in (".pth", ".part") for p in home.iterdir())
    server.truncate.clear()  # the server mends: the next run downloads it whole
    assert read_imagenet(resnet18_cfg()).weights.file.is_file() and server.gets(path) == 2


def test_a_stalled_server_meets_the_timeout_with_one_line(server, resnet18, home, monkeypatch):
    path, _ = resnet18
    server.stall.add(path)
    monkeypatch.setenv("FASTLAB_DOWNLOAD_TIMEOUT", "1")
    # The stalled server holds the connection for 60 s, then closes it (which reads as "ended
    # early"): this message proves the 1 s timeout fired, with no clock in the test.
    with pytest.raises(ConfigError, match=r"the server sent nothing for 1 s .*FASTLAB_DOWNLOAD_TIMEOUT") as info:
        read_imagenet(resnet18_cfg())
    assert "\n" not in str(info.value)
    assert not any(p.suffix in (".pth", ".part") for p in home.iterdir())


@pytest.mark.parametrize("how", ["no route", "refused", "HF_HUB_OFFLINE", "arch.download=never"])
def test_offline_is_one_line_at_once_naming_file_folder_and_fetch(server, resnet18, home, monkeypatch, no_sleep, how):
    path, _ = resnet18
    download = "auto"
    if how == "no route":  # every connect refused by the test's guard, as on a machine without network
        block_network(monkeypatch)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setenv("FASTLAB_WEIGHTS_ENDPOINT", "http://192.0.2.1")  # TEST-NET-1: never routed
    elif how == "refused":
        server.close()  # nothing listens on the port any more
    elif how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        download = "never"
    with pytest.raises(ConfigError) as info:
        read_imagenet(resnet18_cfg(download=download))
    message = str(info.value)
    assert no_sleep == []  # at once: no retry waited out, no back-off
    assert "\n" not in message and "cannot be downloaded" in message
    assert {"no route": "no network", "refused": "no network", "HF_HUB_OFFLINE": "HF_HUB_OFFLINE=1",
            "arch.download=never": "arch.download=never"}[how] in message
    assert Path(path).name in message and str(home) in message
    assert "torchvision.models.resnet18(weights='IMAGENET1K_V1')" in message and "arch.weights=" in message
    assert server.gets(path) == 0 and not any(p.suffix in (".pth", ".part") for p in home.glob("*"))


def test_arch_download_is_auto_or_never():
    with pytest.raises(ConfigError, match=r"^arch.download='sometimes' is not known: use auto or never$"):
        to_run_config(compose_cfg("arch=resnet18", "arch.download=sometimes", small=False))


def test_arch_weights_takes_a_url_fetched_once_into_torch_hub(server, resnet18, home, tmp_path_factory):
    data = torchvision_weights(tmp_path_factory, "resnet18").read_bytes()
    server.files["/mine/finetuned.pth"] = data
    url = f"{server.url}/mine/finetuned.pth"
    for _ in range(2):
        assert read_imagenet(resnet18_cfg(weights=url)).weights.file == home / "finetuned.pth"
    assert server.gets("/mine/finetuned.pth") == 1
    with pytest.raises(ConfigError, match=r"arch.weights='.*/nope.pth' is not in torch.hub's checkpoints and was "
                                          r"not downloaded \(HTTP 404 .*\): fetch it .* put it at .*nope.pth"):
        read_imagenet(resnet18_cfg(weights=f"{server.url}/nope.pth"))


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from torchvision import models as tvm
    from fastlab.models.imagenet import read_imagenet
    from fastlab.models.resnet import ResnetArch

    url, ready, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    tvm.ResNet18_Weights.IMAGENET1K_V1.value.url = url  # the stand-in's name, as the parent published it
    (ready / me).touch()
    while len(list(ready.iterdir())) < 2:  # both start downloading together
        time.sleep(0.01)
    print(read_imagenet(ResnetArch(name="resnet18", pretrained="imagenet")).weights.file)
""")


def test_two_processes_at_once_download_once(server, resnet18, home, tmp_path):
    path, _ = resnet18
    server.slow.add(path)  # a second's download: the other process arrives while it runs
    from torchvision import models as tvm

    url, ready = tvm.ResNet18_Weights.IMAGENET1K_V1.url, tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(ready), str(i)], env=env, cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [c.communicate(timeout=300) for c in children]
    assert [c.returncode for c in children] == [0, 0], [err[-2000:] for _, err in outs]
    assert {out.strip() for out, _ in outs} == {str(home / Path(path).name)}
    assert server.gets(path) == 1


CONVNEXT = "timm/test_convnext.r160_in1k"  # what pretrained_cfg names for arch.model=test_convnext


@pytest.fixture
def hub(server, tmp_path, monkeypatch):
    """test_convnext's stand-in served by the local hub endpoint (HF_ENDPOINT), an empty Hugging
    Face cache (huggingface_hub reads HF_HOME at import, so its constant is set). Returns (url
    path, the cache, connects elsewhere)."""
    require("timm")
    from huggingface_hub import constants
    from safetensors.torch import save

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    state = {k: v.contiguous() for k, v in timm_net("test_convnext").state_dict().items()}
    return server.hub(CONVNEXT, "model.safetensors", save(state)), cache, local_only(monkeypatch)


def convnext_cfg(**kw):
    from fastlab.models.timm_arch import TimmArch

    return TimmArch(model="test_convnext", pretrained="imagenet", **kw)


def test_timm_weights_download_through_huggingface_hub_once(server, hub):
    from fastlab.models.timm_arch import timm_model

    path, cache, elsewhere = hub
    body = read_imagenet(convnext_cfg())
    snapshot = cache / "models--timm--test_convnext.r160_in1k" / "snapshots" / WeightsServer.COMMIT
    assert body.weights.file == snapshot / "model.safetensors" and body.weights.file.is_file()
    model = timm_model(convnext_cfg(), 3, 2)
    body.load_into(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval().body.forward_features(x), timm_net("test_convnext").forward_features(x))
    assert server.gets(path) == 1
    before = sum(server.requests.values())
    read_imagenet(convnext_cfg())  # found in the cache: not even a HEAD
    assert sum(server.requests.values()) == before and elsewhere == []


@pytest.mark.parametrize("how", ["no route", "HF_HUB_OFFLINE", "arch.download=never"])
def test_timm_offline_is_one_line_at_once(server, hub, monkeypatch, no_sleep, how):
    path, cache, _ = hub
    if how == "no route":
        monkeypatch.setenv("HF_ENDPOINT", "http://192.0.2.1")  # refused by the guard: TEST-NET-1
    elif how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        read_imagenet(convnext_cfg(download="never" if how == "arch.download=never" else "auto"))
    message = str(info.value)
    assert no_sleep == []  # at once: no retry waited out, no back-off
    assert "\n" not in message and "cannot be downloaded" in message
    assert {"no route": "no network", "HF_HUB_OFFLINE": "HF_HUB_OFFLINE=1"}.get(how, how) in message
    assert f"hf download {CONVNEXT}" in message and "models--timm--test_convnext.r160_in1k" in message
    assert str(cache) in message and "arch.weights=" in message
    assert server.requests == {} and not list(cache.rglob("*.safetensors"))


def test_timm_truncated_download_is_refused_and_leaves_nothing(server, hub):
    path, cache, _ = hub
    server.truncate.add(path)  # every try (huggingface_hub resumes a few times) cut short
    with pytest.raises(ConfigError, match="did not download") as info:
        read_imagenet(convnext_cfg())
    assert "\n" not in str(info.value) and "run again" in str(info.value)
    assert server.gets(path) >= 1
    assert not [p for p in cache.rglob("*") if p.is_file() and p.parent.name in ("blobs", WeightsServer.COMMIT)]
