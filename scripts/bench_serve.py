"""Requests per second for ``POST /predict``: a bounded load test of ``fastlab-serve`` on loopback.

    python scripts/bench_serve.py [RUN_DIR_OR_BUNDLE] [--requests 600] [--concurrency 16]
                                  [--max-batch 1 32]

Starts the real server (``fastlab-serve``, uvicorn) on a free 127.0.0.1 port, once per
``--max-batch`` value, warms it up, then sends ``--requests`` uploads of a 64 px digit PNG with at
most ``--concurrency`` in flight, and prints requests/second, latency percentiles and the mean
number of images per forward pass. Without a model it first trains the default run (what
``bash scripts/run.sh`` trains: digits, the default CNN, one-cycle) into a temporary folder.

The client runs on the same machine: on a small CPU it competes with the server for cores, so
read the figure as a lower bound for this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent


def digit_png(index: int = 0, px: int = 64) -> bytes:
    from sklearn.datasets import load_digits

    arr = (load_digits().images[index] * (255 / 16)).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").resize((px, px), Image.Resampling.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def train_default(out: Path) -> Path:
    """The default run of ``bash scripts/run.sh`` (plots and the progress bar off)."""
    cmd = [str(BIN / "fastlab-train"), f"hydra.run.dir={out}", "trainer.plots=false", "trainer.progress=none"]
    print("training the default run:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    extra = ["--threads", str(threads)] if threads else []
    proc = subprocess.Popen([str(BIN / "fastlab-serve"), model, "--port", str(port), "--max-batch", str(max_batch),
                             "--log-level", "warning", *extra], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench_serve: fastlab-serve exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("bench_serve: fastlab-serve did not answer /health within 120 s")


async def load(url: str, image: bytes, n: int, concurrency: int) -> tuple[float, list[float], int]:
    """``n`` POSTs, at most ``concurrency`` in flight: (seconds, latencies, non-200 count)."""
    sem, latencies, failures = asyncio.Semaphore(concurrency), [], 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def one() -> None:
            nonlocal failures
            async with sem:
                t = time.perf_counter()
                r = await client.post("/predict", files={"file": ("digit.png", image, "image/png")})
                latencies.append(time.perf_counter() - t)
                failures += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - start, latencies, failures


def bench(model: str, max_batch: int, requests: int, concurrency: int, warmup: int,
          threads: int | None) -> dict:
    proc, url = start_server(model, max_batch, threads)
    try:
        image = digit_png()
        asyncio.run(load(url, image, warmup, concurrency))
        before = httpx.get(url + "/health").json()["batching"]
        seconds, lat, failures = asyncio.run(load(url, image, requests, concurrency))
        after = httpx.get(url + "/health").json()["batching"]
    finally:
        proc.terminate()
        proc.wait(30)
    lat_ms = sorted(1000 * x for x in lat)
    batches = max(1, after["batches"] - before["batches"])
    return {"max_batch": max_batch, "threads": threads, "requests": requests, "concurrency": concurrency,
            "requests_per_s": round(requests / seconds, 1), "failures": failures,
            "latency_ms": {"p50": round(statistics.median(lat_ms), 2),
                           "p95": round(lat_ms[int(0.95 * (len(lat_ms) - 1))], 2)},
            "images_per_forward": round((after["items"] - before["items"]) / batches, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a run dir or bundle; default: train the default run first")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16, help="most requests in flight at once")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 32],
                        help="fastlab-serve --max-batch values to compare (1: no batching)")
    parser.add_argument("--threads", type=int, default=None, help="fastlab-serve --threads (default: PyTorch's)")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(train_default(Path(tmp) / "run"))
        print(f"model: {model}; {os.cpu_count()} CPU core(s); client and server share them", flush=True)
        results = []
        for mb in args.max_batch:
            r = bench(model, mb, args.requests, args.concurrency, args.warmup, args.threads)
            results.append(r)
            print(f"max_batch={mb:3d} threads={args.threads or 'default'}: {r['requests_per_s']:7.1f} requests/s  p50 {r['latency_ms']['p50']:.1f} ms  "
                  f"p95 {r['latency_ms']['p95']:.1f} ms  {r['images_per_forward']:.2f} images/forward  "
                  f"{r['failures']} failed", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
