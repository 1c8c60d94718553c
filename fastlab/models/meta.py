"""What a model records about itself: :class:`ModelMeta`, the one shape of a model's metadata.

Training keeps it on the Learner (``learn.meta``, built by ``Task.model_meta`` from the run and
what its data told it); ``model.pt`` and ``best.pt`` record it as plain data (:meth:`to_dict`,
read back by ``fastlab.models.zoo``); a bundle's ``meta.json`` holds the same dict; and inference
reads it to rebuild the model (``Task.build``) and to read inputs as training did.

Each task names its own subclass in ``Task.meta_type`` (images add channels, size and
normalisation; text its vocabulary; tables their columns and procs). :meth:`ModelMeta.from_dict`
picks it by the ``task`` key through the registry and checks it, so a file of another fastlab, or
a hand-edited one, is refused with one line instead of failing later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from fastlab import registry
from fastlab.errors import ConfigError, FastlabError


@dataclass(kw_only=True)
class ModelMeta:
    """What every model records. Subclasses (one per kind of task, ``Task.meta_type``) add their
    fields, named as the keys of their data's ``meta()``."""

    arch: str
    arch_config: dict
    task: str
    classes: list[str] | None  # class names, segmentation codes, or None (regression, a language model)
    n_out: int
    config: dict | None = None  # the resolved training config, for provenance and fastlab-interpret

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> ModelMeta:
        """This type from ``values`` (e.g. ``{"arch", ..., **data.meta()}``), taking the keys it has
        fields for; unchecked (a source that settles its statistics when moved to its device has
        none yet when its model is built)."""
        return cls(**{k: values[k] for k in cls.field_names() if k in values})

    @classmethod
    def from_dict(cls, d: Any, source: str, error: type[FastlabError] = ConfigError) -> ModelMeta:
        """Check ``d`` (a checkpoint's or bundle's meta) and convert it into its task's meta type;
        ``source`` names the file in errors, which are ``error``s (one line)."""
        if not isinstance(d, dict):
            raise error(f"'{source}' has no model metadata: it was not written by fastlab-train or fastlab-export")
        meta_type = meta_type_of(d["task"], source, error) if "task" in d else cls
        required = [f.name for f in fields(meta_type) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise error(f"'{source}' lacks metadata {missing}: retrain or re-export it with this fastlab")
        meta = meta_type.of(d)
        if meta.classes is not None and len(meta.classes) != meta.n_out:
            raise error(f"'{source}' has {meta.n_out} outputs but classes {meta.classes}: the file is inconsistent")
        meta.check(source, error)
        return meta

    def check(self, source: str, error: type[FastlabError] = ConfigError) -> None:
        """Refuse a meta whose task-specific fields do not fit together (one ``error`` line,
        naming ``source``)."""

    def update(self, values: Mapping[str, Any]) -> None:
        """Take the fields ``values`` has (the data's ``meta()`` once it is re-made at another
        image side: a model records the side it was last trained at)."""
        for k in self.field_names():
            if k in values:
                setattr(self, k, values[k])

    def to_dict(self) -> dict:
        """Plain data (``torch.load(weights_only=True)`` and JSON read it): what ``model.pt``,
        ``best.pt`` and a bundle's ``meta.json`` hold."""
        return asdict(self)


def meta_type_of(task_name: Any, source: str, error: type[FastlabError] = ConfigError) -> type[ModelMeta]:
    """The meta type of the registered task ``task_name``; one ``error`` line when none is."""
    tasks = registry.options("task")
    if not isinstance(task_name, str) or task_name not in tasks:
        raise error(f"'{source}' has task {task_name!r}, which this fastlab does not know: "
                    f"use a model of {sorted(tasks)}")
    return tasks[task_name].builder.meta_type
