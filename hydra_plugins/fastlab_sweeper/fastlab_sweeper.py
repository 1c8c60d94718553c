"""The public sweeper class Hydra instantiates for ``hydra/sweeper=fastlab``."""

import os
import sys
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

# Registers the config; imported here so the ConfigStore entry exists whenever the class does.
from hydra_plugins.fastlab_sweeper.config import FastlabSweeperConf  # noqa: F401


class FastlabSweeper(Sweeper):
    """Searches ``hydra.sweeper.params`` and the command line's sweeps; see ``fastlab.sweep``."""

    def __init__(self, params: Any = None, **settings: Any) -> None:
        # Plain containers: the settings dataclass and the parser want dicts, not DictConfigs.
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        self.settings = {k: OmegaConf.to_container(v) if isinstance(v, DictConfig | ListConfig) else v
                         for k, v in settings.items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # Imported here, not at module level: Hydra imports every plugin at start-up.
        from fastlab.sweep.compose import reusing

        self.config = config
        # Trials differ in values only: compose the sweep's shared part once per process (in the
        # driver's batch check and in each worker), then each trial's values (fastlab.sweep.compose;
        # Hydra's own loader when the internals that needs fail their check).
        hydra_context = HydraContext(config_loader=reusing(hydra_context.config_loader),
                                     callbacks=hydra_context.callbacks)
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> list[list[Any]]:
        """Run the sweep; return the ``JobReturn``s of its launch calls in launch order, one list
        per call, as Hydra's basic sweeper does."""
        assert self.config is not None and self.hydra_context is not None, "setup() first"
        # Imported here, not at module level: Hydra imports every plugin at start-up.
        from fastlab.sweep.errors import SweepError
        from fastlab.sweep.hydra_glue import run_hydra_sweep

        try:
            return run_hydra_sweep(
                settings=self.settings,
                params=self.params,
                arguments=arguments,
                config=self.config,
                launcher=self.launcher,
                config_loader=self.hydra_context.config_loader,
                validate=self.validate_batch_is_legal,
            )
        except SweepError as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # One line and a non-zero exit, as fastlab-train reports a user's error (Hydra's own
            # report would add a line about HYDRA_FULL_ERROR after it).
            sys.stderr.write(f"{e}\n")
            sys.exit(2)
