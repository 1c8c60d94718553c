"""``fastlab-serve``: the app through Starlette's TestClient, the batcher, a real uvicorn server on
loopback under concurrent requests, and the upload page in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from fastlab.cli.serve import main as serve_main
from fastlab.inference import Predictor
from fastlab.run.train import train
from fastlab.serve.app import create_app
from fastlab.serve.batcher import Batcher
from tests.conftest import compose_cfg

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The model ``bash scripts/run.sh`` trains (the default config: digits at 32 px, the default
    CNN, one-cycle), for 3 epochs instead of 10, on one thread (on a shared CPU PyTorch's threads
    wait on each other)."""
    out = tmp_path_factory.mktemp("serve_run")
    cfg = compose_cfg("schedule.epochs=3", "trainer.plots=false", "trainer.progress=none", small=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train(cfg, run_dir=out)["status"] == "completed"
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor.load(run_dir)


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: images ``(1797, 8, 8)`` in 0..16 and targets ``(1797,)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def digit_png(index: int, px: int = 64) -> bytes:
    """An sklearn digit, white on black, upscaled to ``px`` as a PNG (what a user uploads)."""
    arr = (digits()[0][index] * (255 / 16)).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").resize((px, px), Image.Resampling.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digit(predictor, tmp_path_factory) -> tuple[Path, str]:
    """A digit image file the model gets right, and its label."""
    target = digits()[1]
    for i in range(50):
        data = digit_png(i)
        if predictor.predict(data)["label"] == str(target[i]):
            path = tmp_path_factory.mktemp("digit") / f"digit_{target[i]}.png"
            path.write_bytes(data)
            return path, str(target[i])
    pytest.fail("the model gets none of the first 50 digits right")


def image_bytes(size=(32, 32), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (255, 255, 255)).save(buf, format=fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------------ TestClient


def make_client(app):
    with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its test client; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    return TestClient(app)


@pytest.fixture(scope="module")
def client(predictor):
    with make_client(create_app(predictor, max_bytes=64 * 1024, max_pixels=100_000)) as c:
        yield c


def test_page_and_health(client, predictor):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and 'id="label"' in page.text and "cnn classify" in page.text
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["classes"] == predictor.meta.classes
    assert health["size"] == 32 and health["n_in"] == 1 and "PNG" in health["formats"]


def test_predict_multipart_and_json(client, predictor, digit):
    path, label = digit
    data = path.read_bytes()
    r = client.post("/predict", files={"file": (path.name, data, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == label and len(body["top"]) == 3
    assert body == predictor.predict(data, top_k=3)
    assert [t["prob"] for t in body["top"]] == sorted((t["prob"] for t in body["top"]), reverse=True)
    b64 = base64.b64encode(data).decode()
    for payload in ({"image": b64}, {"image": "data:image/png;base64," + b64, "name": "d.png"}):
        r = client.post("/predict?top_k=1", json=payload)
        assert r.status_code == 200 and r.json()["label"] == label and len(r.json()["top"]) == 1
    jpeg = io.BytesIO()
    Image.open(path).convert("RGB").save(jpeg, format="JPEG", quality=95)
    r = client.post("/predict?top_k=10", files={"file": ("d.jpg", jpeg.getvalue(), "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["top"]) == 10


BAD_UPLOADS = [
    # (name, request keyword arguments, status, fragment of the error)
    ("text file", {"files": {"file": ("notes.txt", b"hello there", "text/plain")}}, 415,
     "'notes.txt' is not an image Pillow can read"),
    ("empty file", {"files": {"file": ("e.png", b"", "image/png")}}, 415, "'e.png' is empty"),
    ("ico", {"files": {"file": ("i.ico", image_bytes((16, 16), "ICO"), "image/x-icon")}}, 415, "in ICO format"),
    ("truncated", {"files": {"file": ("t.png", image_bytes((64, 64))[:100], "image/png")}}, 400, "truncated or corrupt"),
    ("too many bytes", {"files": {"file": ("big.png", os.urandom(70 * 1024), "image/png")}}, 413,
     "larger than the 65,536 bytes limit"),
    ("too many pixels", {"files": {"file": ("wide.png", image_bytes((400, 300)), "image/png")}}, 413,
     "400x300 pixels"),
    ("wrong field", {"files": {"image": ("d.png", image_bytes(), "image/png")}}, 400,
     "no file in form field 'file' (fields: ['image'])"),
    ("text field", {"data": {"file": "abc"}, "files": {"other": ("x", b"x", "text/plain")}}, 400,
     "no file in form field 'file'"),
    ("two files", {"files": [("file", ("a.png", image_bytes(), "image/png")),
                             ("file", ("b.png", image_bytes(), "image/png"))]}, 400, "Too many files"),
    ("raw body", {"content": image_bytes(), "headers": {"content-type": "image/png"}}, 415,
     "content type 'image/png' is not accepted"),
    ("bad json", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400,
     'the JSON body must be {"image"'),
    ("json without image", {"json": {"picture": "x"}}, 400, 'the JSON body must be {"image"'),
    ("bad base64", {"json": {"image": "%%%not base64%%%"}}, 400, "encode the file with base64"),
    ("base64 of text", {"json": {"image": base64.b64encode(b"plain text").decode()}}, 415,
     "'upload' is not an image"),
    ("bad top_k", {"params": {"top_k": "0"}, "files": {"file": ("d.png", image_bytes(), "image/png")}}, 400,
     "top_k must be a positive integer"),
    ("top_k not a number", {"params": {"top_k": "all"}, "files": {"file": ("d.png", image_bytes(), "image/png")}},
     400, "top_k must be a positive integer, got 'all'"),
]


@pytest.mark.parametrize("name, kwargs, status, fragment", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_get_a_4xx_and_the_server_keeps_serving(client, digit, name, kwargs, status, fragment):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert fragment in error and "\n" not in error and ": " in error
    ok = client.post("/predict", files={"file": ("d.png", digit[0].read_bytes(), "image/png")})
    assert ok.status_code == 200 and ok.json()["label"] == digit[1]


def test_a_model_fault_is_a_500_and_the_server_keeps_serving(predictor, digit, monkeypatch):
    real, calls = predictor.forward, []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(x)

    monkeypatch.setattr(predictor, "forward", flaky)
    with make_client(create_app(predictor)) as c:
        files = {"file": ("d.png", digit[0].read_bytes(), "image/png")}
        r = c.post("/predict", files=files)
        assert r.status_code == 500 and "prediction failed (RuntimeError)" in r.json()["error"]
        assert c.post("/predict", files=files).json()["label"] == digit[1]


def test_wrong_method_and_path(client):
    assert client.get("/predict").status_code == 405
    assert client.get("/nope").status_code == 404


# ------------------------------------------------------------------------------ batching


def test_batcher_gathers_waiting_requests_and_survives_errors():
    sizes, entered, gate = [], threading.Event(), threading.Event()

    def forward(x):  # (B, 1, 2, 2) -> (B, 1); the first call blocks so the rest queue up
        sizes.append(len(x))
        entered.set()
        gate.wait(60)  # a bound only against a hang: the test sets the gate
        if (x == 255).any():
            raise RuntimeError("boom")
        return x.flatten(1)[:, :1].float()

    async def scenario():
        batcher = Batcher(forward, max_batch=4, collate=torch.stack)
        xs = [torch.full((1, 2, 2), i, dtype=torch.uint8) for i in range(10)]
        first = asyncio.ensure_future(batcher(xs[0]))
        assert await asyncio.to_thread(entered.wait, 60)  # the worker now waits in forward with one item
        rest = [asyncio.ensure_future(batcher(x)) for x in xs[1:]]
        await asyncio.sleep(0)  # one turn of the loop: each caller queues its item (put_nowait, then awaits)
        assert sizes == [1] and batcher._queue.qsize() == 9
        gate.set()
        out = await asyncio.gather(first, *rest)
        assert [float(o[0]) for o in out] == list(range(10))  # each caller gets its own row
        with pytest.raises(RuntimeError, match="boom"):
            await batcher(torch.full((1, 2, 2), 255, dtype=torch.uint8))
        assert float((await batcher(xs[3]))[0]) == 3  # the worker goes on after a failed batch
        stats = batcher.stats()
        await batcher.aclose()
        return stats

    stats = asyncio.run(scenario())
    assert sizes == [1, 4, 4, 1, 1, 1]
    assert stats == {"max_batch": 4, "batches": 5, "items": 11}


# ------------------------------------------------------------------------------ real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run_dir):
    """``fastlab-serve RUN_DIR`` on a free loopback port, as a user starts it."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([str(BIN / "fastlab-serve"), str(run_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"fastlab-serve exited with {proc.returncode}: {proc.stdout.read()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("fastlab-serve did not answer /health within 90 s")
        time.sleep(0.2)
    yield url
    proc.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully on Ctrl-C
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("fastlab-serve did not stop on SIGINT")
    assert proc.returncode == 0, proc.stdout.read()


def test_real_server_under_bounded_concurrent_load(server, predictor):
    images = [digit_png(i) for i in range(40)]
    expected = [predictor.predict(img)["label"] for img in images]
    bad = [b"not an image", image_bytes(fmt="ICO")]

    async def load():
        # 8 clients at a time, 120 requests in all: good ones and some bad ones mixed in.
        sem = asyncio.Semaphore(8)
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            async def one(i):
                data = bad[i % 2] if i % 10 == 9 else images[i % len(images)]
                async with sem:
                    return i, await client.post("/predict", files={"file": (f"{i}.png", data, "image/png")})
            return await asyncio.gather(*(one(i) for i in range(120)))

    before = httpx.get(server + "/health").json()["batching"]
    start = time.perf_counter()
    responses = asyncio.run(load())
    seconds = time.perf_counter() - start
    for i, r in responses:
        if i % 10 == 9:
            assert r.status_code == 415 and "error" in r.json()
        else:
            assert r.status_code == 200, r.text
            assert r.json()["label"] == expected[i % len(images)]
    after = httpx.get(server + "/health").json()["batching"]
    assert after["items"] - before["items"] == 108  # every good request went through the model once
    print(f"\n120 requests, 8 at a time: {120 / seconds:.0f} requests/s, "
          f"{(after['items'] - before['items']) / max(1, after['batches'] - before['batches']):.2f} images per forward")


@pytest.mark.parametrize("mib", [11, 20])  # 11: refused after parsing; 20: by Content-Length, unread
def test_real_server_refuses_an_oversized_upload_and_keeps_serving(server, digit, mib):
    r = httpx.post(server + "/predict", files={"file": ("big.png", os.urandom(mib * 2**20), "image/png")}, timeout=30)
    assert r.status_code == 413 and "10 MiB limit" in r.json()["error"]
    ok = httpx.post(server + "/predict", files={"file": ("d.png", digit[0].read_bytes(), "image/png")}, timeout=30)
    assert ok.status_code == 200 and ok.json()["label"] == digit[1]


@pytest.mark.parametrize("args, fragment", [
    (["{tmp}/none"], "'{tmp}/none' does not exist"),
    (["{run}", "--port", "70000"], "--port 70000 is not a port number"),
    (["{run}", "--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}"),
])
def test_serve_cli_errors_are_one_line_exit_2(run_dir, tmp_path, capsys, args, fragment):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fill = {"tmp": tmp_path, "run": run_dir, "busy": busy.getsockname()[1]}
        with pytest.raises(SystemExit) as e:
            serve_main([a.format(**fill) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("fastlab-serve: error: ")
    assert fragment.format(**fill) in err[0]


# ------------------------------------------------------------------------------ browser


def find_chromium() -> tuple[str, str] | None:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_upload_page_in_headless_chromium(server, digit, tmp_path):
    found = find_chromium()
    if found is None:  # scripts/test.sh installs both: a missing browser is a broken set-up
        pytest.fail("chromium and chromedriver not found: apt-get install chromium chromium-driver "
                    "(bash scripts/test.sh does)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,900"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    try:
        browser.get(server + "/")
        assert "cnn classify" in browser.title
        result = browser.find_element(By.ID, "result")
        browser.find_element(By.ID, "file").send_keys(str(digit[0]))  # choosing the file predicts
        WebDriverWait(browser, 30).until(lambda b: result.get_attribute("data-state") in ("done", "error"))
        assert result.get_attribute("data-state") == "done", browser.find_element(By.ID, "error").text
        assert browser.find_element(By.ID, "label").text == digit[1]
        rows = browser.find_elements(By.CSS_SELECTOR, "#top tr")
        assert len(rows) == 3 and rows[0].text.startswith(digit[1])
        assert browser.execute_script("return document.getElementById('preview').naturalWidth") == 64
        shot = tmp_path / "upload_page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        # A bad file shows the server's message on the page.
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"not an image")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        WebDriverWait(browser, 30).until(lambda b: result.get_attribute("data-state") == "error")
        assert "is not an image Pillow can read" in browser.find_element(By.ID, "error").text
        assert browser.find_element(By.ID, "label").text == ""
    finally:
        browser.quit()
