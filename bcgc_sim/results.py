"""Run records: tidy CSV tables written as the run goes, and run.json with the metadata.

Folder layout of one run:
  iterations.csv  one row per (scheme, iteration): measured and predicted runtime, loss, ...
  messages.csv    one row per (scheme, iteration, slot, worker) message: T_n, when the worker's
                  clock started and when it received theta, deadline and send time (both from
                  its start), arrival at the master, overrun, status (used / late / duplicate /
                  stale). Times ending in _s are seconds; worker_start_s, received_s and
                  arrival_s count from the master's broadcast (same host: one monotonic clock).
  blocks.csv      one row per (scheme, iteration, slot): when it was decoded, measured and predicted
  partial.csv     (partial-gc schemes only) one row per iteration: stop rule and time, COMBINE /
                  UPLOAD round trip, copies, estimated / predicted / measured NMSE, bytes
                  (PartialRow). In messages.csv these schemes write one row per NOTICE
                  (slot = the chunk's 0-based position in the worker's order) and per UPLOAD
                  (slot = delta; deadline_s = when the worker received COMBINE).
  run.json        config, seed, package versions, git commit, host, CPU affinity, summaries
The columns of each table are the fields of its row record (IterationRow, MessageRow,
BlockRow, PartialRow), in order. Rows are queued in memory and written to disk every WRITE_INTERVAL_S, at the end of each scheme
and on close (also when a run is interrupted or fails): formatting the rows and flushing three
files after every iteration cost the master about 0.15 ms per iteration at N = 8, L = 1e3. Only
a master killed outright (SIGKILL) can lose the rows of its last WRITE_INTERVAL_S.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


@dataclass(slots=True)
class IterationRow:
    """iterations.csv: one (scheme, iteration)."""

    scheme: str
    iteration: int
    measured_s: float  # broadcast to the last decode
    predicted_s: float  # the model's runtime for the same T
    ratio: float  # measured_s / predicted_s
    loss: float  # mean loss at this iteration's theta
    gradient_rel_error: float | None  # max |g_hat - g| / max |g| (needs run.check)
    messages_used: int
    messages_late: int
    messages_stale: int
    overruns: int  # messages whose compute ended after their deadline
    max_overrun_s: float


@dataclass(slots=True)
class MessageRow:
    """messages.csv: one (scheme, iteration, slot, worker) message."""

    scheme: str
    iteration: int
    slot: int
    worker: int
    cycle_time: float  # T_n of this iteration
    worker_start_s: float  # the worker's clock start, from the master's broadcast
    received_s: float  # the worker's receipt of theta, from the broadcast
    deadline_s: float  # from the worker's start
    send_s: float  # from the worker's start
    arrival_s: float  # at the master, from the broadcast
    overrun_s: float
    status: str  # used / late / duplicate / stale


@dataclass(slots=True)
class BlockRow:
    """blocks.csv: one (scheme, iteration, slot)."""

    scheme: str
    iteration: int
    slot: int
    stragglers: int
    start: int
    stop: int
    needed: int  # messages the decode needed
    decoded_s: float  # from the broadcast
    predicted_s: float


@dataclass(slots=True)
class PartialRow:
    """partial.csv (partial-gc schemes only): one iteration of the partial-straggler protocol."""

    scheme: str
    iteration: int
    stop_reason: str  # exact | deadline | nmse
    stop_s: float  # master's stop decision, from the broadcast
    round_trip_s: float  # stop decision -> last UPLOAD decoded (coefficients, COMBINE, UPLOAD)
    measured_s: float  # stop_s + round_trip_s
    predicted_s: float  # the model's stop time for the same T (it has no round trip)
    notices_used: int
    notices_late: int
    uploads: int
    covered_chunks: int  # chunks with >= l processed copies at the stop
    nmse_estimated: float  # sum_i (l - kappa_i)^+ / (m l) at the stop, from the notices
    nmse_predicted: float  # the same from the model, same T
    nmse: float | None  # measured ||g_hat - g||^2 / ||g||^2 (needs run.check)
    gradient_rel_error: float | None  # max |g_hat - g| / max |g| (needs run.check)
    uplink_floats: int  # all UPLOAD payloads (NOTICEs carry none)
    downlink_floats: int  # all COMBINE coefficients
    worst_condition: float  # max_i cond(Phi[:, S_i])


Row = IterationRow | MessageRow | BlockRow | PartialRow
WRITE_INTERVAL_S = 0.5  # queued rows reach the disk at least this often during a run


class Table:
    """One CSV table of a run, its columns the fields of one row record; rows are queued until
    the recorder writes them. A row is that record or a dict with (some of) its fields."""

    def __init__(self, handle, record: type[Row]) -> None:
        self.handle = handle
        self.columns = tuple(f.name for f in dataclasses.fields(record))
        self.writer = csv.DictWriter(handle, fieldnames=self.columns)
        self.writer.writeheader()
        self.queued: list[Row | dict] = []

    def writerow(self, row: Row | dict) -> None:
        self.queued.append(row)

    def writerows(self, rows) -> None:
        self.queued.extend(rows)

    def write(self) -> None:
        """Format the queued rows into the file and hand them to the OS."""
        self.writer.writerows(
            row if isinstance(row, dict) else {c: getattr(row, c) for c in self.columns}
            for row in self.queued
        )
        self.queued.clear()
        self.handle.flush()


class RunRecorder:
    """Writes the tables of one run into `folder` (created)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tables: list[Table] = []
        self._extra: dict[str, Table] = {}
        self._written = time.monotonic()
        self.iterations = self._writer("iterations.csv", IterationRow)
        self.messages = self._writer("messages.csv", MessageRow)
        self.blocks = self._writer("blocks.csv", BlockRow)

    def table(self, name: str, record: type[Row]) -> Table:
        """An extra table of this run (created on first use), e.g. partial.csv of PartialRow."""
        if name not in self._extra:
            self._extra[name] = self._writer(name, record)
        return self._extra[name]

    def _writer(self, name: str, record: type[Row]) -> Table:
        handle = open(self.folder / name, "w", newline="")  # noqa: SIM115 - closed in close()
        self._tables.append(Table(handle, record))
        return self._tables[-1]

    def flush(self) -> None:
        """Write every queued row now."""
        for table in self._tables:
            table.write()
        self._written = time.monotonic()

    def flush_if_due(self) -> None:
        """Write the queued rows if WRITE_INTERVAL_S has passed since the last write (sessions
        call this after each iteration)."""
        if time.monotonic() - self._written >= WRITE_INTERVAL_S:
            self.flush()

    def close(self) -> None:
        self.flush()
        for table in self._tables:
            table.handle.close()

    def write_metadata(self, data: dict[str, Any]) -> None:
        """Write the queued rows, then (re)write run.json atomically."""
        self.flush()
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
