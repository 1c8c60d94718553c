"""A sweep's HParams summary for TensorBoard: one session per trial, its searched keys and its
objective, so TensorBoard's HParams tab compares the trials.

``<sweep dir>/hparams/`` holds the experiment (the searched keys, the objective) and one run per
trial, ``hparams/<job dir>/`` (e.g. ``hparams/3``): the session's params, the scalar
``hparams/<objective>`` and the session's end, whose status is the trial's (completed: success;
diverged, failed, pruned: failure; running: running). The whole folder is written anew at each
sweep end (beside it, then swapped in), so a resumed sweep holds each trial once.
``tensorboard --logdir <sweep dir>`` shows it beside the trials' own ``<job>/tensorboard``.
The protos are TensorBoard's own (``tensorboard.plugins.hparams``), written with torch's
``SummaryWriter``: no TensorFlow needed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HPARAMS_DIR = "hparams"


def _summary(tag: str, plugin_data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(plugin_data),
                                        tensor=metadata.NULL_TENSOR)])


def hparam_value(value: Any) -> tuple[str, Any]:
    """``(kind, value)`` as an HParams value holds it: number, bool or string (lists as JSON)."""
    if isinstance(value, bool):
        return "bool_value", value
    if isinstance(value, int | float) and math.isfinite(value):
        return "number_value", float(value)
    return "string_value", value if isinstance(value, str) else json.dumps(value)


def _status(status: str) -> int:
    from tensorboard.plugins.hparams import api_pb2

    return {"completed": api_pb2.STATUS_SUCCESS, "running": api_pb2.STATUS_RUNNING}.get(
        status, api_pb2.STATUS_FAILURE)


def _experiment(names: Sequence[str], kinds: dict[str, str], metric: str) -> Any:
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    types = {"bool_value": api_pb2.DATA_TYPE_BOOL, "number_value": api_pb2.DATA_TYPE_FLOAT64,
             "string_value": api_pb2.DATA_TYPE_STRING}
    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=n, type=types[kinds.get(n, "string_value")]) for n in names],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=metric))])
    return _summary(metadata.EXPERIMENT_TAG,
                    plugin_data_pb2.HParamsPluginData(experiment=experiment,
                                                      version=metadata.PLUGIN_DATA_VERSION))


def _session(params: dict[str, Any], group: str, status: str) -> tuple[Any, Any]:
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(group_name=group)
    for name, value in params.items():
        kind, v = hparam_value(value)
        setattr(start.hparams[name], kind, v)
    end = plugin_data_pb2.SessionEndInfo(status=_status(status))
    version = metadata.PLUGIN_DATA_VERSION
    return (_summary(metadata.SESSION_START_INFO_TAG,
                     plugin_data_pb2.HParamsPluginData(session_start_info=start, version=version)),
            _summary(metadata.SESSION_END_INFO_TAG,
                     plugin_data_pb2.HParamsPluginData(session_end_info=end, version=version)))


def write_hparams(sweep_dir: Path, names: Sequence[str], trials: Sequence[Any], objective: str) -> Path:
    """Write ``<sweep_dir>/hparams`` for ``trials`` (``fastlab.sweep.store.Trial``s) over the
    searched keys ``names``; returns the folder."""
    from torch.utils.tensorboard import SummaryWriter

    sweep_dir = Path(sweep_dir)
    metric = f"hparams/{objective}"
    kinds: dict[str, str] = {}
    for t in trials:
        for n in names:
            if n in t.params:
                kinds.setdefault(n, hparam_value(t.params[n])[0])
    final = sweep_dir / HPARAMS_DIR
    temp = sweep_dir / f".{HPARAMS_DIR}.{os.getpid()}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    with SummaryWriter(log_dir=str(temp)) as w:
        w._get_file_writer().add_summary(_experiment(names, kinds, metric))
    for t in trials:
        run = t.job_dir if t.job_dir and not Path(t.job_dir).is_absolute() else f"trial_{t.number}"
        params = {n: t.params[n] for n in names if n in t.params}
        start, end = _session(params, group=f"trial {t.number}", status=t.status)
        with SummaryWriter(log_dir=str(temp / run)) as w:
            writer = w._get_file_writer()
            writer.add_summary(start)
            if t.status == "completed" and t.value is not None and math.isfinite(t.value):
                w.add_scalar(metric, float(t.value), 0)
            writer.add_summary(end)
    old = sweep_dir / f".{HPARAMS_DIR}.{os.getpid()}.old"
    if final.exists():
        final.rename(old)
    temp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
