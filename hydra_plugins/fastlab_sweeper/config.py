"""The sweeper's config, registered in Hydra's ConfigStore as ``hydra/sweeper=fastlab``.

Hydra imports this module at start-up (plugin discovery), so it imports only the light settings
dataclass; numpy, scipy and scikit-learn wait until a sweep runs.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from fastlab.sweep.settings import SweepSettings


@dataclass
class FastlabSweeperConf(SweepSettings):
    """``hydra.sweeper``: the fields of ``SweepSettings`` plus the search space."""

    _target_: str = "hydra_plugins.fastlab_sweeper.fastlab_sweeper.FastlabSweeper"
    # key -> override value in Hydra's grammar, e.g. {schedule.lr_max: "tag(log, interval(1e-4, 1e-1))"}.
    # Command-line overrides of the same key win.
    params: dict[str, Any] | None = None


def _node() -> DictConfig:
    """The config node: the dataclass's typed fields, with ``asynchronous`` spelled ``async`` as
    the config key (a Python keyword cannot be a dataclass field; FastlabSweeper maps it back)."""
    node = OmegaConf.structured(FastlabSweeperConf)
    with open_dict(node):
        value = node.pop("asynchronous")
        node["async"] = value
    return node


ConfigStore.instance().store(group="hydra/sweeper", name="fastlab", node=_node(), provider="fastlab")
