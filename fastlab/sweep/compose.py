"""A config loader that composes a sweep's shared part once per process, then each trial's values.

Hydra composes every job from scratch (``load_sweep_config``): the defaults list, each config
group's node deep-copied out of the ConfigStore, the merges. For a study's small trials that cost
more than the training (about 0.1-0.2 s twice per trial on a 2-core CPU: once in the driver to
validate the batch, once in the worker). Yet a sweep's trials differ only in *values*: Hydra
itself applies every override that is not a config-group choice after composing, in order. So
the part that shapes the composition (group choices such as ``+study=lr_ratio``,
``hydra.searchpath``) is composed once and kept; a trial is a fresh copy of it with its value
overrides applied by Hydra's own function and the ``hydra`` node's per-job fields
(``overrides``, ``job.override_dirname``) set as Hydra sets them. The result is the config Hydra
composes, which ``tests/sweep/test_compose.py`` checks node for node. Both steps are
Hydra's private API, used through ``fastlab.sweep.hydra_private`` only: checked once per process,
and when they are not as fastlab relies on, ``reusing`` leaves Hydra's loader as it is (one
warning line) and every trial is Hydra's own composition.

Anything else (a swept config group, a sweep value, an error) goes to Hydra's own loader, so its
messages stay Hydra's. The kept compositions live in this process only (a joblib worker keeps
its own across the trials it runs) and are keyed by a token of the sweep, so a later sweep in
the same process, whose config files may have changed, never sees them.
"""

from __future__ import annotations

import copy
import pickle
import secrets
from collections import OrderedDict
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fastlab.sweep import hydra_private, shipping

# Compositions kept per process: (token, config name, shaping overrides) -> the composed config,
# pickled: unpickling a fresh copy for a trial takes a fifth of the time of ``copy.deepcopy``
# (about 2 ms against 10 ms for a study's config). Two are plenty: a sweep has one shape unless it
# searches a config group.
_KEPT: OrderedDict[tuple, bytes | DictConfig] = OrderedDict()
_KEEP = 2


def reusing(loader: ConfigLoader) -> ConfigLoader:
    """``loader`` as the sweep's launcher should get it: wrapped to reuse the sweep's shared
    composition, or as it is when Hydra's internals for that fail their check (Hydra's public path,
    ``load_sweep_config`` for every trial; ``hydra_private`` logs one warning line)."""
    return ReusingConfigLoader(loader) if hydra_private.composes() else loader


class ReusingConfigLoader(ConfigLoader):
    """Hydra's config loader ``inner``, with ``load_sweep_config`` reusing the sweep's shared
    composition (see the module's docstring); every other method is the inner loader's."""

    def __init__(self, inner: ConfigLoader, token: str | None = None) -> None:
        self.inner = inner
        self.token = token or secrets.token_hex(8)  # this sweep's: no other sweep reads its kept configs
        self._blob: bytes | None = None
        self._groups: dict[str, bool] = {}  # key -> whether it names a config group
        self._listed: dict[str, list[str]] = {}  # parent group -> the groups in it

    def __reduce__(self) -> tuple:
        # Shipped with every job: the inner loader pickled once, restored once per job process
        # (fastlab.sweep.shipping), where this token's kept compositions then serve every job.
        if self._blob is None:
            self._blob = shipping.blob(self.inner) or b""
        if not self._blob:
            return ReusingConfigLoader, (self.inner, self.token)
        return _received_loader, (self.token, self._blob)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        lines = [*OmegaConf.to_container(master_config.hydra.overrides.hydra), *sweep_overrides]
        config_name = master_config.hydra.job.config_name
        try:
            cfg = self._compose(config_name, lines) if hydra_private.composes() else None
        except Exception:  # noqa: BLE001 - Hydra's own composition says what is wrong, in its words
            cfg = None
        if cfg is None:
            return self.inner.load_sweep_config(master_config, sweep_overrides)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)  # as Hydra: same ${now:} etc.
        return cfg

    def _compose(self, config_name: str | None, lines: list[str]) -> DictConfig | None:
        """The composed config for ``lines``, or None when they need Hydra's full composition."""
        parsed = _parsed(lines)
        if any(o.is_sweep_override() for o in parsed):
            return None
        shapes = [self._shapes(o) for o in parsed]
        shaping = [o for o, shaped in zip(parsed, shapes, strict=True) if shaped]
        values = [o for o, shaped in zip(parsed, shapes, strict=True) if not shaped]
        key = (self.token, config_name, tuple(o.input_line for o in shaping))
        base = _KEPT.get(key)
        if base is None:
            composed = self.inner.load_configuration(config_name=config_name,
                                                     overrides=[o.input_line for o in shaping], run_mode=RunMode.RUN)
            if not hydra_private.job_fields_hold(composed, shaping):  # as fastlab sets a trial's
                return None
            base = shipping.blob(composed) or composed  # a schema pickle cannot find: deep copies
            _KEPT[key] = base
            while len(_KEPT) > _KEEP:
                _KEPT.popitem(last=False)
        _KEPT.move_to_end(key)
        cfg = pickle.loads(base) if isinstance(base, bytes) else copy.deepcopy(base)
        hydra_private.apply_overrides(values, cfg)
        hydra_private.set_job_fields(cfg, parsed)  # overrides.hydra, overrides.task, override_dirname
        return cfg

    def _shapes(self, override: Override) -> bool:
        """Whether ``override`` changes what is composed (Hydra's own test: a config group that
        exists and a value that is not a dict; or the search path), not just a value in it."""
        if override.key_or_group == "hydra.searchpath" or override.package is not None:
            return True
        key = override.key_or_group
        if key not in self._groups:  # the config files do not change within a sweep
            parent, _, name = key.rpartition("/")
            if parent not in self._listed:
                try:  # the groups of the search path, as the loader's repository finds them
                    self._listed[parent] = self.inner.get_group_options(parent, results_filter=ObjectType.GROUP)
                except Exception:  # noqa: BLE001 - nothing is known, so it shapes: Hydra composes it
                    self._listed[parent] = None
            listed = self._listed[parent]
            self._groups[key] = True if listed is None else name in listed
        return self._groups[key] and not isinstance(override.value(), dict)

    # ------------------------------------------------------------- the rest is the inner loader's
    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.inner.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.inner.get_search_path()

    def get_sources(self) -> Any:
        return self.inner.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        return self.inner.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.compute_defaults_list(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Anything else Hydra or a launcher asks of its loader (attributes of ConfigLoaderImpl).
        if name == "inner":  # not set yet: unpickling
            raise AttributeError(name)
        return getattr(self.inner, name)


# Parsed override lines, per process: Hydra's grammar takes about 0.4 ms a line, and a sweep's
# trials repeat most of theirs (the hydra and study lines, the discrete values).
_PARSED: OrderedDict[str, Override] = OrderedDict()
_PARSED_KEEP = 1024


def _parsed(lines: list[str]) -> list[Override]:
    """``lines`` parsed as Hydra parses them, each line once per process (Overrides are only read)."""
    new = [line for line in dict.fromkeys(lines) if line not in _PARSED]
    if new:
        _PARSED.update(zip(new, OverridesParser.create().parse_overrides(overrides=new), strict=True))
    parsed = [_PARSED[line] for line in lines]
    while len(_PARSED) > _PARSED_KEEP:
        _PARSED.popitem(last=False)
    return parsed


def _received_loader(token: str, blob: bytes) -> ReusingConfigLoader:
    """The sweep's loader in a job process: one per process and sweep (token)."""
    return shipping.received(token, blob, lambda inner: ReusingConfigLoader(inner, token))
