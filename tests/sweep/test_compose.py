"""The sweeper's reusing config loader composes exactly what Hydra composes, trial by trial."""

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from fastlab.config import config_dir
from fastlab.sweep import compose
from fastlab.sweep.compose import ReusingConfigLoader

MASTER = ["+study=lr_ratio", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=/tmp/sweep-x"]
TRIALS = [
    ["+study=lr_ratio", "schedule.lr_ratio=2.61", "schedule.lr_max=0.0123", "data.bs=16", "seed=7"],
    ["+study=lr_ratio", "schedule.lr_ratio=1.0", "schedule.epochs=3", "data.bs=8", "seed=8", "arch.channels=[8,16]"],
    ["+study=lr_ratio", "aug=no_flip", "schedule.lr_max=0.5", "arch.groups=stages"],  # a swept group
    ["+study=lr_ratio", "aug=fastai", "trainer.progress=log", "trainer.timeout=null", "+trainer.callbacks.grad_clip=0.5"],
    ["+study=lr_ratio", "schedule.lr_ratio=2.61", "schedule.lr_max=0.0123", "data.bs=32", "seed=9"],
]


@pytest.fixture
def loader():
    search_path = create_config_search_path(str(config_dir()))
    return ConfigLoaderImpl(config_search_path=search_path)


def composed(cfg):
    return OmegaConf.to_container(cfg, resolve=False)


def test_each_trial_is_hydras_composition(loader):
    master = loader.load_configuration("train", MASTER, run_mode=RunMode.MULTIRUN)
    reusing = ReusingConfigLoader(loader)
    for overrides in TRIALS:
        assert composed(reusing.load_sweep_config(master, overrides)) == composed(
            loader.load_sweep_config(master, overrides)), overrides
    # the shared part was composed once per shape (lr_ratio; no_flip; fastai), not per trial
    assert sum(key[0] == reusing.token for key in compose._KEPT) == 2  # the two most recent are kept


def test_trials_do_not_share_nodes(loader):
    master = loader.load_configuration("train", MASTER, run_mode=RunMode.MULTIRUN)
    reusing = ReusingConfigLoader(loader)
    a = reusing.load_sweep_config(master, TRIALS[0])
    b = reusing.load_sweep_config(master, TRIALS[4])
    assert a.data.bs == 16 and b.data.bs == 32 and a.seed == 7 and b.seed == 9
    assert list(a.hydra.overrides.task) == TRIALS[0] and a.hydra.job.override_dirname != b.hydra.job.override_dirname


def test_a_bad_value_fails_as_hydra_says(loader):
    master = loader.load_configuration("train", MASTER, run_mode=RunMode.MULTIRUN)
    reusing = ReusingConfigLoader(loader)
    bad = ["+study=lr_ratio", "data.bs=many"]
    with pytest.raises(ConfigCompositionException) as ours:
        reusing.load_sweep_config(master, bad)
    with pytest.raises(ConfigCompositionException) as hydras:
        loader.load_sweep_config(master, bad)
    assert str(ours.value) == str(hydras.value)


def test_another_sweep_never_reads_this_ones_compositions(loader):
    master = loader.load_configuration("train", MASTER, run_mode=RunMode.MULTIRUN)
    first, second = ReusingConfigLoader(loader), ReusingConfigLoader(loader)
    first.load_sweep_config(master, TRIALS[0])
    assert first.token != second.token
    assert not any(key[0] == second.token for key in compose._KEPT)


def test_config_groups_are_told_from_values_as_hydras_repository_tells_them(loader):
    # The public listing of groups (get_group_options) decides what shapes a composition.
    reusing = ReusingConfigLoader(loader)
    keys = ["aug", "arch", "data", "study", "trainer", "hydra/launcher", "hydra/sweeper", "hydra/job_logging",
            "data.bs", "schedule.lr_max", "arch.groups", "hydra.sweep.dir", "seed", "nothing", "hydra/nothing"]
    parsed = compose._parsed([f"{key}=x" for key in keys])
    assert [reusing._shapes(o) for o in parsed] == [loader.repository.group_exists(k) for k in keys]
    assert sum(reusing._shapes(o) for o in parsed) == 8  # the groups above, and only they
