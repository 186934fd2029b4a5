"""Run records: tidy CSV tables written as the run goes, and run.json with the metadata.

Folder layout of one run:
  iterations.csv  one row per (scheme, iteration): measured and predicted runtime, loss, ...
  messages.csv    one row per (scheme, iteration, slot, worker) message: T_n, when the worker's
                  clock started and when it received theta, deadline and send time (both from
                  its start), arrival at the master, overrun, status (used / late / duplicate /
                  stale). Times ending in _s are seconds; worker_start_s, received_s and
                  arrival_s count from the master's broadcast (same host: one monotonic clock).
  blocks.csv      one row per (scheme, iteration, slot): when it was decoded, measured and predicted
  run.json        config, seed, package versions, git commit, host, CPU affinity, summaries
Rows are flushed after every iteration, so an interrupted run keeps everything finished.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ITERATION_FIELDS = (
    "scheme",
    "iteration",
    "measured_s",
    "predicted_s",
    "ratio",
    "loss",
    "gradient_rel_error",
    "messages_used",
    "messages_late",
    "messages_stale",
    "overruns",
    "max_overrun_s",
)
MESSAGE_FIELDS = (
    "scheme",
    "iteration",
    "slot",
    "worker",
    "cycle_time",
    "worker_start_s",
    "received_s",
    "deadline_s",
    "send_s",
    "arrival_s",
    "overrun_s",
    "status",
)
BLOCK_FIELDS = (
    "scheme",
    "iteration",
    "slot",
    "stragglers",
    "start",
    "stop",
    "needed",
    "decoded_s",
    "predicted_s",
)


class RunRecorder:
    """Writes the tables of one run into `folder` (created)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = []
        self.iterations = self._writer("iterations.csv", ITERATION_FIELDS)
        self.messages = self._writer("messages.csv", MESSAGE_FIELDS)
        self.blocks = self._writer("blocks.csv", BLOCK_FIELDS)

    def _writer(self, name: str, fields: tuple[str, ...]) -> csv.DictWriter:
        handle = open(self.folder / name, "w", newline="")  # noqa: SIM115 - closed in close()
        self._files.append(handle)
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        return writer

    def flush(self) -> None:
        for handle in self._files:
            handle.flush()

    def close(self) -> None:
        for handle in self._files:
            handle.close()

    def write_metadata(self, data: dict[str, Any]) -> None:
        """(Re)write run.json atomically."""
        tmp = self.folder / "run.json.tmp"
        tmp.write_text(json.dumps(json_safe(data), indent=2, default=_plain, allow_nan=False))
        os.replace(tmp, self.folder / "run.json")


def json_safe(value: Any) -> Any:
    """A copy of `value` with NaN and infinities replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def environment() -> dict[str, Any]:
    """Package versions, git commit (if any), host and CPU facts for run.json."""
    versions = {}
    for name in ("bcgc-sim", "numpy", "scipy", "pyzmq", "psutil", "msgpack", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import zmq

    versions["libzmq"] = zmq.zmq_version()
    try:
        affinity = psutil.Process().cpu_affinity()
    except (AttributeError, psutil.Error):
        affinity = None
    return {
        "versions": versions,
        "git_commit": _git_commit(),
        "host": {
            "name": platform.node(),
            "system": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "master_cpu_affinity": affinity,
            "memory_bytes": psutil.virtual_memory().total,
        },
    }


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
