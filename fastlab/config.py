"""Config schemas: the shape of every config group option, registered in Hydra's ConfigStore.

YAML under ``conf/`` holds values; these dataclasses hold shape. Each group option's YAML starts
with ``defaults: [<name>_schema, _self_]`` so Hydra checks keys and types while composing, before
any training. :func:`to_run_config` converts the composed ``DictConfig`` into plain dataclasses at
the edge; nothing past ``fastlab.train`` sees an OmegaConf object.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fastlab.errors import ConfigError

# ---------------------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """Common keys of every data source. ``kind`` says what the source yields (``images`` with
    labels, ``masks``, ``points``, ``text``, ``table``); each task accepts some kinds."""

    kind: ClassVar[str] = "images"
    name: str = MISSING
    path: str | None = None  # the data's folder; required by every source but ``digits``
    bs: int = 64
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


@dataclass
class DigitsData(DataConfig):
    """scikit-learn's 1,797 8x8 handwritten digits, built in and offline."""

    name: str = "digits"
    classes: list[int] | None = None  # keep only these digits (e.g. [5,6,7,8,9]); null = all
    train_per_class: int | None = None  # few-shot: this many training images per class, the rest validate


@dataclass
class GlyphsData(DataConfig):
    """A generated alphabet of stroke glyphs (offline): each class is a fixed random set of pen
    strokes, each sample that glyph under random affine jitter and stroke width. The model zoo's
    built-in source task for transfer to digits."""

    name: str = "glyphs"
    n_classes: int = 40
    per_class: int = 60
    strokes: int = 3  # pen strokes per glyph
    glyph_seed: int = 0  # which alphabet (shapes and jitter); the split still uses data.seed


@dataclass
class FolderData(DataConfig):
    """ImageNet layout (``train/<class>/*``, ``valid/<class>/*``) or one folder per class."""

    name: str = "folder"
    train: str = "train"
    valid: str = "valid"


@dataclass
class NameReData(DataConfig):
    """Images in one folder, labelled by a regex over the file name (group 1 is the label)."""

    name: str = "name_re"
    pattern: str = r"^(.+)_\d+\.\w+$"


@dataclass
class CsvData(DataConfig):
    """A CSV of file names (relative to ``path``) and labels."""

    name: str = "csv"
    csv: str = "labels.csv"  # relative to ``path`` unless absolute
    fn_col: str = "fname"
    label_col: str = "label"
    valid_col: str | None = None  # a boolean column marking validation rows; else valid_pct
    # task=regress on several numbers per image (e.g. a point's x,y): these columns are the
    # targets, and label_col is not read
    target_cols: list[str] | None = None
    points: bool = False  # target_cols are pixel (x, y) pairs, scaled to [-1, 1] by each image's size


@dataclass
class ScenesData(DataConfig):
    """Generated scenes (offline) for segmentation: shapes of several kinds on textured
    backgrounds, each image with its per-pixel mask. Codes: ``background`` plus one per kind."""

    kind: ClassVar[str] = "masks"
    name: str = "scenes"
    bs: int = 16
    n_images: int = 400
    scene_seed: int = 0  # which scenes; the split still uses data.seed
    void_code: str | None = None  # a code whose pixels the loss and metrics ignore


@dataclass
class CamvidData(DataConfig):
    """Segmentation data in the CamVid layout: ``path/images/*``, ``path/labels/<mask name>``
    (one class code per pixel) and ``path/codes.txt`` (one code name per line)."""

    kind: ClassVar[str] = "masks"
    name: str = "camvid"
    bs: int = 8
    images: str = "images"
    labels: str = "labels"
    codes: str = "codes.txt"
    mask_name: str = "{stem}_P.png"  # the mask of images/<stem><suffix>; {stem} and {suffix} are filled in
    valid_list: str | None = "valid.txt"  # file names listed here validate, when the file exists; else valid_pct
    void_code: str | None = None  # a code of codes.txt whose pixels the loss and metrics ignore (CamVid: Void)


@dataclass
class PointsData(DataConfig):
    """Generated images (offline) for image regression: one shape on a textured background; the
    target is its centre ``(x, y)`` scaled to [-1, 1] (the course's head-pose task in small)."""

    kind: ClassVar[str] = "points"
    name: str = "points"
    n_images: int = 600
    points_seed: int = 0  # which images; the split still uses data.seed


@dataclass
class TextData(DataConfig):
    """Keys every text source shares: tokenisation, vocabulary and sequence lengths."""

    kind: ClassVar[str] = "text"
    bs: int = 32
    bptt: int = 48  # a language model's sequence length
    max_len: int = 256  # a classifier reads at most this many tokens of each text
    min_freq: int = 2  # words seen fewer times become xxunk
    max_vocab: int = 8000


@dataclass
class TextFolderData(TextData):
    """The IMDb layout: ``path/<train>/<label>/*.txt``, ``path/<valid>/<label>/*.txt`` and
    optionally unlabelled ``path/<unsup>/*.txt`` (used by the language model only)."""

    name: str = "text_folder"
    train: str = "train"
    valid: str = "test"
    unsup: str | None = "unsup"


@dataclass
class TextCsvData(TextData):
    """A CSV with a text column, a label column and optionally a validation flag column."""

    name: str = "text_csv"
    csv: str = "texts.csv"  # relative to ``path`` unless absolute
    text_col: str = "text"
    label_col: str = "label"
    valid_col: str | None = None


@dataclass
class PyDocsData(TextData):
    """Built in, offline: docstrings of the Python standard library on this machine (real English
    text). The label of each docstring is the module family it documents, one of six: text
    (str, re, textwrap, codecs...), files (os, pathlib, shutil, io, tarfile...), network (socket,
    http, urllib, smtplib...), math (math, decimal, statistics, random...), formats (json, csv,
    pickle, xml, zlib...) and concurrency (threading, asyncio, subprocess...); the modules are
    listed in ``fastlab.data.pydocs.PYDOCS_FAMILIES``. About 1,570 docstrings, the largest
    family about a fifth of them.

    A language model also reads unlabelled standard-library English (``unlabelled``, like IMDb's
    ``unsup/``): the language reference in ``pydoc_data.topics`` and the docstrings of ~90
    modules outside the families (``PYDOCS_UNLABELLED``), about 190k tokens next to the
    labelled training texts' 72k. Any paragraph sharing an 8-token run with a docstring of the
    families' modules is left out, so the classifier's validation texts are never read; the
    labelled texts and the classifier's data do not change."""

    name: str = "pydocs"
    min_chars: int = 40  # shorter docstrings ("Return self.") are dropped
    per_family: int = 320  # a larger family keeps this many, chosen by a hash of the name
    max_docs: int | None = None  # a seeded subset of this many docstrings (quick runs); null = all
    unlabelled: bool = True  # the language model also reads the unlabelled corpus


@dataclass
class TabularData(DataConfig):
    """Keys every table source shares. Columns not named in ``cat_names`` or ``cont_names`` are
    read as continuous when numeric and categorical otherwise (null = decide by the values)."""

    kind: ClassVar[str] = "table"
    bs: int = 64
    y_name: str | None = None  # the target column; the built-in sets know their own
    cat_names: list[str] | None = None
    cont_names: list[str] | None = None


@dataclass
class SklearnTableData(TabularData):
    """A scikit-learn table, built in and offline: breast_cancer, wine (classification) or
    diabetes (regression)."""

    name: str = "sklearn_table"
    dataset: str = "breast_cancer"


@dataclass
class TableCsvData(TabularData):
    """A CSV table with the target in ``y_name``."""

    name: str = "table_csv"
    csv: str = "table.csv"  # relative to ``path`` unless absolute
    valid_col: str | None = None  # a boolean column marking validation rows; else valid_pct


# ---------------------------------------------------------------------------------------- arch


@dataclass
class ArchConfig:
    name: str = MISSING
    pretrained: str | None = None  # a model-zoo name (outputs/models/<name>.pt) or a file path


@dataclass
class CnnArch(ArchConfig):
    """A small plain CNN body with fast.ai's head (concat pooling, batch norm, dropout, linear)."""

    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    head_hidden: int = 256
    dropout: float = 0.5


@dataclass
class ResnetArch(ArchConfig):
    """torchvision's ResNet, built without downloaded weights."""

    name: str = "resnet18"
    head_hidden: int = 512
    dropout: float = 0.5


@dataclass
class UnetArch(ArchConfig):
    """A U-Net: the encoder is a registered body (cnn, resnet18, resnet34); skip connections from
    each encoder stage; learned (transposed-conv) upsampling. ``arch.pretrained`` names a
    checkpoint of the encoder's architecture (e.g. a zoo classifier)."""

    name: str = "unet"
    encoder: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # the cnn encoder's stages


@dataclass
class AwdLstmArch(ArchConfig):
    """AWD-LSTM (Merity et al.): embedding dropout, weight-dropped LSTM layers, the course's
    dropouts scaled by ``drop_mult``. Language model: tied decoder; classifier: concat pooling."""

    name: str = "awd_lstm"
    emb_sz: int = 128
    n_hid: int = 256
    n_layers: int = 3
    drop_mult: float = 0.5
    head_hidden: int = 50  # the classifier head's hidden layer (fastai's lin_ftrs=[50])


@dataclass
class TabularArch(ArchConfig):
    """fast.ai's tabular model: entity embeddings (size rule min(600, 1.6 n^0.56)) and
    continuous columns into an MLP with batch norm and dropout."""

    name: str = "tabular_mlp"
    layers: list[int] = field(default_factory=lambda: [200, 100])
    ps: float = 0.1  # dropout of the hidden layers
    emb_drop: float = 0.0


# ------------------------------------------------------------------------------------ schedule


@dataclass
class ScheduleConfig:
    name: str = MISSING
    epochs: int = 10
    # The head's peak rate: a float; a slice [lo, hi] spread geometrically over the layer groups
    # ([null, hi]: hi/10 for all groups but the head); or "find" to run the LR finder first.
    lr_max: Any = 3e-3
    lr_ratio: float = 1.0  # lr of group g-1 = lr of group g / lr_ratio; 1 = no discrimination
    freeze_epochs: int = 1  # fine_tune: epochs with the body frozen; gradual: epochs per stage
    train_bn: bool = True  # norm layers of frozen groups keep training (fast.ai's default)
    suggestion: str = "valley"  # which LR finder suggestion lr_max=find uses
    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    moms: list[float] = field(default_factory=lambda: [0.95, 0.85, 0.95])
    wd: float = 0.01
    opt: str = "adamw"  # adamw | sgd


# ---------------------------------------------------------------------------------------- task


@dataclass
class TaskConfig:
    name: str = MISSING
    objective: str = MISSING  # the metric returned to sweepers


@dataclass
class RegressTask(TaskConfig):
    # [lo, hi]: squash outputs into the range with a sigmoid (fast.ai's y_range); null: [-1, 1]
    # for point targets, else a plain linear output
    y_range: list[float] | None = None


@dataclass
class TabularTask(TaskConfig):
    target: str = "auto"  # auto (from the target column) | category | float


# ------------------------------------------------------------------------------------- trainer


@dataclass
class SaveBestConfig:
    enabled: bool = False
    monitor: str = "valid_loss"  # valid_loss or a metric of the task
    mode: str = "auto"  # auto (from the metric) | min | max


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "valid_loss"
    mode: str = "auto"
    patience: int = 3  # epochs without improvement before stopping
    min_delta: float = 0.0


@dataclass
class CallbacksConfig:
    """Optional behaviour, each off unless asked for (``trainer.callbacks.<name>...``)."""

    save_best: SaveBestConfig = field(default_factory=SaveBestConfig)  # best.pt in the run dir
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    grad_clip: float | None = None  # clip the gradients' global norm to this
    csv_logger: bool = True  # rewrite history.csv after every epoch, so a running job can be watched


@dataclass
class TrainerConfig:
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    progress: str = "auto"  # auto (a bar on a terminal, else a line per epoch) | bar | log | none
    plots: bool = True
    save_model: bool = True
    # CPU threads for torch: null = torch's default, or the cores shared out among the parallel
    # jobs of a joblib multirun (N jobs x all-core threads would fight over the same cores)
    threads: int | None = None
    logger: str = "none"  # none | tensorboard (writes <run dir>/tensorboard)
    # Continue an interrupted run from its last.pt: a run dir (or its last.pt), or true for this
    # run dir (a sweep's job re-run); the run's own config is used, whatever else is composed
    resume: Any = None
    save_last: bool = True  # write last.pt (everything a resume needs) after every epoch
    checkpoint_every_n_steps: int | None = None  # also write last.pt every this many batches
    timeout: float | None = None  # seconds: stop the run with a clear error past this (last.pt stays)
    # image data up to this size lives on the device; larger sets stay in pinned host memory and
    # are copied batch by batch (asynchronously on CUDA)
    max_resident_gb: float = 4.0
    compile: bool = False  # torch.compile the model (tried on one batch first; falls back with a message)
    channels_last: bool | None = None  # NHWC convolutions; null: on CUDA for image batches
    auto_bs: bool = False  # on out-of-memory, halve data.bs and retry from the last finished epoch
    # single (one process) | ddp (data-parallel under torchrun; data.bs is the global batch)
    strategy: str = "single"
    callbacks: CallbacksConfig = field(default_factory=lambda: CallbacksConfig())


# ---------------------------------------------------------------------------------------- root


@dataclass
class PathsConfig:
    models: str = "outputs/models"


@dataclass
class TrainConfig:
    """The primary config. Group nodes are typed by their option's schema, hence ``Any`` here."""

    data: Any = MISSING
    arch: Any = MISSING
    schedule: Any = MISSING
    task: Any = MISSING
    trainer: Any = MISSING
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    save_as: str | None = None  # also save the trained model into the zoo as paths.models/<save_as>.pt


@dataclass
class RunConfig:
    """A composed run as plain dataclasses: what ``fastlab.train.train`` works from."""

    data: DataConfig
    arch: ArchConfig
    schedule: ScheduleConfig
    task: TaskConfig
    trainer: TrainerConfig
    seed: int
    paths: PathsConfig
    save_as: str | None = None


# Which schema each option of each group uses. A user's own option (added with --config-dir)
# picks its schema by its ``name`` key, so it is checked the same way.
SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"digits": DigitsData, "glyphs": GlyphsData, "folder": FolderData, "name_re": NameReData,
             "csv": CsvData, "scenes": ScenesData, "camvid": CamvidData, "points": PointsData,
             "text_folder": TextFolderData, "text_csv": TextCsvData, "pydocs": PyDocsData,
             "sklearn_table": SklearnTableData, "table_csv": TableCsvData},
    "arch": {"cnn": CnnArch, "resnet18": ResnetArch, "resnet34": ResnetArch, "unet": UnetArch,
             "awd_lstm": AwdLstmArch, "tabular_mlp": TabularArch},
    "schedule": {"one_cycle": ScheduleConfig, "fine_tune": ScheduleConfig, "gradual": ScheduleConfig,
                 "constant": ScheduleConfig},
    "task": {"classify": TaskConfig, "regress": RegressTask, "segment": TaskConfig,
             "language_model": TaskConfig, "text_classify": TaskConfig, "tabular": TabularTask},
    "trainer": {"default": TrainerConfig, "cpu": TrainerConfig, "gpu": TrainerConfig},
}


def register_configs() -> None:
    """Store the primary schema and one ``<option>_schema`` per group option."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            cs.store(group=group, name=f"{option}_schema", node=schema)


def build(schema: type, values: dict, where: str) -> Any:
    """``schema(**values)``, building nested dataclass fields from dicts; an unknown key is a
    ``ConfigError`` naming it and the known keys."""
    known = {f.name: f for f in dataclasses.fields(schema)}
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


def _to_dataclass(group: str, node: Any) -> Any:
    values = _container(node)
    if not isinstance(values, dict) or "name" not in values:
        raise ConfigError(f"{group} has no 'name' key: choose an option, e.g. {group}=<option>")
    options = SCHEMAS[group]
    schema = options.get(values["name"])
    if schema is None:
        raise ConfigError(
            f"{group}.name={values['name']!r} is not known: use one of {sorted(options)}"
        )
    return build(schema, values, group)


def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Convert a composed config into dataclasses and check the values Hydra cannot check."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    # Nothing outside the schema: in particular no ``_target_`` (fastlab never instantiates
    # classes named in a run's config; only Hydra's own launcher and sweeper nodes do).
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(str(k) for k in cfg.keys() if k not in known)
    if unknown:
        raise ConfigError(f"the config has unknown top-level key(s) {unknown}: the keys are {sorted(known)}")
    run = RunConfig(
        data=_to_dataclass("data", cfg.data),
        arch=_to_dataclass("arch", cfg.arch),
        schedule=_to_dataclass("schedule", cfg.schedule),
        task=_to_dataclass("task", cfg.task),
        trainer=build(TrainerConfig, _container(cfg.trainer), "trainer"),
        seed=int(cfg.get("seed", 0)),
        paths=build(PathsConfig, _container(cfg.get("paths", {})), "paths"),
        save_as=cfg.get("save_as"),
    )
    validate(run)
    return run


_ZOO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _is_pos(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _validate_lr_max(lr: Any, ratio: float) -> None:
    """A positive float, a slice [lo, hi] (lo may be null), or "find"."""
    fix = "set e.g. schedule.lr_max=3e-3, schedule.lr_max=[1e-5,1e-3] or schedule.lr_max=find"
    if isinstance(lr, str):
        if lr != "find":
            raise ConfigError(f"schedule.lr_max={lr!r} is not a learning rate: {fix}")
    elif isinstance(lr, list | tuple):
        if len(lr) != 2 or not _is_pos(lr[1]) or not (lr[0] is None or _is_pos(lr[0])):
            raise ConfigError(f"schedule.lr_max={list(lr)} must be a slice [lo, hi] of positive finite numbers (lo may be null): {fix}")
        if lr[0] is not None and lr[0] > lr[1]:
            raise ConfigError(f"schedule.lr_max={list(lr)} has lo > hi: the head (hi) trains fastest")
        if ratio != 1:
            raise ConfigError("schedule.lr_max is a slice and schedule.lr_ratio is not 1: give one way of spreading rates, not both")
    elif not _is_pos(lr):
        raise ConfigError(f"schedule.lr_max must be a positive finite number, got {lr}: {fix}")


def validate(run: RunConfig) -> None:
    """Check values: each failure is one line naming the key, the value and the fix."""
    d, s, t = run.data, run.schedule, run.trainer
    if d.bs <= 0:
        raise ConfigError(f"data.bs must be a positive integer, got {d.bs}: set e.g. data.bs=64")
    if d.size <= 0:
        raise ConfigError(f"data.size must be a positive integer, got {d.size}: set e.g. data.size=32")
    if not 0.0 < d.valid_pct < 1.0:
        raise ConfigError(f"data.valid_pct must lie in (0, 1), got {d.valid_pct}: set e.g. data.valid_pct=0.2")
    for key in ("mean", "std"):
        stats = getattr(d, key)
        if stats is not None and (not stats or not all(math.isfinite(v) for v in stats)):
            raise ConfigError(f"data.{key} must be a list of finite numbers, got {stats}")
    if d.std is not None and any(v <= 0 for v in d.std):
        raise ConfigError(f"data.std must be positive, got {d.std}")
    if d.on_bad_file not in ("error", "skip"):
        raise ConfigError(f"data.on_bad_file={d.on_bad_file!r} is not known: use error or skip")
    if (d.mean is None) != (d.std is None):
        raise ConfigError("data.mean and data.std go together: give both, or neither to compute them")
    if s.epochs <= 0:
        raise ConfigError(f"schedule.epochs must be a positive integer, got {s.epochs}")
    _validate_lr_max(s.lr_max, s.lr_ratio)
    if s.freeze_epochs < 0:
        raise ConfigError(f"schedule.freeze_epochs must be >= 0, got {s.freeze_epochs}")
    if s.suggestion not in ("valley", "steep", "minimum", "slide"):
        raise ConfigError(f"schedule.suggestion={s.suggestion!r} is not known: use valley, steep, minimum or slide")
    if not math.isfinite(s.lr_ratio) or s.lr_ratio < 1:
        raise ConfigError(f"schedule.lr_ratio must be a finite number >= 1, got {s.lr_ratio}: 1 means no discrimination")
    if not 0.0 <= s.pct_start < 1.0:
        raise ConfigError(f"schedule.pct_start must lie in [0, 1), got {s.pct_start}")
    if s.div <= 0 or s.div_final <= 0:
        raise ConfigError(f"schedule.div and schedule.div_final must be positive, got {s.div} and {s.div_final}")
    if len(s.moms) != 3 or not all(0.0 <= m < 1.0 for m in s.moms):
        raise ConfigError(f"schedule.moms must be three numbers in [0, 1), got {s.moms}")
    if not math.isfinite(s.wd) or s.wd < 0:
        raise ConfigError(f"schedule.wd must be a finite number >= 0, got {s.wd}")
    if s.opt not in ("adamw", "sgd"):
        raise ConfigError(f"schedule.opt={s.opt!r} is not known: use adamw or sgd")
    if t.device not in ("auto", "cpu", "cuda") and not t.device.startswith("cuda:"):
        raise ConfigError(f"trainer.device={t.device!r} is not known: use auto, cpu or cuda")
    if t.precision not in ("32", "bf16-mixed", "16-mixed"):
        raise ConfigError(f"trainer.precision={t.precision!r} is not known: use 32, bf16-mixed or 16-mixed")
    if t.threads is not None and t.threads < 1:
        raise ConfigError(f"trainer.threads must be >= 1 or null, got {t.threads}")
    if t.checkpoint_every_n_steps is not None and t.checkpoint_every_n_steps < 1:
        raise ConfigError(f"trainer.checkpoint_every_n_steps must be >= 1 or null, got {t.checkpoint_every_n_steps}")
    if t.timeout is not None and not (math.isfinite(t.timeout) and t.timeout > 0):
        raise ConfigError(f"trainer.timeout must be a positive number of seconds or null, got {t.timeout}")
    if not (t.resume is None or isinstance(t.resume, bool | str)):
        raise ConfigError(f"trainer.resume={t.resume!r} is not a run dir: use trainer.resume=<run dir>, true or null")
    if not (math.isfinite(t.max_resident_gb) and t.max_resident_gb >= 0):
        raise ConfigError(f"trainer.max_resident_gb must be a number >= 0, got {t.max_resident_gb}")
    if t.strategy not in ("single", "ddp"):
        raise ConfigError(f"trainer.strategy={t.strategy!r} is not known: use single or ddp (under torchrun)")
    if t.logger not in ("none", "tensorboard"):
        raise ConfigError(f"trainer.logger={t.logger!r} is not known: use none or tensorboard")
    cbs = t.callbacks
    for key, c in (("save_best", cbs.save_best), ("early_stopping", cbs.early_stopping)):
        if c.mode not in ("auto", "min", "max"):
            raise ConfigError(f"trainer.callbacks.{key}.mode={c.mode!r} is not known: use auto, min or max")
    if cbs.early_stopping.patience < 0:
        raise ConfigError(f"trainer.callbacks.early_stopping.patience must be >= 0, got {cbs.early_stopping.patience}")
    if cbs.grad_clip is not None and not (math.isfinite(cbs.grad_clip) and cbs.grad_clip > 0):
        raise ConfigError(f"trainer.callbacks.grad_clip must be a positive number or null, got {cbs.grad_clip}")
    if run.save_as is not None and not _ZOO_NAME.fullmatch(str(run.save_as)):
        raise ConfigError(f"save_as={run.save_as!r} is not a plain name: use letters, digits, '-' and '_'")
    if t.progress not in ("auto", "bar", "log", "none"):
        raise ConfigError(f"trainer.progress={t.progress!r} is not known: use auto, bar, log or none")
