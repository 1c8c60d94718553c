"""Everything a run trains with, built from its config: device, data, model, Learner.

Every input error (a bad path, a data source that does not fit the task, a checkpoint of the wrong
architecture) surfaces here, before any training.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fastlab import registry
from fastlab.accel import compile_forward, tune_backends, use_channels_last
from fastlab.callbacks.core import Callback
from fastlab.config import IMAGENET, RunConfig
from fastlab.context import RunContext
from fastlab.data.base import Bunch
from fastlab.data.place import Place
from fastlab.distributed import Context, GradientAllReduce, ShardedLoader, check_batch, device_for
from fastlab.errors import ConfigError
from fastlab.learner import Learner
from fastlab.models.imagenet import read_imagenet
from fastlab.models.meta import ModelMeta
from fastlab.models.zoo import LoadReport, load_pretrained, read_checkpoint, zoo_path
from fastlab.rng import random_states, restore_random_states, seed_everything
from fastlab.tasks import Task, get_task, supporting
from fastlab.tta import check_tta

log = logging.getLogger("fastlab")


def gpu_for_job(job_num: int, n_gpus: int) -> int:
    """The GPU a multirun's job ``job_num`` trains on: round robin, so parallel jobs spread over
    the visible GPUs (several small trials share one when there are more jobs than GPUs)."""
    return job_num % max(1, n_gpus)


def resolve_device(name: str, job_num: int | None = None) -> torch.device:
    """``trainer.device``; ``auto`` is CUDA when there is a GPU (a multirun's job ``job_num`` on
    its share of several), else the CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if job_num is not None and torch.cuda.device_count() > 1:
            return torch.device("cuda", gpu_for_job(job_num, torch.cuda.device_count()))
        return torch.device("cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here: use trainer.device=cpu or auto")
    return torch.device(name)


@dataclass
class Prepared:
    """Everything a run trains with, built from its config and nothing else."""

    run: RunConfig
    task: Task
    data: Bunch
    model: nn.Module
    learn: Learner
    meta: ModelMeta  # what model.pt records about the model and its data (learn.meta)
    pretrained: LoadReport | None
    pretrained_meta: dict | None = None  # what the pretrained checkpoint records about its data
    ctx: Context = field(default_factory=Context)
    channels_last: bool = False
    place: Place = field(default_factory=Place)  # where the data lives, what the process keeps

    def data_at(self, size: int) -> Bunch:
        """The run's data re-made with images of side ``size`` (progressive resizing): the same
        split, normalisation rule, device and sharding. Building it draws no random numbers
        that training would see."""
        saved = random_states(None)
        try:
            data = self.task.build_data(at_size(self.run, size), self.pretrained_meta, self.place)
        finally:
            restore_random_states(saved)
        data.to(self.learn.device, max_resident_gb=self.run.trainer.max_resident_gb)
        return finish_data(data, self.channels_last, self.ctx)


def at_size(run: RunConfig, size: int) -> RunConfig:
    """``run`` with its images at side ``size``; a presize keeps its ratio to the side."""
    d = run.data
    presize = None if d.presize is None else math.ceil(d.presize * size / d.size)
    return dataclasses.replace(run, data=dataclasses.replace(d, size=size, presize=presize))


def finish_data(data: Bunch, channels_last: bool, ctx: Context) -> Bunch:
    """Batches in NHWC order when the model is, and the training loader sharded over the ranks
    of a data-parallel run (channels-last is set before sharding wraps the loader)."""
    if channels_last:
        data.train.channels_last = data.valid.channels_last = True
    if ctx.distributed:
        data.train = ShardedLoader(data.train, ctx.rank, ctx.world)
    return data


def check_fit(run: RunConfig, task: Task) -> None:
    """The data source must yield what the task learns from (masks for segment, text for the
    text tasks, ...) and the architecture must have the role the task builds (both read off the
    registry); ``data.presize`` and ``schedule.sizes`` need a task that supports them
    (``Task.supports``)."""
    kind = type(run.data).kind
    if kind not in task.data_kinds:
        fits = sorted(registry.options("data", lambda e: e.schema.kind in task.data_kinds))
        raise ConfigError(f"data={run.data.name} gives {kind} but task={task.name} learns from "
                          f"{' or '.join(sorted(task.data_kinds))}: use data= one of {fits}")
    if task.arch_role not in registry.get("arch", run.arch.name).tags:
        fits = sorted(registry.options("arch", lambda e: task.arch_role in e.tags))
        raise ConfigError(f"arch={run.arch.name} does not fit task={task.name}: use arch= one of {fits}")
    if run.data.presize is not None and not task.can("presize"):
        raise ConfigError(f"data.presize keeps images larger than data.size, but task={task.name} does not presize "
                          f"its data (data={run.data.name} gives {kind}): set data.presize=null (it works with "
                          f"task= one of {supporting('presize')})")
    if run.schedule.sizes is not None and not task.can("sizes"):
        raise ConfigError(f"schedule.sizes trains at several image sides, but task={task.name} does not resize its "
                          f"data (data={run.data.name} gives {kind}): set schedule.sizes=null (it works with "
                          f"task= one of {supporting('sizes')})")


def prepare(run: RunConfig, cbs: Sequence[Callback] = (), ctx: Context | None = None,
            context: RunContext | None = None) -> Prepared:
    """Data, model (with its pretrained body when asked) and Learner for ``run`` (in a
    data-parallel run, this rank's). Every input error surfaces here, before any training."""
    ctx = ctx or Context()
    context = context or RunContext()
    place = Place.of(run, context.keep)  # the run's own cache settings, wherever it is prepared
    task = get_task(run.task)
    check_fit(run, task)
    check_tta(run, task)
    # Progressive resizing starts at the first side (fastlab.run.stage_start re-makes the data).
    data_run = at_size(run, run.schedule.sizes[0]) if run.schedule.sizes else run
    if run.aug.active or run.data.presize is not None:
        # fast.ai's batch augmentation of the training images, and presizing's resize to
        # data.size, in one resampling (fastlab.callbacks.augment)
        from fastlab.callbacks.augment import augment_callback

        cbs = [augment_callback(data_run, ctx.rank, task), *cbs]
    check_batch(run.data.bs, ctx)
    device = device_for(ctx, resolve_device(run.trainer.device, context.job_num))
    if run.trainer.precision == "16-mixed" and device.type != "cuda":
        raise ConfigError("trainer.precision=16-mixed needs a CUDA device: use bf16-mixed (works on CPU) or 32")
    if run.data.url:
        from fastlab.data.external import untar_data

        if not ctx.main:  # rank 0 fetches; the others wait and find it cached
            torch.distributed.barrier()
        folder = untar_data(run.data.url, sha256=run.data.sha256)
        if ctx.main and ctx.distributed:
            torch.distributed.barrier()
        run.data.path = str(folder / run.data.path) if run.data.path else str(folder)
    ckpt = ckpt_path = imagenet = None
    if run.arch.pretrained == IMAGENET:
        # The architecture's published weights, from its library's cache (fetched into it on first
        # use; offline, one line at once) or arch.weights: read here, before the data is built.
        # read once per sweep worker (context.keep), from the caches these variables name
        where = tuple(os.environ.get(k) for k in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME"))
        imagenet = context.keep.kept("imagenet", (repr(run.arch), where), lambda: read_imagenet(run.arch))
    elif run.arch.pretrained:
        ckpt_path = zoo_path(run.arch.pretrained, run.paths.models)
        # read once per sweep worker (context.keep): the weights are copied into each model
        stat = ckpt_path.stat()
        ckpt = context.keep.kept("checkpoint", (str(ckpt_path.resolve()), stat.st_mtime_ns, stat.st_size),
                          lambda: read_checkpoint(ckpt_path))
    # what the data is normalised for: ImageNet's statistics, or the zoo checkpoint's data
    pretrained_meta = imagenet.meta if imagenet is not None else ckpt["meta"] if ckpt is not None else None
    data = task.build_data(data_run, pretrained_meta, place)
    seed_everything(run.seed)  # right before the model: init, dropout and nothing else
    model = task.build_model(run, data)
    arch_config = dict(vars(run.arch))
    if imagenet is not None:
        report = imagenet.load_into(model)
    else:
        report = load_pretrained(model, ckpt, ckpt_path, run.arch.body_arch, arch_config) if ckpt is not None else None
    data.to(device, max_resident_gb=run.trainer.max_resident_gb)
    sample, _ = next(iter(data.valid))
    channels_last = use_channels_last(run.trainer.channels_last, device, sample)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    finish_data(data, channels_last, ctx)
    if ctx.distributed:
        cbs = [GradientAllReduce(ctx.world), *cbs]
    s = run.schedule
    learn = Learner(model, data, task.loss(run), task.new_metrics(), opt=s.opt, wd=s.wd, lr_ratio=s.lr_ratio,
                    precision=run.trainer.precision, progress=run.trainer.progress if ctx.main else "none", cbs=cbs,
                    sqr_mom=s.sqr_mom, eps=s.eps, wd_bn_bias=s.wd_bn_bias, accumulate=run.trainer.accumulate)
    learn.train_bn = s.train_bn
    tune_backends(device)  # the device path (see fastlab.accel)
    if run.trainer.compile:
        learn.forward = compile_forward(learn.model, sample, learn._autocast)
    # what model.pt will record (the data's statistics are settled now that it is on its device):
    # Learner.predict reads inputs the task's way with it
    meta = task.model_meta(run, data)
    learn.meta = meta
    log.info("training %s on %s (%d train / %d valid items, %d outputs) on %s", run.arch.name,
             run.data.name, len(data.train_items), len(data.valid_items), data.c, device)
    return Prepared(run, task, data, model, learn, meta, report, pretrained_meta, ctx, channels_last, place)
