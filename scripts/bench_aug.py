"""Images per second of fastlab's batch augmentation against fastai's and torchvision's.

    .venv/bin/python scripts/bench_aug.py [--quick] [--json outputs/bench/bench_aug.json]
        [--device auto|cpu|cuda] [--fastai-python /tmp/venv-fastai/bin/python] [--threads N]

The same work on every side: aug_transforms()' defaults (flip, rotate 10, zoom 1.1, warp 0.2,
lighting 0.2) on batches of 64 random uint8 images (3, S, S) at S = 32 and 128 px, from the host
to a normalised float batch on the device, and the same number of images per timed window.

- fastlab: ``aug=fastai`` (``fastlab/conf/aug/fastai.yaml``) as training runs it: a
  ``TensorLoader`` copies each uint8 batch to the device, scales it to [0, 1] and normalises it,
  then the ``Augment`` callback undoes the normalisation, augments (``BatchAugment``: one
  ``grid_sample`` per batch) and normalises again.
- fastai: ``aug_transforms()`` in a training ``after_batch`` Pipeline (``IntToFloatTensor``,
  the augmentation, ``Normalize``), run by another interpreter that has fastai
  (``--fastai-python``, made by ``scripts/fastai_venv.sh``; see ``scripts/bench_aug_fastai.py``).
  Without one its rows say why they are missing.
- torchvision: what a typical user writes: a Dataset of decoded uint8 CHW tensors (what
  ``torchvision.io.decode_image`` gives) with a per-item ``transforms.v2`` pipeline as close to
  aug_transforms() as v2 goes, in a ``DataLoader(batch_size=64, num_workers=2)``; each batch is
  then copied to the device. Its augmentation runs in the worker processes on the CPU whatever
  the device.

Every side first runs one untimed window (warm-up: imports, kernels, worker start-up), then the
sides take turns, one window each per round in a rotating order, so load that drifts (other
processes on a small machine) falls on all of them alike; the figure is each side's median
window. ``ratio`` is fastlab's images/s over the side's: above 1, fastlab is faster. Figures are
printed, never asserted: a test runs ``--quick`` only to see the table come out.

On a CPU that other processes keep busy, torch's OpenMP threads (one per core) spin waiting for
each other at every operation and fastlab's and fastai's figures fall up to 30 times (the workers
of torchvision's loader, one thread each, much less). Run there with ``OMP_WAIT_POLICY=PASSIVE``
in the environment (the fastai process inherits it) or with ``--threads 1``; the load average at
the start and the end and the OpenMP settings are printed with the table to tell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper module

from bench_aug_fastai import IMAGENET_MEAN, IMAGENET_STD, make_images, time_window  # noqa: E402
from bench_report import markdown_table, write_figures  # noqa: E402

import fastlab  # noqa: E402
from fastlab.callbacks.augment import Augment  # noqa: E402
from fastlab.config import AugConfig  # noqa: E402
from fastlab.data.images.bunch import TensorLoader  # noqa: E402

HELPER = Path(__file__).resolve().parent / "bench_aug_fastai.py"
BS = 64
SIDES = ("fastlab", "fastai", "torchvision")


def fastai_aug_config() -> AugConfig:
    """``aug=fastai`` read from its YAML (its values over the schema's defaults)."""
    path = Path(fastlab.__file__).resolve().parent / "conf" / "aug" / "fastai.yaml"
    values = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}
    return AugConfig(**values)


class Unavailable(Exception):
    """A side that cannot run here; its message is the row's reason."""


# ---------------------------------------------------------------------------------- fastlab


class FastlabSide:
    """A ``TensorLoader`` over the host's uint8 images (each batch copied to the device, scaled and
    normalised there) feeding the ``Augment`` callback, on a stand-in for the learner that holds
    only what the callback reads: ``training``, ``lr_finding``, ``xb``, ``yb`` and ``data.train``'s
    statistics (the quick test breaks here first when the callback reads something new)."""

    name = "fastlab"

    def __init__(self, device: str, cfg: AugConfig):
        self.device, self.cfg = device, cfg

    def prepare(self, size: int, batches: int) -> None:
        x, y = make_images(batches * BS, size)
        loader = TensorLoader(x, y, BS, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))
        # resident=False: every batch comes from the host, as it does for fastai and torchvision
        self.loader = loader.to(torch.device(self.device), resident=False)
        self.learn = SimpleNamespace(training=True, lr_finding=False, xb=None, yb=None,
                                     data=SimpleNamespace(train=self.loader))
        self.callback = Augment(self.cfg, seed=0)
        self.callback.learn = self.learn
        self.images = batches * BS

    def window(self) -> float:
        def run() -> None:
            for xb, yb in self.loader:  # (B, 3, S, S) float, normalised, on the device
                self.learn.xb, self.learn.yb = xb, yb
                self.callback.before_batch()

        return time_window(run, self.images, self.device)

    def finish_size(self) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------- fastai


class FastaiSide:
    """fastai in its own interpreter (``scripts/bench_aug_fastai.py``), kept running so that its
    windows take turns with the other sides'."""

    name = "fastai"

    def __init__(self, device: str, python: str | None, threads: int):
        self.device, self.proc, self.info = device, None, {}
        if not python:
            raise Unavailable("no --fastai-python given (scripts/fastai_venv.sh makes one)")
        if not Path(python).exists():
            raise Unavailable(f"--fastai-python {python} does not exist (scripts/fastai_venv.sh makes it)")
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([python, str(HELPER), json.dumps({"bs": BS, "threads": threads})], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        first = self._read()
        if "error" in first:
            self.close()
            raise Unavailable(first["error"])
        if first["torch"] != torch.__version__:
            self.close()
            raise Unavailable(f"{python} has torch {first['torch']}, fastlab's env {torch.__version__}: "
                              "make it with scripts/fastai_venv.sh, which reuses fastlab's torch")
        self.info = {k: first[k] for k in ("version", "torch", "pipeline")}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
            raise Unavailable(f"the fastai process ended (exit {self.proc.returncode}): "
                              f"{lines[-1] if lines else 'no message'}")
        return json.loads(line)

    def prepare(self, size: int, batches: int) -> None:
        self.size, self.batches = size, batches

    def window(self) -> float:
        self.proc.stdin.write(json.dumps({"size": self.size, "batches": self.batches, "device": self.device}) + "\n")
        self.proc.stdin.flush()
        return self._read()["images_per_s"]

    def finish_size(self) -> None:
        pass

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


# ----------------------------------------------------------------------------- torchvision


def v2_aug_transforms() -> v2.Compose:
    """aug_transforms()' defaults as near as ``transforms.v2`` goes, per item. Differences: rotate
    and zoom share one draw of p=0.75 (``RandomAffine`` holds both) where fastai draws each; the
    outside is filled with black, not reflected; lighting is ``ColorJitter``'s, not fastai's
    logit-space one. uint8 until the end (v2's geometric kernels are fastest on uint8)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.RandomAffine(degrees=10, scale=(1.0, 1.1))], p=0.75),
        v2.RandomPerspective(distortion_scale=0.2, p=0.75),
        v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.75),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class UInt8Images(Dataset):
    """Decoded images held in memory, uint8 ``(N, 3, S, S)``, each through ``tfm`` as it is read."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, tfm: v2.Compose):
        self.x, self.y, self.tfm = x, y, tfm

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tfm(self.x[i]), self.y[i]


class TorchvisionSide:
    """One epoch of a ``DataLoader(num_workers=2, persistent_workers=True)`` per window: the workers
    idle between windows, so they take no CPU from the side being timed."""

    name = "torchvision"

    def __init__(self, device: str, workers: int = 2):
        self.device, self.workers, self.loader = device, workers, None

    def prepare(self, size: int, batches: int) -> None:
        x, y = make_images(batches * BS, size)
        cuda = self.device.startswith("cuda")
        self.loader = DataLoader(UInt8Images(x, y, v2_aug_transforms()), batch_size=BS, shuffle=True,
                                 num_workers=self.workers, persistent_workers=True, pin_memory=cuda)
        self.images = batches * BS

    def window(self) -> float:
        def run() -> None:
            for xb, yb in self.loader:  # (B, 3, S, S) float, normalised, on the host
                xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

        return time_window(run, self.images, self.device)

    def finish_size(self) -> None:
        # Dropping the loader ends its persistent workers before the next size starts its own.
        self.loader = None

    def close(self) -> None:
        self.loader = None


# ------------------------------------------------------------------------------------ run


def bench_device(device: str, sizes: list[int], batches: int, repeats: int, fastai_python: str | None,
                 cfg: AugConfig, threads: int) -> tuple[list[dict], dict]:
    """Rows ``{"device", "size", "side", "images_per_s", "windows"}`` (or ``"unavailable"``) for
    every side and size on ``device``, and what the fastai process said about itself."""
    sides: list = [FastlabSide(device, cfg)]
    unavailable: dict[str, str] = {}
    try:
        sides.append(FastaiSide(device, fastai_python, threads))
    except Unavailable as e:
        unavailable["fastai"] = str(e)
    sides.append(TorchvisionSide(device))
    fastai_info = next((s.info for s in sides if s.name == "fastai"), {})
    rows = []
    try:
        for size in sizes:
            rates: dict[str, list[float]] = {s.name: [] for s in sides}
            print(f"{device} {size} px: {', '.join(rates)} ...", file=sys.stderr, flush=True)
            # round 0 is the warm-up of every side, not counted; then the order rotates each round
            for r in range(repeats + 1):
                for s in sides[r % len(sides):] + sides[:r % len(sides)]:
                    try:
                        if r == 0:
                            s.prepare(size, batches)
                        rate = s.window()
                    except Unavailable as e:  # the fastai process died
                        unavailable[s.name] = str(e)
                        sides.remove(s)
                        del rates[s.name]
                        continue
                    if r > 0:
                        rates[s.name].append(rate)
            for s in sides:
                s.finish_size()
            for name in SIDES:
                row = {"device": device, "size": size, "side": name}
                if name in rates:
                    row.update(images_per_s=statistics.median(rates[name]), windows=rates[name])
                else:
                    row["unavailable"] = unavailable.get(name, "not run")
                rows.append(row)
    finally:
        for s in sides:
            s.close()
    return rows, fastai_info


def add_ratios(rows: list[dict]) -> None:
    """``ratio``: fastlab's images/s over each other side's at the same device and size."""
    ours = {(r["device"], r["size"]): r["images_per_s"] for r in rows if r["side"] == "fastlab"}
    for r in rows:
        if "images_per_s" in r and r["side"] != "fastlab":
            r["ratio"] = ours[r["device"], r["size"]] / r["images_per_s"]


def table(rows: list[dict]) -> str:
    out = [("device", "size", "side", "images/s", "fastlab / side")]
    for r in rows:
        if "images_per_s" in r:
            spread = f"{min(r['windows']):.0f}..{max(r['windows']):.0f}"
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
            out.append((r["device"], f"{r['size']} px", r["side"], f"{r['images_per_s']:.0f} ({spread})", ratio))
        else:
            out.append((r["device"], f"{r['size']} px", r["side"], f"unavailable: {r['unavailable']}", ""))
    return markdown_table(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few seconds' run for the test (figures not for quoting)")
    ap.add_argument("--json", default="outputs/bench/bench_aug.json", help="where to write the figures")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: the CPU, and CUDA too when there is one")
    ap.add_argument("--fastai-python", default=None, help="a python that has fastai (scripts/fastai_venv.sh)")
    ap.add_argument("--batches", type=int, default=None, help="batches of 64 per timed window (20; --quick 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed windows per side (5; --quick 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of fastlab's and fastai's process (default torch's, one per core); "
                         "1 on a machine that other work keeps busy, where threads wait for each other")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here; use --device cpu or auto")
    devices = {"cpu": ["cpu"], "cuda": ["cuda"]}.get(args.device, ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    batches = args.batches or (2 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 5)
    cfg = fastai_aug_config()
    start, load = time.perf_counter(), os.getloadavg()
    res: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                             "threads": torch.get_num_threads(), "platform": platform.platform(),
                             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
                 "quick": args.quick, "batch_size": BS, "batches_per_window": batches, "repeats": repeats,
                 "aug": dataclasses.asdict(cfg), "rows": [], "fastai": {},
                 "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}}
    for device in devices:
        rows, info = bench_device(device, [32, 128], batches, repeats, args.fastai_python, cfg, torch.get_num_threads())
        res["rows"] += rows
        res["fastai"] = res["fastai"] or info
    add_ratios(res["rows"])
    res["seconds"] = time.perf_counter() - start
    res["load_avg_1min"] = {"start": load[0], "end": os.getloadavg()[0]}
    print(table(res["rows"]))
    if res["fastai"]:
        print(f"fastai {res['fastai']['version']}: {res['fastai']['pipeline']}")
    omp = ", ".join(f"{k}={v}" for k, v in res["env"].items() if v) or "no OMP_* settings"
    print(f"{batches} batches of {BS} per window, median of {repeats} windows per side; torch threads "
          f"{torch.get_num_threads()} ({omp}; torchvision: 2 worker processes); load average {load[0]:.2f} at "
          f"the start, {res['load_avg_1min']['end']:.2f} at the end, on {os.cpu_count()} CPUs")
    write_figures(res, args.json)


if __name__ == "__main__":
    main()
