"""fast.ai's lesson 1 as an experiment (+experiment=pets): a small folder named like Oxford-IIIT
Pets, a seeded stand-in for torchvision's ResNet-34 ImageNet weights where torchvision keeps them
(TORCH_HOME in tmp_path), the network blocked, shrunk to 32 px (presized at 40) and one epoch.
And lesson 1 in one command on an empty machine: data.url and the weights both fetched from a
local server (a generated archive laid out like Pets; the stand-in at torchvision's path), once."""

from __future__ import annotations

import pytest

from fastlab.config import to_run_config
from fastlab.errors import DataError
from fastlab.inference.predictor import Predictor
from fastlab.models.zoo import read_checkpoint
from fastlab.run.prepare import prepare
from fastlab.run.train import train
from tests.conftest import compose_cfg, one_thread
from tests.offline import (
    WeightsServer,
    block_network,
    local_only,
    pets_archive,
    pets_folder,
    published,
    torch_home,
    torchvision_weights,
    tv_file_name,
)

SHRINK = ["data.size=32", "data.presize=40", "data.bs=8", "schedule.epochs=1", "trainer.plots=false",
          "trainer.progress=none"]


@pytest.fixture
def no_network(monkeypatch) -> list:
    """The network blocked; the connects attempted (none, if all is well)."""
    return block_network(monkeypatch)


@pytest.fixture
def lesson(tmp_path, monkeypatch, tmp_path_factory, no_network):
    """The images and the weights where the experiment finds them; the working directory in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(torch_home(tmp_path / "torch", {
        tv_file_name("resnet34"): torchvision_weights(tmp_path_factory, "resnet34")})))
    return pets_folder(tmp_path / "oxford-iiit-pet" / "images"), no_network


def test_lesson_one_fine_tunes_the_imagenet_resnet34(lesson, tmp_path):
    images, attempts = lesson
    with one_thread():
        m = train(compose_cfg("+experiment=pets", f"data.path={images}", *SHRINK, small=False), run_dir=tmp_path / "run")
    assert m["status"] == "completed", m.get("error")
    assert m["pretrained"]["path"].endswith("resnet34-b627a593.pth") and m["pretrained"]["loaded"] > 100
    # fine_tune: the head alone (groups 0 and 1 frozen), then all three groups at fastai's
    # slice(base_lr / 2 / 100, base_lr / 2)
    assert [st["frozen"] for st in m["stages"]] == [2, 0] and m["layer_groups"] == 3
    assert m["group_lrs"] == pytest.approx([1e-5, 1e-4, 1e-3])
    meta = read_checkpoint(tmp_path / "run" / "model.pt")["meta"]
    assert meta["classes"] == ["Abyssinian", "yorkshire_terrier"]
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    # the trained model carries its own weights: predicting needs the ImageNet file no more
    for cached in (tmp_path / "torch" / "hub" / "checkpoints").iterdir():
        cached.unlink()
    out = Predictor.load(tmp_path / "run").predict(str(images / "Abyssinian_1.jpg"))
    assert out["label"] in meta["classes"]
    assert attempts == []


def test_the_experiment_is_lesson_ones_recipe():
    run = to_run_config(compose_cfg("+experiment=pets", small=False))
    assert (run.data.name, run.data.size, run.data.presize, run.data.pattern) == ("name_re", 224, 460, r"^(.+)_\d+\.jpg$")
    assert (run.arch.name, run.arch.pretrained, run.aug.name, run.schedule.name) == ("resnet34", "imagenet", "fastai", "fine_tune")


def test_without_data_path_one_line_says_to_give_it(lesson):
    with pytest.raises(DataError, match=r"^data.path is required for data=name_re: pass data.path=<folder>$"):
        prepare(to_run_config(compose_cfg("+experiment=pets", *SHRINK, small=False)))


def test_lesson_one_in_one_command_fetches_the_data_and_the_weights(tmp_path, monkeypatch, tmp_path_factory):
    """fastlab-train +experiment=pets data.url=<the Pets archive> data.path=images, with nothing
    cached: the archive goes to outputs/data, the weights to torch.hub's checkpoints (from
    FASTLAB_WEIGHTS_ENDPOINT's mirror of torchvision's path), and it trains; again, nothing is fetched."""
    server = WeightsServer()
    try:
        server.files["/oxford-iiit-pet.tgz"] = pets_archive(tmp_path / "src")
        weights = torchvision_weights(tmp_path_factory, "resnet34").read_bytes()
        path = published(monkeypatch, "resnet34", weights)
        server.files[path] = weights
        monkeypatch.setenv("FASTLAB_WEIGHTS_ENDPOINT", server.url)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        (tmp_path / "work").mkdir()
        monkeypatch.chdir(tmp_path / "work")
        elsewhere = local_only(monkeypatch)
        command = ["+experiment=pets", f"data.url={server.url}/oxford-iiit-pet.tgz", "data.path=images", *SHRINK]
        with one_thread():
            m = train(compose_cfg(*command, small=False), run_dir=tmp_path / "run")
        assert m["status"] == "completed", m.get("error")
        assert m["pretrained"]["path"] == str(tmp_path / "torch" / "hub" / "checkpoints" / path.split("/")[-1])
        assert m["pretrained"]["loaded"] > 100 and [st["frozen"] for st in m["stages"]] == [2, 0]
        assert (tmp_path / "work" / "outputs" / "data" / "oxford-iiit-pet" / "images" / "Abyssinian_1.jpg").is_file()
        assert server.gets("/oxford-iiit-pet.tgz") == 1 and server.gets(path) == 1
        # the same command again: the data and the weights come from the caches, no request at all
        prep = prepare(to_run_config(compose_cfg(*command, small=False)))
        assert prep.pretrained.path.name == path.split("/")[-1]
        assert sum(server.requests.values()) == 2 and elsewhere == []
    finally:
        server.close()
