"""Every config option composes against its schema; bad keys, types and values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from fastlab import registry
from fastlab.config import AugConfig, RunConfig, TrainerConfig, config_dir, to_run_config
from fastlab.errors import ConfigError
from tests.conftest import compose_cfg

GROUPS = ["data", "arch", "schedule", "task", "trainer", "aug"]
NEEDS_PATH = {"folder", "name_re", "csv"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def schema_of(group: str, option: str) -> type:
    if group == "aug":
        return AugConfig
    return TrainerConfig if group == "trainer" else registry.get(group, option).schema


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_converts(group, option):
    extra = [f"data.path={Path.cwd()}"] if group == "data" and option in NEEDS_PATH else []
    cfg = compose_cfg(f"{group}={option}", *extra, small=False)
    run = to_run_config(cfg)
    assert isinstance(run, RunConfig)
    node = getattr(run, group)
    assert isinstance(node, schema_of(group, option))


def test_every_yaml_option_has_a_schema_and_vice_versa():
    for group in registry.GROUPS:
        assert set(options(group)) == set(registry.options(group)), group


def test_experiment_composes():
    run = to_run_config(compose_cfg("+experiment=quick", small=False))
    assert run.data.size == 16 and run.schedule.epochs == 2


def test_defaults():
    run = to_run_config(compose_cfg(small=False))
    assert (run.data.name, run.arch.name, run.schedule.name, run.task.name) == ("digits", "cnn", "one_cycle", "classify")
    assert run.data.seed == 42 and run.seed == 0 and run.task.objective == "accuracy"


@pytest.mark.parametrize(
    "override, error, fragment",
    [
        ("data.bz=32", ConfigCompositionException, "bz"),  # a misspelt key
        ("data.bs=many", ConfigCompositionException, "bs"),  # a wrong type
        ("data=imagenet", ConfigCompositionException, "imagenet"),  # an unknown option
        ("data.pattern=x", ConfigCompositionException, "pattern"),  # a key of another source
    ],
)
def test_hydra_refuses_bad_keys_types_and_options(override, error, fragment):
    with pytest.raises((error, ConfigKeyError, ValidationError)) as info:
        compose_cfg(override)
    assert fragment in str(info.value) or fragment in str(info.value.__cause__)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.bs=0", "data.bs must be a positive integer"),
        ("data.bs=-3", "data.bs must be a positive integer"),
        ("data.valid_bs=0", "data.valid_bs must be null or a positive integer"),
        ("data.size=0", "data.size"),
        ("data.valid_pct=1.5", "data.valid_pct"),
        ("schedule.lr_max=-0.1", "schedule.lr_max must be a positive finite number"),
        ("schedule.lr_max=nan", "schedule.lr_max must be a positive finite number"),
        ("schedule.lr_max=inf", "schedule.lr_max must be a positive finite number"),
        ("schedule.lr_max=fast", "is not a learning rate"),
        ("schedule.lr_max=[1e-2,1e-3]", "lo > hi"),
        ("schedule.lr_max=[0,1e-3]", "slice [lo, hi] of positive finite numbers"),
        ("schedule.lr_max=[1e-3]", "slice [lo, hi]"),
        ("schedule.lr_ratio=0.5", "schedule.lr_ratio"),
        ("schedule.suggestion=best", "schedule.suggestion"),
        ("trainer.callbacks.early_stopping.mode=up", "early_stopping.mode"),
        ("trainer.callbacks.grad_clip=-1", "grad_clip"),
        ("save_as=../evil", "save_as"),
        ("schedule.epochs=0", "schedule.epochs"),
        ("schedule.opt=adam", "schedule.opt"),
        ("schedule.moms=[0.9,0.8]", "schedule.moms"),
        ("trainer.device=tpu", "trainer.device"),
        ("trainer.precision=8", "trainer.precision"),
        ("data.mean=[0.5]", "data.mean and data.std go together"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as info:
        to_run_config(compose_cfg(override))
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_slice_and_ratio_together_are_refused():
    with pytest.raises(ConfigError, match="not both"):
        to_run_config(compose_cfg("schedule.lr_max=[1e-4,1e-2]", "schedule.lr_ratio=2.6"))


@pytest.mark.parametrize("value, want", [("3e-3", 3e-3), ("[1e-5,1e-3]", [1e-5, 1e-3]), ("[null,1e-3]", [None, 1e-3]),
                                         ("find", "find")])
def test_lr_max_forms(value, want):
    lr_max = to_run_config(compose_cfg(f"schedule.lr_max={value}")).schedule.lr_max
    assert lr_max == want and type(lr_max) is type(want)  # a number stays a float, a slice a list


def test_user_option_without_schema_is_checked_by_name():
    cfg = compose_cfg()
    cfg_dict = {**dict(cfg), "data": {"name": "digits", "bs": 8, "colour": "red"}}
    with pytest.raises(ConfigError, match="unknown key"):
        to_run_config(cfg_dict)
    cfg_dict["data"] = {"name": "mnist"}
    with pytest.raises(ConfigError, match="not known"):
        to_run_config(cfg_dict)


def test_user_config_group_option_from_searchpath(tmp_path):
    """A user's own option (here without a schema of its own) composes from hydra.searchpath and
    is checked by its ``name``; an unknown key in it is refused."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tiny_digits.yaml").write_text("name: digits\nsize: 12\nbs: 16\n")
    (tmp_path / "data" / "typo.yaml").write_text("name: digits\nsizee: 12\n")
    cfg = compose_cfg("data=tiny_digits", f"hydra.searchpath=[file://{tmp_path}]", small=False)
    run = to_run_config(cfg)
    assert (run.data.size, run.data.bs, run.data.valid_pct) == (12, 16, 0.2)
    with pytest.raises(ConfigError, match="sizee"):
        to_run_config(compose_cfg("data=typo", f"hydra.searchpath=[file://{tmp_path}]", small=False))
