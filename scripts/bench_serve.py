"""Requests per second for ``POST /predict``, the same model served from PyTorch and from ONNX:
a bounded load test of ``fastlab-serve`` on loopback.

    python scripts/bench_serve.py [RUN_DIR] [--requests 400] [--concurrency 16]
                                  [--max-batch 1 32] [--threads N]

Exports the run twice (``fastlab-export RUN OUT``: model.safetensors, run by PyTorch; and
``--format onnx``: model.onnx, run by onnxruntime without PyTorch), then for each ``--max-batch``
value starts the real server (``fastlab-serve``, uvicorn) of each bundle on a free 127.0.0.1
port, warms it up, sends ``--requests`` uploads of a 64 px digit PNG with at most
``--concurrency`` in flight, and prints requests/second, p50 and p99 latency, the mean number of
images per forward pass and the server's resident memory, PyTorch and ONNX side by side. Without
a run it first trains the default CNN (``arch=cnn``: channels 32, 64, 128) on digits at 64 px
for 2 epochs into a temporary folder (about half a minute on 2 cores).

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
    """The default CNN on digits at 64 px, 2 epochs (plots and the progress bar off)."""
    cmd = [str(BIN / "fastlab-train"), f"hydra.run.dir={out}", "data.size=64", "schedule.epochs=2",
           "trainer.plots=false", "trainer.progress=none"]
    print("training:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def export_both(run: str, root: Path) -> dict[str, str]:
    """``{"pytorch": safetensors bundle, "onnx": ONNX bundle}`` of ``run``, by ``fastlab-export``."""
    bundles = {}
    for name, extra in (("pytorch", []), ("onnx", ["--format", "onnx"])):
        out = root / f"bundle_{name}"
        done = subprocess.run([str(BIN / "fastlab-export"), run, str(out), *extra], check=True,
                              capture_output=True, text=True)
        print(f"fastlab-export {' '.join(extra) or '(safetensors)'}: {done.stdout.strip().splitlines()[0]}", flush=True)
        bundles[name] = str(out)
    return bundles


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


def rss_mb(pid: int) -> float | None:
    """The resident memory of process ``pid`` in MiB (Linux), else None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def bench(runtime: str, model: str, max_batch: int, requests: int, concurrency: int, warmup: int,
          threads: int | None) -> dict:
    proc, url = start_server(model, max_batch, threads)
    try:
        image = digit_png()
        asyncio.run(load(url, image, warmup, concurrency))
        before = httpx.get(url + "/health").json()["batching"]
        seconds, lat, failures = asyncio.run(load(url, image, requests, concurrency))
        after = httpx.get(url + "/health").json()["batching"]
        rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    lat_ms = sorted(1000 * x for x in lat)
    batches = max(1, after["batches"] - before["batches"])
    return {"runtime": runtime, "max_batch": max_batch, "threads": threads, "requests": requests,
            "concurrency": concurrency, "requests_per_s": round(requests / seconds, 1), "failures": failures,
            "latency_ms": {"p50": round(statistics.median(lat_ms), 2),
                           "p99": round(lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))], 2)},
            "images_per_forward": round((after["items"] - before["items"]) / batches, 2), "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a run dir; default: train the 64 px CNN first")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16, help="most requests in flight at once")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 32],
                        help="fastlab-serve --max-batch values to compare (1: no batching)")
    parser.add_argument("--threads", type=int, default=None,
                        help="fastlab-serve --threads (default: each runtime's own)")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.model or str(train_default(Path(tmp) / "run"))
        bundles = export_both(run, Path(tmp))
        print(f"model: {run}; {os.cpu_count()} CPU core(s); client and server share them; "
              f"{args.requests} requests, {args.concurrency} in flight", flush=True)
        results = []
        for mb in args.max_batch:
            for runtime, bundle in bundles.items():  # the two side by side at each max_batch
                r = bench(runtime, bundle, mb, args.requests, args.concurrency, args.warmup, args.threads)
                results.append(r)
                print(f"{runtime:>7} max_batch={mb:3d} threads={args.threads or 'default'}: "
                      f"{r['requests_per_s']:7.1f} requests/s  p50 {r['latency_ms']['p50']:6.1f} ms  "
                      f"p99 {r['latency_ms']['p99']:6.1f} ms  {r['images_per_forward']:5.2f} images/forward  "
                      f"server RSS {r['rss_mb']} MiB  {r['failures']} failed", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
