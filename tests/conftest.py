"""Shared fixtures: the real config composed and shrunk, and real image folders made from digits."""

from __future__ import annotations

import contextlib
import csv
import importlib
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from sklearn.datasets import load_digits

from fastlab.config import config_dir, register_configs

register_configs()  # the schemas conf/ composes against

# A run small enough for a test: 16 px digits, a two-stage CNN, a couple of epochs.
SMALL = [
    "data.size=16",
    "arch.channels=[16,32]",
    "arch.head_hidden=32",
    "schedule.epochs=2",
    "schedule.lr_max=1e-2",
    "trainer.plots=false",
    "trainer.progress=none",
]


@contextlib.contextmanager
def one_thread():
    """Train on one thread: on a CPU shared with other jobs PyTorch's threads wait on each other
    (a one-second run can take thirty, a tiny LSTM step a hundred times its time)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def require(module: str):
    """Import ``module`` for a test, or fail saying how to install it: every package a test needs
    is in the dev extra, so a missing one is a broken set-up, never a reason to skip."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} is not installed ({e}): pip install -e '.[dev]' (bash scripts/test.sh does)",
                    pytrace=False)


@pytest.fixture
def no_sleep(monkeypatch) -> list:
    """``time.sleep`` records its argument and returns at once: a test asserting the returned
    list is empty proves the code under test waited on nothing (no retry, no back-off), which a
    clock on a shared CPU cannot."""
    calls: list = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


def wait_until(ready, procs=(), what: str = "the event", timeout: float = 120.0) -> None:
    """Poll ``ready()`` until it holds: how a test waits for an event (a file a process wrote, a
    row in a store) instead of sleeping a guessed time. A process of ``procs`` ending first, or
    ``timeout`` s without the event, fails the test naming ``what``."""
    end = time.monotonic() + timeout
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        assert not dead, f"a process ended (exit {dead[0].returncode}) before {what}"
        assert time.monotonic() < end, f"{timeout:.0f} s without {what}"
        time.sleep(0.01)


def compose_cfg(*overrides: str, small: bool = True):
    """The real ``conf/train.yaml`` composed with ``overrides`` (after the shrinking ones)."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*(SMALL if small else []), *overrides])


@pytest.fixture
def small_cfg():
    return compose_cfg


def _digit_images(per_class: int, classes: tuple[int, ...]) -> list[tuple[Image.Image, int]]:
    d = load_digits()
    out, counts = [], dict.fromkeys(classes, 0)
    for img, label in zip(d.images, d.target):
        label = int(label)
        if label in counts and counts[label] < per_class:
            arr = (torch.from_numpy(img) * (255 / 16)).round().to(torch.uint8).numpy()
            out.append((Image.fromarray(arr, mode="L").resize((16, 16)), label))
            counts[label] += 1
    return out


NAMES = {0: "zero", 1: "one", 2: "two"}


@pytest.fixture(scope="session")
def image_dirs(tmp_path_factory) -> dict[str, Path]:
    """Real PNG and JPEG files from digits 0-2 in every layout the data sources read:
    ``imagenet`` (train/ and valid/), ``per_class`` (<class>/ only), ``flat`` (names like
    ``two_17.jpg`` for name_re, plus ``labels.csv`` for csv)."""
    root = tmp_path_factory.mktemp("images")
    images = _digit_images(30, (0, 1, 2))
    layouts = {k: root / k for k in ("imagenet", "per_class", "flat")}
    rows = []
    for i, (img, label) in enumerate(images):
        name, ext = NAMES[label], ("png" if i % 2 else "jpg")
        fname = f"{name}_{i}.{ext}"
        split = "valid" if i % 5 == 0 else "train"
        for path in (layouts["imagenet"] / split / name / fname, layouts["per_class"] / name / fname,
                     layouts["flat"] / fname):
            path.parent.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(path)
        rows.append({"fname": fname, "label": name, "is_valid": str(split == "valid"), "value": label})
    with open(layouts["flat"] / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["fname", "label", "is_valid", "value"])
        writer.writeheader()
        writer.writerows(rows)
    return layouts


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (``tests/pgserver.py``): a fresh cluster in
    a temporary folder on a unix socket, stopped and deleted at the end. No server binaries is a
    failure that says to run ``bash scripts/test.sh``, which installs them."""
    from tests.pgserver import PgServer

    try:
        server = PgServer().start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres, request) -> str:
    """A URL to an empty database of its own on the session's PostgreSQL server."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    name += f"_{abs(hash(request.node.nodeid)) % 10**6}"
    return postgres.fresh_database(name)


def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.gpu`` tests skip, saying why, on a machine without CUDA (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu); this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
