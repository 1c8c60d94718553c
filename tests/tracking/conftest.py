"""One MLflow store for the tracking tests: making a fresh SQLite store runs MLflow's migrations
(seconds on a shared CPU), so the tests share one and tell their runs apart by experiment. And W&B
in offline mode, with its offline runs read back (:func:`wandb_offline_runs`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Tests send nothing anywhere: MLflow's usage telemetry off, here and in the subprocesses (whose
# environments copy this one). (MLflow also turns it off by itself where CI is set.)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def store_root(tmp_path_factory) -> Path:
    """A working directory whose ``outputs/mlruns`` is fastlab's default MLflow store."""
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture(scope="session")
def store_uri(store_root: Path) -> str:
    """The default store's URI, as fastlab resolves it from ``store_root``."""
    return f"sqlite:///{store_root / 'outputs' / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def in_store_root(store_root: Path, monkeypatch):
    """Run from ``store_root`` with no tracking URI in the environment: the default store."""
    monkeypatch.chdir(store_root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return store_root


def experiment_runs(uri: str, experiment: str) -> list:
    """Every run of ``experiment`` in the store at ``uri``, read back with mlflow.search_runs."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment], output_format="list",
                                  order_by=["attributes.start_time ASC"])
    finally:
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or None)


# --- W&B: offline runs, read back ------------------------------------------------------------

WANDB_OFFLINE = {
    "WANDB_MODE": "offline",  # nothing leaves the machine; each run is a folder under $WANDB_DIR/wandb
    "WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
    "WANDB__DISABLE_STATS": "true", "WANDB__DISABLE_META": "true",  # no system sampling: quicker
}


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch) -> Path:
    """W&B in offline mode for this test (here and in subprocesses, which copy the environment),
    writing under ``tmp_path/wandb_dir``; returns that dir."""
    root = tmp_path / "wandb_dir"
    root.mkdir()
    for key, value in {**WANDB_OFFLINE, "WANDB_DIR": str(root)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return root


def wandb_offline_runs(root: Path) -> list[dict]:
    """Every offline W&B run under ``root`` (a ``$WANDB_DIR``), as the records of its
    ``run-<id>.wandb`` say: ``id``, ``group``, ``job_type``, ``name``, ``tags``, ``config``
    (the last value of each key), ``history`` (one dict per logged step, ``_step`` included),
    ``summary`` (the last value of each key set by the program; W&B's own ``_``-keys left out),
    ``artifacts`` ({artifact name: (type, [paths in it])}) and ``exit_code``.

    The private part of W&B this reads, and the only place tests touch one: wandb 0.31 has no
    Python reader of its record log (the old ``wandb.sdk.internal.datastore`` is gone with the
    Go core), so this reads the format itself. It is LevelDB's log format: a 7-byte header
    (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks ``crc32 (of type +
    data, IEEE), length (u16), type (1 full, 2 first, 3 middle, 4 last)`` holding serialised
    ``wandb.proto.wandb_internal_pb2.Record`` messages. Each chunk's checksum is checked, so a
    change of format fails here, loudly, not as a wrong value.
    """
    runs = []
    for path in sorted(root.glob("wandb/offline-run-*/run-*.wandb")):
        run: dict = {"config": {}, "history": [], "summary": {}, "artifacts": {}, "exit_code": None}
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                r = record.run
                run.update(id=r.run_id, group=r.run_group, job_type=r.job_type, name=r.display_name,
                           tags=list(r.tags))
                run["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
            elif kind == "config":
                run["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
            elif kind == "history":
                run["history"].append({(i.key or ".".join(i.nested_key)): json.loads(i.value_json)
                                       for i in record.history.item})
            elif kind == "summary":
                for u in record.summary.update:
                    key = u.key or ".".join(u.nested_key)
                    if not key.startswith("_"):
                        run["summary"][key] = json.loads(u.value_json)
            elif kind == "artifact":
                a = record.artifact
                run["artifacts"][a.name] = (a.type, sorted(e.path for e in a.manifest.contents))
            elif kind == "exit":
                run["exit_code"] = record.exit.exit_code
        runs.append(run)
    return runs


def _wandb_records(path: Path):
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:7] == b":W&B\xe1\xbe\x00", f"{path}: not a W&B record log of the version this reader knows"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, size, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + size]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad checksum at byte {pos}"
        pos += 7 + size
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
