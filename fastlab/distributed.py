"""Data-parallel training with ``torch.distributed`` (``trainer.strategy=ddp`` under torchrun).

    torchrun --standalone --nproc_per_node=2 -m fastlab.cli.train trainer.strategy=ddp hydra.run.dir=RUN

Every rank builds the same model from the same seed and draws the same shuffled order of the
training set; each global batch of ``data.bs`` items is split across the ranks
(:class:`ShardedLoader`), and :class:`GradientAllReduce` averages the gradients over the ranks
before each optimiser step, so the ranks stay identical and one step equals a single process's
step on the whole global batch (batch-norm statistics aside: each rank normalises by its own
part of the batch; running statistics are averaged after every epoch). Validation runs whole on
every rank, so metrics are exact and equal everywhere; training losses are averaged over ranks.
Only rank 0 writes the run dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from fastlab.callbacks.core import Callback
from fastlab.errors import ConfigError


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(strategy: str, device_name: str) -> Context:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ...) for
    ``strategy=ddp``: NCCL on CUDA, gloo on CPU. ``single`` is one process."""
    if strategy == "single":
        return Context()
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise ConfigError("trainer.strategy=ddp needs torchrun: run `torchrun --standalone --nproc_per_node=N "
                          "-m fastlab.cli.train trainer.strategy=ddp ...`, or use trainer.strategy=single")
    ctx = Context(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        cuda = device_name != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
    return ctx


def device_for(ctx: Context, device: torch.device) -> torch.device:
    """One GPU per local rank; CPU ranks share the CPU."""
    if device.type == "cuda" and ctx.distributed:
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return device


def check_batch(bs: int, ctx: Context) -> None:
    if bs % ctx.world:
        raise ConfigError(f"data.bs={bs} does not split over {ctx.world} processes: use a multiple of {ctx.world} "
                          "(data.bs is the global batch)")


def _shard(x, rank: int, world: int):
    if isinstance(x, tuple | list):
        return type(x)(_shard(t, rank, world) for t in x)
    return x[rank::world]


class ShardedLoader:
    """This rank's part of every batch of ``loader``: items ``rank, rank + world, ...``. The
    wrapped loader shuffles with the same seeded generator on every rank, so the parts of one
    global batch are disjoint and together make the whole."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world

    @property
    def generator(self) -> torch.Generator | None:
        return getattr(self.loader, "generator", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for xb, yb in self.loader:
            yield _shard(xb, self.rank, self.world), _shard(yb, self.rank, self.world)

    def __getattr__(self, name: str):
        # what callers read of a loader besides iterating it (x, y, bs, device, ...)
        return getattr(self.loader, name)


class GradientAllReduce(Callback):
    """Average gradients (one flattened all-reduce per step) and, after each epoch's training,
    batch-norm running statistics and the epoch's batch losses over the ranks."""

    order = 40  # after_train before the Recorder (50) turns the batch losses into the epoch's mean

    def __init__(self, world: int):
        self.world = world

    def before_step(self) -> None:
        grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def after_train(self) -> None:
        floats = [b for b in self.learn.model.buffers() if b.is_floating_point()]
        if floats:
            flat = _flatten_dense_tensors(floats)
            dist.all_reduce(flat)
            flat /= self.world
            for b, synced in zip(floats, _unflatten_dense_tensors(flat, floats)):
                b.copy_(synced)
        rec = self.learn.recorder
        if rec._batch_losses:
            losses = torch.stack(rec._batch_losses)
            dist.all_reduce(losses)
            rec._batch_losses = list(losses / self.world)


def from_main(obj, ctx: Context):
    """Rank 0's ``obj`` on every rank (itself outside a data-parallel run): what every rank must
    agree on though each computed its own, as the LR finder's pick on each rank's shard. Sent as
    fastlab's own objects between its own processes, never read from a file."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(ctx: Context, barrier: bool = True) -> None:
    if ctx.distributed and dist.is_initialized():
        if barrier:  # rank 0 may still be writing: the job ends when every rank is done
            dist.barrier()
        dist.destroy_process_group()
