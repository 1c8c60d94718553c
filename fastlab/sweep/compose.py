"""A config loader that composes a sweep's shared part once per process, then each trial's values.

Hydra composes every job from scratch (``load_sweep_config``): the defaults list, each config
group's node deep-copied out of the ConfigStore, the merges. For a study's small trials that cost
more than the training (about 0.1-0.2 s twice per trial on a 2-core CPU: once in the driver to
validate the batch, once in the worker). Yet a sweep's trials differ only in *values*: Hydra
itself applies every override that is not a config-group choice after composing, in order
(``ConfigLoaderImpl._apply_overrides_to_config``). So the part that shapes the composition (group
choices such as ``+study=lr_ratio``, ``hydra.searchpath``) is composed once and kept; a trial is a
fresh copy of it with its value overrides applied by Hydra's own function and the ``hydra`` node's
per-job fields (``overrides``, ``job.override_dirname``) set as Hydra sets them. The result is the
config Hydra composes, which ``tests/sweep/test_compose.py`` checks node for node.

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

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from fastlab.sweep import shipping

# Compositions kept per process: (token, config name, shaping overrides) -> the composed config,
# pickled: unpickling a fresh copy for a trial takes a fifth of the time of ``copy.deepcopy``
# (about 2 ms against 10 ms for a study's config). Two are plenty: a sweep has one shape unless it
# searches a config group.
_KEPT: OrderedDict[tuple, bytes | DictConfig] = OrderedDict()
_KEEP = 2


class ReusingConfigLoader(ConfigLoader):
    """Hydra's config loader ``inner``, with ``load_sweep_config`` reusing the sweep's shared
    composition (see the module's docstring); every other method is the inner loader's."""

    def __init__(self, inner: ConfigLoader, token: str | None = None) -> None:
        self.inner = inner
        self.token = token or secrets.token_hex(8)  # this sweep's: no other sweep reads its kept configs
        self._blob: bytes | None = None
        self._groups: dict[str, bool] = {}  # key -> whether it names a config group

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
            cfg = self._compose(config_name, lines)
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
            base = shipping.blob(composed) or composed  # a schema pickle cannot find: deep copies
            _KEPT[key] = base
            while len(_KEPT) > _KEEP:
                _KEPT.popitem(last=False)
        _KEPT.move_to_end(key)
        cfg = pickle.loads(base) if isinstance(base, bytes) else copy.deepcopy(base)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        app = [o for o in parsed if not o.is_hydra_override()]
        # The hydra node's per-job fields, as ConfigLoaderImpl._load_configuration_impl sets them.
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
            cfg.hydra.overrides.task = [o.input_line for o in app]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=app, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        return cfg

    def _shapes(self, override: Override) -> bool:
        """Whether ``override`` changes what is composed (Hydra's own test: a config group that
        exists and a value that is not a dict; or the search path), not just a value in it."""
        if override.key_or_group == "hydra.searchpath" or override.package is not None:
            return True
        repository = getattr(self.inner, "repository", None)
        if repository is None:
            return True  # not Hydra's loader: nothing is known, so everything shapes
        key = override.key_or_group
        if key not in self._groups:  # the config files do not change within a sweep
            self._groups[key] = repository.group_exists(key)
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
