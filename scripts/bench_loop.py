"""fastlab's Learner against a plain hand-written PyTorch loop: same model, data, batch size and
one-cycle schedule, in one process, alternating, several repeats. Prints seconds per epoch for
both and the ratio (target: <= 1.05 on the default digits CNN on CPU).

    .venv/bin/python scripts/bench_loop.py [--repeats 5] [--epochs 3] [--arch cnn] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from fastlab.data import DataBunch
from fastlab.data.images.sources import DigitsData
from fastlab.learner import Learner
from fastlab.models import create_model
from fastlab.models.cnn import CnnArch
from fastlab.models.resnet import ResnetArch
from fastlab.tasks.classify import CLASSIFY

LR, DIV, DIV_FINAL, PCT, MOMS, WD = 3e-3, 25.0, 1e5, 0.25, (0.95, 0.85, 0.95), 0.01


def fresh_model(arch: str, data: DataBunch, seed: int):
    torch.manual_seed(seed)
    cfg = CnnArch() if arch == "cnn" else ResnetArch(name=arch)
    return create_model(cfg, data.n_channels, data.c).to(data.device)


def run_fastlab(model, data: DataBunch, epochs: int) -> float:
    learn = Learner(model, data, CLASSIFY.loss_func, CLASSIFY.metrics, wd=WD, progress="none")
    start = time.perf_counter()
    learn.fit_one_cycle(epochs, LR, div=DIV, div_final=DIV_FINAL, pct_start=PCT, moms=MOMS)
    sync(data.device)
    return (time.perf_counter() - start) / epochs


def run_plain(model, data: DataBunch, epochs: int) -> float:
    """What one writes by hand: AdamW + torch's OneCycleLR, a train pass and a validation pass
    computing loss and accuracy every epoch."""
    start = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(MOMS[0], 0.99), eps=1e-5, weight_decay=WD)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=epochs * len(data.train), pct_start=PCT, div_factor=DIV,
        final_div_factor=DIV_FINAL / DIV, base_momentum=MOMS[1], max_momentum=MOMS[0])
    for _ in range(epochs):
        model.train()
        train_losses = []
        for xb, yb in data.train:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            train_losses.append(loss.detach())
        model.eval()
        total, correct, loss_sum = 0, 0, 0.0
        with torch.no_grad():
            for xb, yb in data.valid:
                pred = model(xb)
                loss_sum += F.cross_entropy(pred, yb, reduction="sum").item()
                correct += (pred.argmax(1) == yb).sum().item()
                total += len(yb)
        _ = (torch.stack(train_losses).mean().item(), loss_sum / total, correct / total)
    sync(data.device)
    return (time.perf_counter() - start) / epochs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    data = DataBunch.from_config(DigitsData(size=args.size, bs=args.bs)).to(args.device)
    # warm-up: first-call costs (allocator, kernels) must not count against either side
    run_plain(fresh_model(args.arch, data, 0), data, 1)
    run_fastlab(fresh_model(args.arch, data, 0), data, 1)
    times: dict[str, list[float]] = {"fastlab": [], "plain": []}
    for r in range(args.repeats):
        order = ("fastlab", "plain") if r % 2 == 0 else ("plain", "fastlab")
        for name in order:
            fn = run_fastlab if name == "fastlab" else run_plain
            times[name].append(fn(fresh_model(args.arch, data, r), data, args.epochs))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["fastlab"] / med["plain"]
    print(f"bench_loop: arch={args.arch} size={args.size} bs={args.bs} device={args.device} "
          f"epochs={args.epochs} repeats={args.repeats} threads={torch.get_num_threads()}")
    print(f"{'loop':<10}{'median s/epoch':>16}{'min':>10}{'max':>10}")
    for k, v in times.items():
        print(f"{k:<10}{med[k]:>16.4f}{min(v):>10.4f}{max(v):>10.4f}")
    print(f"ratio fastlab/plain = {ratio:.3f} (target <= 1.05)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "seconds_per_epoch": times, "median": med, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
