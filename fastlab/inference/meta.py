"""``model.pt``'s ``meta`` as a dataclass: the fields every task has, plus each task's own.

:meth:`ModelMeta.from_dict` reads the ``task`` key, asks that task's inference behaviour (see
``fastlab.inference.base``) for its meta type, and builds and checks that: an image model's meta
has ``n_in``/``size``/``mean``/``std``, a text model's its ``vocab``, a table model's its
``procs``. ``to_dict`` gives plain JSON data, which is what a bundle's ``meta.json`` holds.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from fastlab.inference.errors import InferenceError


@dataclass(frozen=True, kw_only=True)
class ModelMeta:
    """What every saved model records. Subclasses (one per kind of task) add their fields."""

    arch: str
    arch_config: dict
    task: str
    classes: list[str] | None  # class names, segmentation codes, or None (regression, a language model)
    n_out: int
    config: dict | None = None  # the resolved training config, for provenance and fastlab-interpret

    @classmethod
    def from_dict(cls, d: Any, source: str) -> ModelMeta:
        """Check ``d`` (a checkpoint's or bundle's meta) and convert it into its task's meta type;
        ``source`` names the file in errors."""
        from fastlab.inference.base import inference_for

        if not isinstance(d, dict):
            raise InferenceError(f"'{source}' has no model metadata: it was not written by fastlab-train or fastlab-export")
        meta_type = inference_for(d.get("task"), source).meta_type if "task" in d else cls
        required = [f.name for f in fields(meta_type) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise InferenceError(f"'{source}' lacks metadata {missing}: retrain or re-export it with this fastlab")
        meta = meta_type(**{f.name: d[f.name] for f in fields(meta_type) if f.name in d})
        if meta.classes is not None and len(meta.classes) != meta.n_out:
            raise InferenceError(f"'{source}' has {meta.n_out} outputs but classes {meta.classes}: the file is inconsistent")
        meta.check(source)
        return meta

    def check(self, source: str) -> None:
        """Refuse a meta whose task-specific fields do not fit together (one line, naming ``source``)."""

    def to_dict(self) -> dict:
        return asdict(self)
