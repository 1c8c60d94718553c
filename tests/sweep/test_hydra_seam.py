"""Each Hydra internal a sweep relies on (fastlab.sweep.hydra_private), taken away or given the
wrong shape: one warning line names it, that piece takes Hydra's public path, and the sweep runs
the same trials as with the internals present.

The sweeps run in this process (the tiny app, Hydra's basic launcher), so that what a test takes
away is gone for the driver and its jobs alike; a sweep takes well under a second.
"""

import logging
import runpy
import sys
import threading
from pathlib import Path

import pytest
from hydra._internal import config_loader_impl  # what the tests take away: Hydra's own module
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import open_dict

from fastlab.sweep import hydra_private
from fastlab.sweep.errors import SweepError
from fastlab.sweep.store import TrialStore

APP = Path(__file__).resolve().parents[2] / "tests" / "sweep_apps" / "app.py"
# The tiny app's config with hydra.sweeper.params as YAML types them: y an int, c a choice of
# quoted strings (both written back as override text for the trials).
PARAMS = """\
defaults:
  - config
  - _self_
hydra:
  sweeper:
    params:
      y: 2
      c: choice('a', "b")
"""
# A grid with a failed (x=0.2) and a diverged (x=0.3) trial and a config-group choice (opt=sgd
# shapes the composition).
SWEEP = ["hydra.sweeper.strategy=grid", "x=0.1,0.2,0.3,0.4", "opt=sgd", "fail_x=0.2", "nan_x=0.3"]
SEAM = "fastlab.sweep.hydra_private"


def run_sweep(sweep_dir: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> list[tuple]:
    """The tiny app's sweep in this process; its trials as (number, status, value, params, error)."""
    conf = sweep_dir.parent / f"{sweep_dir.name}-conf"
    conf.mkdir(parents=True)
    (conf / "params.yaml").write_text(PARAMS)
    argv = [str(APP), "-m", "--config-dir", str(conf), "--config-name", "params",
            f"hydra.sweep.dir={sweep_dir}", *SWEEP, *extra,
            # Hydra leaves this process's logging as it is, so the test sees the warnings.
            "hydra/job_logging=none", "hydra/hydra_logging=none"]
    with monkeypatch.context() as m:
        m.setattr(sys, "argv", argv)
        m.setenv("HYDRA_FULL_ERROR", "1")  # an error is raised here, not printed
        runpy.run_path(str(APP), run_name="__main__")
    with TrialStore(sweep_dir / "trials.db") as store:
        trials = store.trials()
    return [(t.number, t.status, t.value, t.params, t.error) for t in trials]


def seam_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SEAM and r.levelno >= logging.WARNING]


@pytest.fixture(autouse=True)
def checked_afresh(monkeypatch):
    """Each test checks Hydra's internals as a fresh process would, and leaves them checked afresh."""
    hydra_private.forget()
    yield
    monkeypatch.undo()
    hydra_private.forget()


@pytest.fixture(scope="module")
def with_internals(tmp_path_factory) -> list[tuple]:
    """The sweep's trials with Hydra's internals as they are."""
    hydra_private.forget()
    with pytest.MonkeyPatch.context() as m:
        trials = run_sweep(tmp_path_factory.mktemp("internals") / "sweep", m)
    assert all(hydra_private.fit(piece) for piece in hydra_private.PUBLIC)  # none fell back
    hydra_private.forget()
    return trials


def test_the_sweep_uses_every_internal_on_this_hydra(with_internals, tmp_path, monkeypatch, caplog):
    # What the comparisons below compare: every kind of trial, the errors as recorded.
    statuses = ["completed", "failed", "diverged", "completed"]  # x = 0.1, 0.2, 0.3, 0.4
    assert [(t[0], t[1], t[3]) for t in with_internals] == [
        (n, statuses[n % 4], {"c": c, "x": x}) for n, (c, x) in enumerate((c, x) for c in "ab" for x in (0.1, 0.2, 0.3, 0.4))]
    assert "RuntimeError: boom at x=0.2" in with_internals[1][4]
    caplog.set_level(logging.WARNING)
    assert run_sweep(tmp_path / "again", monkeypatch) == with_internals
    assert seam_warnings(caplog) == []
    assert all(hydra_private.fit(piece) for piece in hydra_private.PUBLIC)


def assert_public_path(caplog, with_internals, trials, *names: str, public: str) -> None:
    """One warning line, naming what is missing and the public path; the same trials."""
    (line,) = seam_warnings(caplog)
    assert "\n" not in line and "Hydra's public path" in line and public in line, line
    assert all(name in line for name in names), line
    assert trials == with_internals


def test_composition_when_apply_overrides_takes_other_arguments(with_internals, tmp_path, monkeypatch, caplog):
    original = config_loader_impl.ConfigLoaderImpl._apply_overrides_to_config

    def renamed(overrides_list, config):  # Hydra's own (positional) call still works
        return original(overrides_list, config)

    monkeypatch.setattr(config_loader_impl.ConfigLoaderImpl, "_apply_overrides_to_config", staticmethod(renamed))
    caplog.set_level(logging.WARNING)
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert_public_path(caplog, with_internals, trials, "ConfigLoaderImpl._apply_overrides_to_config",
                       "(overrides, cfg)", public="load_sweep_config")
    assert not hydra_private.composes()


def test_composition_when_apply_overrides_is_missing(with_internals, tmp_path, monkeypatch, caplog):
    # Gone under this name, Hydra's own composition uses it under another.
    impl = config_loader_impl.ConfigLoaderImpl
    apply = impl.__dict__["_apply_overrides_to_config"]
    monkeypatch.setattr(impl, "_apply_overrides", apply, raising=False)
    monkeypatch.delattr(impl, "_apply_overrides_to_config")
    original = impl._load_configuration_impl

    def hydras_own(self, *args, **kwargs):
        with monkeypatch.context() as m:  # Hydra's body, with the name it knows
            m.setattr(impl, "_apply_overrides_to_config", apply, raising=False)
            return original(self, *args, **kwargs)

    monkeypatch.setattr(impl, "_load_configuration_impl", hydras_own)
    caplog.set_level(logging.WARNING)
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert_public_path(caplog, with_internals, trials, "ConfigLoaderImpl._apply_overrides_to_config is missing",
                       public="load_sweep_config")


def test_composition_when_override_dirname_is_made_otherwise(with_internals, tmp_path, monkeypatch, caplog):
    def unsorted(overrides, exclude_keys, item_sep, kv_sep):
        lines = [o.input_line for o in overrides if o.key_or_group not in exclude_keys]
        return item_sep.join(lines).replace("=", kv_sep)

    monkeypatch.setattr(config_loader_impl, "get_overrides_dirname", unsorted)
    caplog.set_level(logging.WARNING)
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert_public_path(caplog, with_internals, trials, "get_overrides_dirname", "'a~1,b~2'",
                       public="load_sweep_config")


def test_composition_when_hydra_sets_the_job_fields_otherwise(with_internals, tmp_path, monkeypatch, caplog):
    original = config_loader_impl.ConfigLoaderImpl._load_configuration_impl

    def changed(self, *args, **kwargs):
        cfg = original(self, *args, **kwargs)
        with open_dict(cfg.hydra):
            cfg.hydra.job.override_dirname = f"v2-{cfg.hydra.job.override_dirname}"
        return cfg

    monkeypatch.setattr(config_loader_impl.ConfigLoaderImpl, "_load_configuration_impl", changed)
    caplog.set_level(logging.WARNING)
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert_public_path(caplog, with_internals, trials, "_load_configuration_impl", "hydra.job.override_dirname",
                       public="load_sweep_config")


@pytest.mark.parametrize("change", ["missing", "wrong shape"])
def test_shipping_without_get_state(change, with_internals, tmp_path, monkeypatch, caplog):
    if change == "missing":
        monkeypatch.delattr(Singleton, "get_state")
        names = ("Singleton.get_state is missing",)
    else:
        monkeypatch.setattr(Singleton, "get_state", staticmethod(lambda: ("instances", {})))
        names = ("Singleton.get_state()", "got tuple")
    caplog.set_level(logging.WARNING)
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert_public_path(caplog, with_internals, trials, *names, public="the launcher's own launch")


def test_job_returns_without_return_value(with_internals, tmp_path, monkeypatch, caplog):
    # JobReturn keeps what a job returned or raised under another name; its public property
    # still raises a failed job's exception (Hydra prints a line on stderr, as Hydra does).
    def get(ret):
        if ret.status == JobStatus.COMPLETED:
            return ret._kept
        raise ret._kept

    def put(ret, value):
        ret._kept = value

    monkeypatch.setattr(JobReturn, "return_value", property(get, put))
    caplog.set_level(logging.WARNING)
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert_public_path(caplog, with_internals, trials, "JobReturn._return_value", public="JobReturn.return_value")
    assert [t[4] for t in trials if t[1] == "failed"] == [
        "RuntimeError: boom at x=0.2", "RuntimeError: boom at x=0.2"]  # as recorded with the internal


def test_override_text_without_get_value_element_as_str(with_internals, tmp_path, monkeypatch, caplog):
    monkeypatch.delattr(Override, "_get_value_element_as_str")
    caplog.set_level(logging.WARNING)
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert_public_path(caplog, with_internals, trials, "Override._get_value_element_as_str is missing",
                       public="override grammar")


def watch_launches(monkeypatch, watch) -> None:
    """Every launch call of the sweep's launcher (Hydra's basic one) goes through ``watch`` first."""
    instantiate = Plugins.instantiate_launcher

    def instantiated(self, *args, **kwargs):
        launcher = instantiate(self, *args, **kwargs)
        launch = launcher.launch

        def watched(job_overrides, initial_job_idx):
            watch()
            return launch(job_overrides, initial_job_idx=initial_job_idx)

        launcher.launch = watched
        return launcher

    monkeypatch.setattr(Plugins, "instantiate_launcher", instantiated)


def test_get_state_is_replaced_only_while_a_launch_call_runs(tmp_path, monkeypatch):
    hydras = Singleton.__dict__["get_state"]
    seen = []
    watch_launches(monkeypatch, lambda: seen.append((Singleton.__dict__["get_state"] is hydras,
                                                      type(Singleton.get_state()["instances"]).__name__)))
    trials = run_sweep(tmp_path / "sweep", monkeypatch)
    assert len(trials) == 8 and seen and all(s == (False, "ShippedInstances") for s in seen)
    assert Singleton.__dict__["get_state"] is hydras  # Hydra's again once the sweep is over

    def broken():
        assert Singleton.__dict__["get_state"] is not hydras
        raise OSError("no job could start")

    watch_launches(monkeypatch, broken)
    with pytest.raises(SweepError, match="the launcher failed"):
        run_sweep(tmp_path / "broken", monkeypatch)
    assert Singleton.__dict__["get_state"] is hydras  # and after a launch call that failed


def test_launch_calls_on_several_threads_share_one_replacement():
    # Asynchronous launch calls overlap: the first to start ends while the second still runs.
    hydras = Singleton.__dict__["get_state"]
    shipped = hydra_private.ShippedSingletons({"instances": {}, "omegaconf_resolvers": {}})
    second_in, first_out = threading.Event(), threading.Event()
    during = []

    def second():
        with shipped.installed():
            second_in.set()
            first_out.wait(10)
            during.append(Singleton.get_state() is shipped.state)  # still in place for this call

    with shipped.installed():
        thread = threading.Thread(target=second)
        thread.start()
        second_in.wait(10)
        during.append(Singleton.get_state() is shipped.state)
    first_out.set()
    thread.join(10)
    assert during == [True, True]
    assert Singleton.__dict__["get_state"] is hydras  # Hydra's once the last call has ended
