"""Config schemas shared by every option, and the conversion of a composed config into them.

Each option's own schema (``DigitsData``, ``CnnArch``, ``RegressTask``, ...) lives beside its
builder and is registered with it in :mod:`fastlab.registry`; this module holds the bases they
extend, the ``schedule`` and ``trainer`` schemas, and the primary config. Every schema checks
its own values in ``__post_init__`` (one line naming the key, the value and the fix), so a
config that converts is a config that can run.

YAML under ``conf/`` holds values; these dataclasses hold shape. Each option's YAML starts with
``defaults: [/<group>_<option>_schema@_here_, _self_]`` (the schemas are stored at the root of
Hydra's ConfigStore, so ``--help`` lists each option once) and then only what differs from the
schema's defaults. :func:`to_run_config` converts the composed ``DictConfig`` into plain
dataclasses at the edge; nothing past ``fastlab.run.train`` sees an OmegaConf object.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fastlab import registry
from fastlab.errors import ConfigError
from fastlab.tracking.names import parse_loggers

# ----------------------------------------------------------------------------- value checks


def is_pos(x: Any) -> bool:
    """A positive finite number (not a bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def check(ok: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``ok``: the one shape of a value check."""
    if not ok:
        raise ConfigError(message)


def check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    choices = list(choices)
    check(value in choices, f"{key}={value!r} is not known: use {', '.join(choices[:-1])} or {choices[-1]}")


def check_positive_ints(owner: Any, prefix: str, keys: Iterable[str]) -> None:
    """Each ``owner.<key>`` is an integer >= 1."""
    for key in keys:
        v = getattr(owner, key)
        check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
              f"{prefix}.{key} must be a positive integer, got {v}: e.g. {prefix}.{key}={getattr(type(owner), key, 1)}")


# ---------------------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Common keys of every data source. ``kind`` says what the source yields (``images`` with
    labels, ``masks``, ``points``, ``text``, ``table``); each task accepts some kinds."""

    kind: ClassVar[str] = "images"
    # whether data.cache=disk|none can keep the source's images out of memory (file-based image
    # sources, whose builders take the run's fastlab.data.place.Storage); the others always hold theirs
    streams: ClassVar[bool] = False
    name: str = MISSING
    path: str | None = None  # the data's folder; required by every source but the built-in ones
    bs: int = 64
    # the validation batch (null: twice bs, or more for small items: fastlab.data.base.valid_batch_size)
    valid_bs: int | None = None
    size: int = 32  # images are resized to (size, size)
    valid_pct: float = 0.2  # used when the source has no explicit validation set
    seed: int = 42  # seeds the validation split, and nothing else
    mean: list[float] | None = None  # per-channel normalisation; computed on train when null
    std: list[float] | None = None
    # fetch the data first (fastlab.data.untar_data): a tar/zip at an http(s) or file:// URL,
    # cached under outputs/data/; data.path is then relative to the extracted folder (null: it)
    url: str | None = None
    sha256: str | None = None  # the archive's expected SHA-256, checked when given
    on_bad_file: str = "error"  # error | skip: an unreadable image stops the run, or is left out and logged
    # Presizing (fast.ai's recipe): training images are kept at this larger side (e.g. 1.25 x
    # data.size) and cropped, warped and resized to data.size in one resampling per batch;
    # validation images are resized whole to data.size. null: every image is kept at data.size.
    presize: int | None = None
    # Where decoded images live (file-based image sources: folder, name_re, csv): memory (one
    # uint8 tensor), disk (decoded once into a cache file under paths.cache, read batch by batch,
    # reused by later runs), none (decoded from the files every epoch by trainer.workers
    # processes), or auto (memory up to trainer.max_resident_gb, else disk)
    cache: str = "auto"

    def __post_init__(self) -> None:
        check_choice("data.cache", self.cache, ("auto", "memory", "disk", "none"))
        check(self.bs > 0, f"data.bs must be a positive integer, got {self.bs}: set e.g. data.bs=64")
        check(self.valid_bs is None or (isinstance(self.valid_bs, int) and self.valid_bs > 0),
              f"data.valid_bs must be null or a positive integer, got {self.valid_bs}: e.g. data.valid_bs=256")
        check(self.size > 0, f"data.size must be a positive integer, got {self.size}: set e.g. data.size=32")
        check(0.0 < self.valid_pct < 1.0,
              f"data.valid_pct must lie in (0, 1), got {self.valid_pct}: set e.g. data.valid_pct=0.2")
        for key in ("mean", "std"):
            stats = getattr(self, key)
            check(stats is None or (bool(stats) and all(math.isfinite(v) for v in stats)),
                  f"data.{key} must be a list of finite numbers, got {stats}")
        check(self.std is None or all(v > 0 for v in self.std), f"data.std must be positive, got {self.std}")
        check_choice("data.on_bad_file", self.on_bad_file, ("error", "skip"))
        check((self.mean is None) == (self.std is None),
              "data.mean and data.std go together: give both, or neither to compute them")
        check(self.presize is None or (isinstance(self.presize, int) and self.presize >= self.size),
              f"data.presize must be null or an integer side >= data.size ({self.size}), got {self.presize}: "
              f"e.g. data.presize={math.ceil(self.size * 1.25)}")


# ---------------------------------------------------------------------------------------- arch


# The reserved value of arch.pretrained: the published ImageNet weights of the architecture
# (torchvision's or timm's), read from their library's cache (fastlab.models.imagenet).
IMAGENET = "imagenet"


@dataclass
class ArchConfig:
    name: str = MISSING
    # a model-zoo name (outputs/models/<name>.pt), a file path, or imagenet (see IMAGENET)
    pretrained: str | None = None
    # arch.pretrained=imagenet: auto (fetch the weights into the library's cache when they are not
    # there) | never (the cache or arch.weights only: one line saying how to fetch them elsewhere)
    download: str = "auto"

    @property
    def body_arch(self) -> str:
        """The architecture whose checkpoint ``arch.pretrained`` must be (its body is loaded)."""
        return self.name


# ------------------------------------------------------------------------------------ schedule


def _check_lr_max(lr: Any, ratio: float) -> None:
    """A positive float, a slice [lo, hi] (lo may be null), or "find"."""
    fix = "set e.g. schedule.lr_max=3e-3, schedule.lr_max=[1e-5,1e-3] or schedule.lr_max=find"
    if isinstance(lr, str):
        check(lr == "find", f"schedule.lr_max={lr!r} is not a learning rate: {fix}")
    elif isinstance(lr, list | tuple):
        check(len(lr) == 2 and is_pos(lr[1]) and (lr[0] is None or is_pos(lr[0])),
              f"schedule.lr_max={list(lr)} must be a slice [lo, hi] of positive finite numbers (lo may be null): {fix}")
        check(lr[0] is None or lr[0] <= lr[1],
              f"schedule.lr_max={list(lr)} has lo > hi: the head (hi) trains fastest")
        check(ratio == 1, "schedule.lr_max is a slice and schedule.lr_ratio is not 1: give one way of "
                          "spreading rates, not both")
    else:
        check(is_pos(lr), f"schedule.lr_max must be a positive finite number, got {lr}: {fix}")


@dataclass
class BaseSchedule:
    """What every schedule has; ``name`` picks the stage plan registered in ``fastlab.schedules``.

    An option's schema extends it with the keys its rates come from, and no others, so a key the
    schedule would ignore is refused while composing: :class:`ScheduleConfig` (``lr_max``,
    ``lr_ratio``) or a schema of its own (``fastlab.schedules.CourseSchedule``). Each says
    ``head_lr`` (the first stage's head rate as configured) and ``lr_ratio`` (the ratio between
    neighbouring layer groups' rates that the Learner and the planner spread a single rate by).
    """

    name: str = MISSING
    epochs: int = 10
    # fine_tune: epochs with the body frozen; gradual: epochs per stage; course: the frozen stage's
    freeze_epochs: int = 1
    train_bn: bool = True  # norm layers of frozen groups keep training (fast.ai's default)
    suggestion: str = "valley"  # which LR finder suggestion a head rate of "find" uses
    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    moms: list[float] = field(default_factory=lambda: [0.95, 0.85, 0.95])
    wd: float = 0.01
    opt: str = "adamw"  # adamw | sgd
    # The optimiser's other settings (fast.ai's defaults). Adam's beta1 and SGD's momentum follow moms.
    sqr_mom: float = 0.99  # AdamW's beta2
    eps: float = 1e-5  # AdamW's eps (torch's own default is 1e-8)
    wd_bn_bias: bool = False  # also decay biases and norm-layer parameters
    # Progressive resizing (fast.ai lesson 3): the whole schedule runs once per image side, in
    # order, from the same weights; the data is re-made at each side from the same split.
    # null: once, at data.size.
    sizes: list[int] | None = None

    def __post_init__(self) -> None:
        check(self.epochs > 0, f"schedule.epochs must be a positive integer, got {self.epochs}")
        check(self.freeze_epochs >= 0, f"schedule.freeze_epochs must be >= 0, got {self.freeze_epochs}")
        check_choice("schedule.suggestion", self.suggestion, ("valley", "steep", "minimum", "slide"))
        check(0.0 <= self.pct_start < 1.0, f"schedule.pct_start must lie in [0, 1), got {self.pct_start}")
        check(self.div > 0 and self.div_final > 0,
              f"schedule.div and schedule.div_final must be positive, got {self.div} and {self.div_final}")
        check(len(self.moms) == 3 and all(0.0 <= m < 1.0 for m in self.moms),
              f"schedule.moms must be three numbers in [0, 1), got {self.moms}")
        check(math.isfinite(self.wd) and self.wd >= 0, f"schedule.wd must be a finite number >= 0, got {self.wd}")
        check_choice("schedule.opt", self.opt, ("adamw", "sgd"))
        check(0.0 <= self.sqr_mom < 1.0, f"schedule.sqr_mom (AdamW's beta2) must lie in [0, 1), got {self.sqr_mom}: e.g. 0.99")
        check(math.isfinite(self.eps) and self.eps > 0, f"schedule.eps must be a positive finite number, got {self.eps}: e.g. 1e-5")
        check(self.sizes is None or (len(self.sizes) > 0 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                                  for v in self.sizes)),
              f"schedule.sizes must be null or a list of positive image sides, got {self.sizes}: e.g. schedule.sizes=[16,32]")

    @property
    def head_lr(self) -> Any:
        """The first stage's head rate as configured: a number, a slice or ``"find"``."""
        raise NotImplementedError(f"{type(self).__name__} must say where its first stage's head rate comes from")


@dataclass
class ScheduleConfig(BaseSchedule):
    """A schedule whose rates come from ``lr_max`` (and ``lr_ratio``): one_cycle, constant,
    fine_tune, gradual."""

    # The head's peak rate: a float; a slice [lo, hi] spread geometrically over the layer groups
    # ([null, hi]: hi/10 for all groups but the head); or "find" to run the LR finder first.
    lr_max: Any = 3e-3
    lr_ratio: float = 1.0  # lr of group g-1 = lr of group g / lr_ratio; 1 = no discrimination

    def __post_init__(self) -> None:
        super().__post_init__()
        check(math.isfinite(self.lr_ratio) and self.lr_ratio >= 1,
              f"schedule.lr_ratio must be a finite number >= 1, got {self.lr_ratio}: 1 means no discrimination")
        _check_lr_max(self.lr_max, self.lr_ratio)

    @property
    def head_lr(self) -> Any:
        return self.lr_max


# ---------------------------------------------------------------------------------------- task


@dataclass
class TaskConfig:
    name: str = MISSING
    objective: str = MISSING  # the metric returned to sweepers


# ------------------------------------------------------------------------------------- trainer

MONITOR_MODES = ("auto", "min", "max")


@dataclass
class SaveBestConfig:
    enabled: bool = False
    monitor: str = "valid_loss"  # valid_loss or a metric of the task
    mode: str = "auto"  # auto (from the metric) | min | max

    def __post_init__(self) -> None:
        check_choice("trainer.callbacks.save_best.mode", self.mode, MONITOR_MODES)


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "valid_loss"
    mode: str = "auto"
    patience: int = 3  # epochs without improvement before stopping
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        check_choice("trainer.callbacks.early_stopping.mode", self.mode, MONITOR_MODES)
        check(self.patience >= 0, f"trainer.callbacks.early_stopping.patience must be >= 0, got {self.patience}")


@dataclass
class MixupConfig:
    """fast.ai's MixUp: lambda ~ Beta(alpha, alpha) per image; 0 is off (fast.ai's default is 0.4)."""

    key: ClassVar[str] = "mixup"
    alpha: float = 0.0

    def __post_init__(self) -> None:
        a = self.alpha
        check(isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) and a >= 0,
              f"trainer.callbacks.{self.key}.alpha must be a finite number >= 0, got {a}: e.g. 0.4, or 0 for off")


@dataclass
class CutMixConfig(MixupConfig):
    """fast.ai's CutMix: lambda ~ Beta(alpha, alpha) per batch; 0 is off (fast.ai's default is 1.0)."""

    key: ClassVar[str] = "cutmix"


@dataclass
class CallbacksConfig:
    """Optional behaviour, each off unless asked for (``trainer.callbacks.<name>...``)."""

    save_best: SaveBestConfig = field(default_factory=SaveBestConfig)  # best.pt in the run dir
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: float | None = None  # clip the gradients' global norm to this
    csv_logger: bool = True  # rewrite history.csv after every epoch, so a running job can be watched
    mixup: MixupConfig = field(default_factory=MixupConfig)  # blend whole images and their labels
    cutmix: CutMixConfig = field(default_factory=CutMixConfig)  # paste a box of another image (and mask)

    def __post_init__(self) -> None:
        g = self.grad_clip
        check(g is None or (math.isfinite(g) and g > 0),
              f"trainer.callbacks.grad_clip must be a positive number or null, got {g}")
        check(not (self.mixup.alpha and self.cutmix.alpha),
              "trainer.callbacks.mixup.alpha and trainer.callbacks.cutmix.alpha are both on: choose one "
              "(set the other to 0)")


@dataclass
class MlflowConfig:
    """Where ``trainer.logger=[..., mlflow]`` logs (``fastlab.tracking.mlflow_store``)."""

    # null: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlruns/mlflow.db (artifacts beside it)
    uri: str | None = None
    experiment: str = "fastlab"

    def __post_init__(self) -> None:
        check(self.uri is None or (isinstance(self.uri, str) and self.uri.strip() != ""),
              f"trainer.mlflow.uri={self.uri!r} is not a tracking URI: e.g. trainer.mlflow.uri=http://host:5000, "
              "or null for the local store")
        check(isinstance(self.experiment, str) and self.experiment.strip() != "",
              f"trainer.mlflow.experiment={self.experiment!r} is not a name: e.g. trainer.mlflow.experiment=pets")


@dataclass
class WandbConfig:
    """Where ``trainer.logger=[..., wandb]`` logs (``fastlab.callbacks.wandb``)."""

    project: str = "fastlab"
    entity: str | None = None  # null: the account's default entity
    # online | offline (a run folder to sync later: wandb sync) | disabled; null: $WANDB_MODE, else online
    mode: str | None = None

    def __post_init__(self) -> None:
        check(isinstance(self.project, str) and self.project.strip() != "",
              f"trainer.wandb.project={self.project!r} is not a name: e.g. trainer.wandb.project=pets")
        check(self.entity is None or (isinstance(self.entity, str) and self.entity.strip() != ""),
              f"trainer.wandb.entity={self.entity!r} is not a name: e.g. trainer.wandb.entity=my-team, or null")
        check(self.mode is None or self.mode in ("online", "offline", "disabled"),
              f"trainer.wandb.mode={self.mode!r} is not known: use online, offline, disabled or null")


@dataclass
class TrainerConfig:
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    progress: str = "auto"  # auto (a bar on a terminal, else a line per epoch) | bar | log | none
    # Print the composed config as a tree when the run starts (never for a trial of a fastlab sweep)
    print_config: bool = False
    # Run-dir outputs: null = on for a run alone, off for a trial of a fastlab sweep
    # (fastlab.run.trial: the sweep's trials.db is its record); true or false to choose
    plots: bool | None = None
    save_model: bool | None = None
    # CPU threads for torch: null = torch's default, or the cores shared out among the parallel
    # jobs of a joblib multirun (N jobs x all-core threads would fight over the same cores)
    threads: int | None = None
    # A list of csv (history.csv every epoch), tensorboard (<run dir>/tensorboard) and mlflow
    # (trainer.mlflow); the old strings none and tensorboard still work (fastlab.tracking.names)
    logger: Any = field(default_factory=lambda: ["csv"])
    mlflow: MlflowConfig = field(default_factory=lambda: MlflowConfig())
    wandb: WandbConfig = field(default_factory=lambda: WandbConfig())
    # gradient accumulation: step the optimiser every this many batches (loss scaled by 1/N), for
    # an effective batch of data.bs x accumulate; the one-cycle schedule counts optimiser steps
    accumulate: int = 1
    # Continue an interrupted run from its last.pt: a run dir (or its last.pt), or true for this
    # run dir (a sweep's job re-run); the run's own config is used, whatever else is composed
    resume: Any = None
    save_last: bool | None = None  # write last.pt (everything a resume needs) after every epoch; null as plots
    # epoch (validate after every epoch) | final (after the last one only: a sweep objective's) |
    # auto (final for a trial of a fastlab sweep, unless a callback monitors every epoch; else epoch)
    validate: str = "auto"
    checkpoint_every_n_steps: int | None = None  # also write last.pt every this many batches
    timeout: float | None = None  # seconds: stop the run with a clear error past this (last.pt stays)
    # image data up to this size lives on the device; larger sets stay in pinned host memory and
    # are copied batch by batch (asynchronously on CUDA)
    max_resident_gb: float = 4.0
    compile: bool = False  # torch.compile the model (tried on one batch first; falls back with a message)
    channels_last: bool | None = None  # NHWC convolutions; null: on CUDA for image batches
    auto_bs: bool = False  # on out-of-memory, halve data.bs and retry from the last finished epoch
    # processes that decode images from their files with data.cache=none (0: in this process);
    # null: one per core this process may use, at most 8
    workers: int | None = None
    # single (one process) | ddp (data-parallel under torchrun; data.bs is the global batch)
    strategy: str = "single"
    callbacks: CallbacksConfig = field(default_factory=lambda: CallbacksConfig())
    # fast.ai's test-time augmentation after training (fastlab.tta; needs an active aug): the
    # validation metrics of the mean over tta_n augmented passes, mixed with the plain pass by
    # tta_beta (lerp: 0 = augmented passes only, 1 = plain only), go into metrics.json's "tta"
    tta: bool = False
    tta_n: int = 4
    tta_beta: float = 0.25

    @property
    def loggers(self) -> tuple[str, ...]:
        """The loggers ``trainer.logger`` (and the old ``trainer.callbacks.csv_logger``) ask for."""
        return parse_loggers(self.logger, self.callbacks.csv_logger)

    def __post_init__(self) -> None:
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              f"trainer.device={self.device!r} is not known: use auto, cpu or cuda")
        check_choice("trainer.precision", self.precision, ("32", "bf16-mixed", "16-mixed"))
        check_choice("trainer.progress", self.progress, ("auto", "bar", "log", "none"))
        check(self.threads is None or self.threads >= 1, f"trainer.threads must be >= 1 or null, got {self.threads}")
        w = self.workers
        check(w is None or (isinstance(w, int) and not isinstance(w, bool) and w >= 0),
              f"trainer.workers must be an integer >= 0 or null, got {w!r}: e.g. trainer.workers=4, 0 for none")
        n = self.checkpoint_every_n_steps
        check(n is None or n >= 1, f"trainer.checkpoint_every_n_steps must be >= 1 or null, got {n}")
        check(self.timeout is None or (math.isfinite(self.timeout) and self.timeout > 0),
              f"trainer.timeout must be a positive number of seconds or null, got {self.timeout}")
        check(self.resume is None or isinstance(self.resume, bool | str),
              f"trainer.resume={self.resume!r} is not a run dir: use trainer.resume=<run dir>, true or null")
        check(math.isfinite(self.max_resident_gb) and self.max_resident_gb >= 0,
              f"trainer.max_resident_gb must be a number >= 0, got {self.max_resident_gb}")
        check_choice("trainer.strategy", self.strategy, ("single", "ddp"))
        check_choice("trainer.validate", self.validate, ("auto", "epoch", "final"))
        parse_loggers(self.logger)  # one ConfigError line for a name that is not a logger
        a = self.accumulate
        check(isinstance(a, int) and not isinstance(a, bool) and a >= 1,
              f"trainer.accumulate must be a positive integer (batches per optimiser step), got {a!r}: "
              "e.g. trainer.accumulate=4, or 1 for none")
        check(isinstance(self.tta, bool), f"trainer.tta must be true or false, got {self.tta!r}: e.g. trainer.tta=true")
        check(isinstance(self.tta_n, int) and not isinstance(self.tta_n, bool) and self.tta_n >= 1,
              f"trainer.tta_n must be a positive integer (augmented passes), got {self.tta_n}: e.g. trainer.tta_n=4")
        b = self.tta_beta
        check(isinstance(b, int | float) and not isinstance(b, bool) and 0.0 <= b <= 1.0,
              f"trainer.tta_beta must lie in [0, 1] (the plain pass's weight), got {b}: e.g. trainer.tta_beta=0.25")


# ----------------------------------------------------------------------------------------- aug


@dataclass
class AugConfig:
    """fast.ai's batch augmentation (``aug_transforms``' names and meanings), drawn per image of
    every training batch (``fastlab.data.augment``); validation and prediction see plain images.
    The defaults change nothing: ``aug=none``. ``aug=fastai`` is ``aug_transforms()``' defaults."""

    name: str = "none"
    flip: bool = False  # left-right flip with probability 0.5
    flip_vert: bool = False  # with flip: also up-down flips and transposes (fastai's Dihedral)
    max_rotate: float = 0.0  # degrees, uniform in [-max_rotate, max_rotate]
    min_zoom: float = 1.0  # zoom factor uniform in [min_zoom, max_zoom]; > 1 zooms in
    max_zoom: float = 1.0
    max_warp: float = 0.0  # perspective warp magnitude, uniform in [-max_warp, max_warp]
    max_lighting: float = 0.0  # brightness and contrast change (fastai's logit-space lighting)
    p_affine: float = 0.75  # probability of each of rotate, zoom and warp
    p_lighting: float = 0.75
    crop: bool = False  # random resized (square) crop of area fraction in [min_scale, 1]
    min_scale: float = 0.35

    def __post_init__(self) -> None:
        for key in ("flip", "flip_vert", "crop"):
            v = getattr(self, key)
            check(isinstance(v, bool), f"aug.{key} must be true or false, got {v!r}: e.g. aug.{key}=true")
        check(self.flip or not self.flip_vert,
              "aug.flip_vert=true needs aug.flip=true: vertical flips are part of fastai's flip")
        check(is_pos(self.max_rotate) or self.max_rotate == 0,
              f"aug.max_rotate must be a number of degrees >= 0, got {self.max_rotate}: e.g. aug.max_rotate=10")
        check(is_pos(self.min_zoom) and is_pos(self.max_zoom) and self.min_zoom <= self.max_zoom,
              f"aug.min_zoom and aug.max_zoom must be positive with min <= max, got {self.min_zoom} and "
              f"{self.max_zoom}: e.g. aug.min_zoom=1.0 aug.max_zoom=1.1")
        for key in ("max_warp", "max_lighting"):
            v = getattr(self, key)
            check(isinstance(v, int | float) and 0 <= v < 1, f"aug.{key} must lie in [0, 1), got {v}: e.g. aug.{key}=0.2")
        for key in ("p_affine", "p_lighting"):
            v = getattr(self, key)
            check(isinstance(v, int | float) and 0 <= v <= 1, f"aug.{key} is a probability in [0, 1], got {v}: e.g. aug.{key}=0.75")
        check(isinstance(self.min_scale, int | float) and 0 < self.min_scale <= 1,
              f"aug.min_scale must lie in (0, 1], got {self.min_scale}: e.g. aug.min_scale=0.35")

    @property
    def active(self) -> bool:
        """Whether any transform changes an image (``aug=none`` and all-neutral values do not)."""
        return (self.flip or self.max_rotate > 0 or self.min_zoom != 1 or self.max_zoom != 1 or self.max_warp > 0
                or self.crop or self.max_lighting > 0)


# ---------------------------------------------------------------------------------------- root

_ZOO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class PathsConfig:
    models: str = "outputs/models"
    cache: str = "outputs/cache"  # decoded-image caches (data.cache=disk); rm -rf it to clear them


@dataclass
class TrainConfig:
    """The primary config. Group nodes are typed by their option's schema, hence ``Any`` here."""

    data: Any = MISSING
    arch: Any = MISSING
    schedule: Any = MISSING
    task: Any = MISSING
    trainer: Any = MISSING
    aug: Any = MISSING
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    save_as: str | None = None  # also save the trained model into the zoo as paths.models/<save_as>.pt


@dataclass
class RunConfig:
    """A composed run as plain dataclasses: what ``fastlab.run.train.train`` works from. The config
    exists once: the run dir's ``.hydra/config.yaml``, ``last.pt`` and ``model.pt`` record
    :meth:`to_dict` of this object."""

    data: DataConfig
    arch: ArchConfig
    schedule: BaseSchedule
    task: TaskConfig
    trainer: TrainerConfig
    seed: int
    paths: PathsConfig
    save_as: str | None = None
    aug: AugConfig = field(default_factory=AugConfig)  # none: a RunConfig built in Python needs none

    def __post_init__(self) -> None:
        check(self.save_as is None or bool(_ZOO_NAME.fullmatch(str(self.save_as))),
              f"save_as={self.save_as!r} is not a plain name: use letters, digits, '-' and '_'")
        check(self.save_as != IMAGENET, f"save_as={IMAGENET} is reserved (arch.pretrained={IMAGENET} means the "
                                        "published ImageNet weights): pick another name")

    def to_dict(self) -> dict:
        """Plain values, as a composed config holds them (``to_run_config`` reads it back)."""
        return dataclasses.asdict(self)


def schema_name(group: str, option: str) -> str:
    """The ConfigStore name of an option's schema (at the store's root: not an option itself)."""
    return f"{group}_{option}_schema"


def config_dir() -> Path:
    """``fastlab/conf``: in a source checkout a link to the top-level ``conf/``, in a wheel the
    configs themselves."""
    return Path(__file__).resolve().parent / "conf"


def register_configs() -> None:
    """Store the primary schema, the trainer's, and one schema per registered option."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="trainer_schema", node=TrainerConfig)
    cs.store(name="aug_schema", node=AugConfig)
    for group in registry.GROUPS:
        for option, entry in registry.options(group).items():
            cs.store(name=schema_name(group, option), node=entry.schema)


def build(schema: type, values: dict, where: str) -> Any:
    """``schema(**values)``, building nested dataclass fields from dicts; an unknown key is a
    ``ConfigError`` naming it and the known keys."""
    known = {f.name: f for f in dataclasses.fields(schema)}
    # keys the schema no longer has that configs saved before (model.pt, last.pt) still hold
    values = {k: v for k, v in values.items() if k not in getattr(schema, "retired", ())}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}: the keys are {sorted(known)}")
    kwargs = {}
    for key, value in values.items():
        f = known[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = build(type(default), value, f"{where}.{key}")
        kwargs[key] = value
    return schema(**kwargs)


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def option_config(group: str, node: Any) -> Any:
    """A group's composed node as its option's schema, picked by the node's ``name`` (so a
    user's own option, added with ``--config-dir``, is checked as the built-in one it names)."""
    values = _container(node)
    if not isinstance(values, dict) or "name" not in values:
        raise ConfigError(f"{group} has no 'name' key: choose an option, e.g. {group}=<option>")
    return build(registry.get(group, values["name"]).schema, values, group)


def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Convert a composed config into dataclasses, each of which checks its own values."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    # Nothing outside the schema: in particular no ``_target_`` (fastlab never instantiates
    # classes named in a run's config; only Hydra's own launcher and sweeper nodes do).
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(str(k) for k in cfg.keys() if k not in known)
    if unknown:
        raise ConfigError(f"the config has unknown top-level key(s) {unknown}: the keys are {sorted(known)}")
    return RunConfig(
        data=option_config("data", cfg.data),
        arch=option_config("arch", cfg.arch),
        schedule=option_config("schedule", cfg.schedule),
        task=option_config("task", cfg.task),
        trainer=build(TrainerConfig, _container(cfg.trainer), "trainer"),
        seed=int(cfg.get("seed", 0)),
        paths=build(PathsConfig, _container(cfg.get("paths", {})), "paths"),
        save_as=cfg.get("save_as"),
        aug=_aug_config(cfg),
    )


def _aug_config(cfg: DictConfig) -> AugConfig:
    # A config saved before the aug group existed (a resumed or re-read run) has no node: none.
    if "aug" not in cfg or OmegaConf.is_missing(cfg, "aug") or cfg.aug is None:
        return AugConfig()
    return build(AugConfig, _container(cfg.aug), "aug")
