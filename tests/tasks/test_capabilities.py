"""What a task can do (``Task.supports``, ``Task.aug_targets``) is what every check reads: a task
registered here with one capability removed is refused by that check in one line, whatever its data
is; and what the augmentation moves with the images is the task's word, not the data kind's."""

from __future__ import annotations

import dataclasses

import pytest

from fastlab import registry
from fastlab.callbacks.augment import augment_callback
from fastlab.callbacks.factory import build_callbacks
from fastlab.config import CallbacksConfig, CutMixConfig, MixupConfig, TrainerConfig, to_run_config
from fastlab.data.augment import LABELS, MASKS, POINTS
from fastlab.errors import ConfigError
from fastlab.run.prepare import check_fit, prepare
from fastlab.tasks import CAPABILITIES, Task, get_task, supporting
from fastlab.tta import check_tta
from tests.conftest import compose_cfg, one_thread


@pytest.fixture
def registered(monkeypatch):
    """``registered(base, name, **changes)``: task ``base`` with ``changes`` registered as ``name``
    (with ``base``'s schema), for one test."""

    def register(base: str, name: str, **changes) -> Task:
        entry = registry.get("task", base)
        task = dataclasses.replace(entry.builder, name=name, **changes)
        monkeypatch.setitem(registry._ENTRIES["task"], name, registry.Entry("task", name, entry.schema, task))
        return task

    return register


@pytest.fixture
def without(registered):
    """``without(base, capability)``: task ``base`` registered again as
    ``<base>_without_<capability>``, that capability removed, for one test."""

    def register(base: str, capability: str) -> Task:
        return registered(base, f"{base}_without_{capability}",
                          supports=registry.get("task", base).builder.supports - {capability})

    return register


def run_of(task: Task, *overrides: str, small: bool = True):
    """A composed run of ``overrides`` whose ``task.name`` is ``task``'s."""
    run = to_run_config(compose_cfg(*overrides, small=small))
    run.task = dataclasses.replace(run.task, name=task.name)
    return run


def refusal(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("task, can", [
    ("classify", {"augment", "tta", "mixup", "cutmix", "presize", "sizes"}),
    ("regress", {"augment", "tta", "presize", "sizes"}),
    ("segment", {"augment", "cutmix", "presize", "sizes"}),
    ("language_model", set()),
    ("text_classify", set()),
    ("tabular", set()),
])
def test_each_task_says_what_it_can_do(task, can):
    t = get_task(task)
    assert {c for c in CAPABILITIES if t.can(c)} == can


def test_a_capability_outside_the_closed_set_is_a_registration_error():
    with pytest.raises(ValueError, match="unknown capabilities"):
        dataclasses.replace(get_task("classify"), supports=frozenset({"augment", "teleport"}))
    with pytest.raises(ValueError, match="aug_targets"):
        dataclasses.replace(get_task("classify"), aug_targets="pixels")
    with pytest.raises(ValueError, match="unknown capability"):
        get_task("classify").can("teleport")


# ------------------------------------------------------------------------------------ augment


def test_augmentation_reads_the_task(without):
    run = to_run_config(compose_cfg("aug=no_flip"))
    assert augment_callback(run).augment.kind == LABELS  # the task that can: built
    task = without("classify", "augment")
    run = run_of(task, "aug=no_flip")
    with pytest.raises(ConfigError) as e:
        augment_callback(run)
    message = refusal(e)
    assert "aug=no_flip transforms images" in message and "task=classify_without_augment" in message
    assert "use aug=none" in message
    with pytest.raises(ConfigError, match="does not augment"):
        prepare(run)  # the run is refused before its data is built


def test_what_moves_with_the_images_is_the_tasks_word(registered):
    # regress on points moves the points; the same data under a task that says labels moves none
    points = ["data=points", "task=regress", "task.objective=point_error", "data.n_images=40", "aug=no_flip"]
    assert augment_callback(to_run_config(compose_cfg(*points))).augment.kind == POINTS
    labels = registered("regress", "regress_values", aug_targets=LABELS)
    assert augment_callback(run_of(labels, *points)).augment.kind == LABELS
    seg = to_run_config(compose_cfg("+experiment=segment_scenes", "aug=no_flip", small=False))
    assert augment_callback(seg).augment.kind == MASKS


# ---------------------------------------------------------------------------------------- tta


def test_tta_reads_the_task(without):
    run = to_run_config(compose_cfg("aug=no_flip", "trainer.tta=true"))
    check_tta(run)  # classify can
    task = without("classify", "tta")
    run = run_of(task, "aug=no_flip", "trainer.tta=true")
    with pytest.raises(ConfigError) as e:
        check_tta(run)
    message = refusal(e)
    assert "trainer.tta=true" in message and "task=classify_without_tta" in message
    assert "use trainer.tta=false" in message and str(supporting("tta")) in message


def test_a_learners_tta_reads_its_task(without):
    task = without("classify", "tta")
    with one_thread():
        learn = prepare(run_of(task, "aug=no_flip")).learn
    assert learn.meta.task == task.name
    with pytest.raises(ConfigError) as e:
        learn.tta(n=2)
    assert "task=classify_without_tta does not support" in refusal(e)


# ------------------------------------------------------------------------------ mixup, cutmix


@pytest.mark.parametrize("base, name, cbs", [
    ("classify", "mixup", CallbacksConfig(mixup=MixupConfig(0.4))),
    ("classify", "cutmix", CallbacksConfig(cutmix=CutMixConfig(1.0))),
    ("segment", "cutmix", CallbacksConfig(cutmix=CutMixConfig(1.0))),
])
def test_mixing_reads_the_task(tmp_path, without, base, name, cbs):
    assert build_callbacks(TrainerConfig(callbacks=cbs), tmp_path, get_task(base), {})  # the task that can
    task = without(base, name)
    with pytest.raises(ConfigError) as e:
        build_callbacks(TrainerConfig(callbacks=cbs), tmp_path, task, {})
    message = refusal(e)
    fits = " or ".join(f"task={t}" for t in supporting(name))
    assert f"mixes images for {fits}, not task={task.name}" in message
    assert f"set trainer.callbacks.{name}.alpha=0" in message


# --------------------------------------------------------------------------- presize, sizes


@pytest.mark.parametrize("capability, override, key", [
    ("presize", "data.presize=24", "data.presize"),
    ("sizes", "schedule.sizes=[16,24]", "schedule.sizes"),
])
def test_presize_and_sizes_read_the_task(without, capability, override, key):
    check_fit(to_run_config(compose_cfg(override)), get_task("classify"))  # the task that can
    task = without("classify", capability)
    run = run_of(task, override)
    with pytest.raises(ConfigError) as e:
        check_fit(run, task)
    message = refusal(e)
    assert message.startswith(key) and f"task={task.name}" in message and f"set {key}=null" in message
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        prepare(run)
