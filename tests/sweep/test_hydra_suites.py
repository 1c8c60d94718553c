"""Hydra's own launcher suites (``hydra.test_utils.launcher_common_tests``) with fastlab's sweeper.

The suites Hydra tests its launcher and sweeper plugins with, run against ``hydra/sweeper=fastlab``
(``strategy=grid``) under the basic, joblib and submitit_local launchers, as a user who swaps
fastlab's sweeper into an ordinary Hydra app would: the ``JobReturn``s ``sweep()`` gives back, job
dirs and names, ``multirun.yaml``, batches of ``batch_size`` with ``async=false``, and apps whose
task returns nothing (the integration apps) or a string.
"""

import copy
import os
import sys
from pathlib import Path

from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.singleton import Singleton
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from hydra.test_utils.test_utils import integration_test
from omegaconf import DictConfig, OmegaConf
from pytest import fixture, mark

# fastlab's sweeper in place of Hydra's basic one, walking the grid as the basic sweeper does
SWEEPER = ["hydra/sweeper=fastlab", "hydra.sweeper.strategy=grid"]
# In process, the suites expect jobs to change into their dirs (Hydra's default without a version
# base); an earlier test's @hydra.main(version_base="1.3") leaves 1.3's default (stay) in the process.
IN_PROCESS = [*SWEEPER, "hydra.job.chdir=True"]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra.launcher.timeout_min=2"],
}


# The launcher suite reads a whole sweep's returns from one launch call, as Hydra's basic sweeper
# launches an unbatched grid: async=false with a batch larger than any of its grids.
ONE_CALL = ["hydra.sweeper.async=false", "hydra.sweeper.batch_size=8"]


@fixture(scope="module", autouse=True)
def hydra_as_before_the_suites():
    """Hydra's singletons and plugin modules as they were before these suites. Each suite test
    restores the singletons it found, which makes Hydra discover its plugins again and execute
    their modules anew: later tests in this process would pickle config sources whose classes
    are no longer their modules' (tests/sweep/test_shipping.py does)."""
    state = copy.deepcopy(Singleton.get_state())
    modules = {name: module for name, module in sys.modules.items()
               if name.startswith(("hydra._internal.core_plugins", "hydra_plugins"))}
    yield
    sys.modules.update(modules)
    # Discovery executes a plugin module again in its module object (pkgutil's load_module), so
    # the config-source classes a registry held before the suites are no longer their modules':
    # leave the registry out, and set_state's discovery registers the classes the modules now hold.
    state["instances"].pop(SourcesRegistry, None)
    Singleton.set_state(state)


@mark.parametrize("launcher_name, overrides",
                  [(name, IN_PROCESS + extra + ONE_CALL) for name, extra in LAUNCHERS.items()])
class TestFastlabSweeperLaunchers(LauncherTestSuite):
    pass


# Hydra's batched suite: 6 jobs in 3 launcher calls of 2 (async=false keeps batch_size exactly).
@mark.parametrize("launcher_name, overrides",
                  [(name, IN_PROCESS + extra + ["hydra.sweeper.async=false", "hydra.sweeper.batch_size=2"])
                   for name, extra in LAUNCHERS.items()])
class TestFastlabSweeperBatched(BatchedSweeperTestSuite):
    pass


@mark.parametrize("task_launcher_cfg, extra_flags",
                  [({}, ["-m", "hydra/job_logging=disabled", f"hydra/launcher={name}", *SWEEPER, *extra])
                   for name, extra in LAUNCHERS.items()])
class TestFastlabSweeperIntegration(IntegrationTestSuite):
    # Excluded: it runs two apps one after the other into one sweep dir (cli_dir) and expects the
    # second to run its job again, where fastlab's sweeper resumes that sweep, whose one trial has
    # finished (its resume is the point of it). The same checks in a sweep dir of their own follow.
    test_to_absolute_path_multirun = None

    def test_to_absolute_path_in_a_sweep_of_its_own(self, tmpdir: Path, task_launcher_cfg: DictConfig,
                                                    extra_flags: list[str]) -> None:
        overrides = [*extra_flags, "hydra.job.chdir=True", "hydra.sweep.dir=cli_dir",
                     "hydra.sweep.subdir=cli_dir_${hydra.job.num}"]
        integration_test(tmpdir=tmpdir, task_config=OmegaConf.create(task_launcher_cfg or {}), overrides=overrides,
                         prints=["hydra.utils.to_absolute_path('foo/bar')", "hydra.utils.to_absolute_path('/foo/bar')",
                                 "os.getcwd()"],
                         expected_outputs=[os.path.realpath(str(Path(tmpdir) / "foo/bar")),
                                           str(Path("/foo/bar").absolute()), str(Path(tmpdir) / "cli_dir/cli_dir_0")])
