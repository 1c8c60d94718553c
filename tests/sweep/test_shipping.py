"""What keeps a study trial cheap on the driver's side: trials queued per worker, what every job
gets shipped once per process, and claims that read no metrics."""

import pickle

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.types import RunMode
from omegaconf import OmegaConf

from fastlab.config import config_dir
from fastlab.sweep import shipping
from fastlab.sweep.compose import ReusingConfigLoader
from fastlab.sweep.hydra_glue import auto_batch_size
from fastlab.sweep.hydra_private import ShippedInstances
from fastlab.sweep.store import TrialStore


def test_random_and_grid_queue_a_trial_per_worker_the_forest_does_not():
    joblib = OmegaConf.create({"n_jobs": 2})
    assert auto_batch_size(joblib, "random", asynchronous=True) == 4  # one running, one queued each
    assert auto_batch_size(joblib, "grid", asynchronous=True) == 4
    assert auto_batch_size(joblib, "forest", asynchronous=True) == 2  # proposes from every result
    assert auto_batch_size(joblib, "random", asynchronous=False) == 8  # batches of four each
    assert auto_batch_size(None, "random") == 1  # a launcher that does not say how many run


def test_the_config_loader_arrives_once_per_process_and_composes_as_hydra():
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(config_dir())))
    first, other = ReusingConfigLoader(loader), ReusingConfigLoader(loader)
    blob = pickle.dumps(first)
    assert len(pickle.dumps(first)) == len(blob)  # pickled once: the same bytes every job
    shipping._RECEIVED.clear()  # as in a fresh job process
    a, b, c = pickle.loads(blob), pickle.loads(blob), pickle.loads(pickle.dumps(other))
    assert a is b and a is not c and a.token == first.token and c.token == other.token
    master = loader.load_configuration("train", ["+study=lr_ratio", "hydra.sweep.dir=/tmp/x"],
                                       run_mode=RunMode.MULTIRUN)
    trial = ["+study=lr_ratio", "schedule.lr_ratio=2.61", "data.bs=16", "seed=3"]
    assert OmegaConf.to_container(a.load_sweep_config(master, trial)) == OmegaConf.to_container(
        loader.load_sweep_config(master, trial))


def test_hydras_singletons_arrive_once_with_the_plugins_already_found():
    shipped = ShippedInstances({int: "a value", str: "another"})
    blob = pickle.dumps(shipped)
    shipping._RECEIVED.clear()
    first, again = pickle.loads(blob), pickle.loads(blob)
    assert first is again and first[int] == "a value" and first[str] == "another"
    assert first[Plugins] is Plugins.instance()  # set_state finds them: no second discovery
    assert type(first) is dict and Singleton._instances is not first


def test_a_claim_reads_the_trials_without_their_metrics(tmp_path):
    with TrialStore(tmp_path / "trials.db") as store:
        store.start([(0, {"x": 0.5}, "0"), (1, {"x": 0.7}, "1")], next_job=2)
        store.finish(0, "completed", 1.5, {"objective": 1.5, "seconds": {"train": 0.1}}, "0", None)
        full, light = store.trials(), store.trials(metrics=False)
    assert full[0].metrics == {"objective": 1.5, "seconds": {"train": 0.1}}
    assert [t.metrics for t in light] == [None, None]
    assert [(t.number, t.status, t.value, t.params) for t in light] == [
        (t.number, t.status, t.value, t.params) for t in full]


def test_what_plain_pickle_cannot_ship_goes_by_the_launchers_own_pickler():
    import cloudpickle  # what joblib (loky) and ray pickle with

    shipped = ShippedInstances({int: lambda: 42})  # e.g. a user's resolver in a singleton
    assert shipped.blob is None
    assert cloudpickle.loads(cloudpickle.dumps(shipped))[int]() == 42
