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
BlockRow, PartialRow), in order. Rows are queued in memory and written to disk every
WRITE_INTERVAL_S, at the end of each scheme and on close (also when a run is interrupted or
fails): formatting the rows and flushing three files after every iteration cost the master about
0.15 ms per iteration at N = 8, L = 1e3. Only a master killed outright (SIGKILL) can lose the
rows of its last WRITE_INTERVAL_S.

Failures: every row reaches its file whole and exactly once, or not at all (Table); a write
that fails (a full disk, any OSError) raises WriteError, one line naming the file. run.json is
replaced atomically, and the run's folder is locked (FolderLock: a second run into it is
refused) with a reserve of disk space that lets a run that filled the disk still write its last
run.json, saying why it failed. No temporary file outlives a failed write.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import io
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

from .errors import UserError


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
LOCK_NAME = "run.lock"  # held by the run writing into a folder; removed when it ends
CHUNK_ROWS = 256  # rows per write: on a full disk all chunks before the last one stay
RESERVE_BYTES = 256 << 10  # disk space held back (in the lock file) for the last run.json


class WriteError(UserError):
    """A result or data file could not be written (disk full, no permission, ...)."""


def write_error(path: str | Path, exc: OSError) -> WriteError:
    """The one-line error for a failed write of `path`."""
    reason = exc.strerror or str(exc)
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    fix = "free space, or choose another folder" if full else "choose another folder"
    return WriteError(f"cannot write {path}: {reason} ({fix})")


@contextlib.contextmanager
def writing(path: str | Path):
    """Turn an OSError raised inside the block into a WriteError naming `path`."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from None


def write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of `data` at `offset`; if that fails or is interrupted part way, cut the file
    back to `offset` (best effort) so that no partial record stays behind."""
    view, at = memoryview(data), offset
    try:
        while view:
            done = os.pwrite(fd, view, at)
            view, at = view[done:], at + done
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, offset)
        raise


def write_atomically(path: str | Path, text: str) -> None:
    """Replace `path` by `text` all at once (a temporary file, then rename); the temporary file
    is removed when the write fails. Raises WriteError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path):
            tmp.write_text(text)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def csv_text(columns: tuple[str, ...], rows, header: bool = False) -> bytes:
    """`rows` (row records, or dicts with some of the columns) as CSV lines, UTF-8; with the
    header line first if `header`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    if header:
        writer.writeheader()
    writer.writerows(
        row if isinstance(row, dict) else {c: getattr(row, c) for c in columns} for row in rows
    )
    return buffer.getvalue().encode()


def append_rows(path: str | Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Append whole rows to a CSV file (header first if it is new): all of them or none, never
    a torn row. Raises WriteError."""
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            end = os.fstat(fd).st_size
            write_at(fd, csv_text(columns, rows, header=end == 0), end)
        finally:
            os.close(fd)


class FolderLock:
    """An exclusive lock on one output folder: the flock of FOLDER/run.lock, refused when
    another process holds it. The kernel releases it when the process ends, however it ends
    (a SIGKILLed run's lock file stays behind, unlocked, and is taken over).

    The lock file also holds a reserve of disk space (zeros after the owner's pid) that
    `release_reserve` gives back, so that a run that fills the disk can still write its last
    run.json."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        with writing(self.path):
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                handle = os.fdopen(fd, "r+b", buffering=0)  # closed in release()
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = handle.read(32).split(b"\n")[0].decode(errors="replace") or "?"
                    handle.close()
                    raise UserError(
                        f"another run (pid {owner}) is writing into {folder}: wait for it to "
                        "end, or choose another output folder"
                    ) from None
                except BaseException:
                    handle.close()
                    raise
                if self._still_at_path(handle):
                    break
                handle.close()  # removed by a run that just ended: lock the file now there
            self.handle = handle
            try:
                self.owner = f"{os.getpid()}\n".encode()
                os.ftruncate(handle.fileno(), 0)
                write_at(handle.fileno(), self.owner, 0)
            except BaseException:
                self.release()
                raise
        self.reserved = 0

    def _still_at_path(self, handle) -> bool:
        try:
            return os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def reserve(self, nbytes: int) -> None:
        """Hold at least `nbytes` of disk space back (grows only). Raises WriteError."""
        if nbytes <= self.reserved:
            return
        with writing(self.path):
            try:
                os.posix_fallocate(self.handle.fileno(), len(self.owner), nbytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                write_at(self.handle.fileno(), bytes(nbytes), len(self.owner))
        self.reserved = nbytes

    def release_reserve(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.handle.fileno(), len(self.owner))
        self.reserved = 0

    def release(self) -> None:
        """Remove the lock file and unlock (in this order: a run that opened the old file
        sees that it is gone and takes a new one)."""
        if self.handle.closed:
            return
        if self._still_at_path(self.handle):
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.handle.close()


class Table:
    """One CSV table of a run, its columns the fields of one row record; rows are queued until
    the recorder writes them. A row is that record or a dict with (some of) its fields.

    Exactly once, whole rows: `_state` = (bytes of whole rows on disk, queued rows, how many of
    them are on disk) changes in one assignment after each write of at most CHUNK_ROWS rows, and
    every write starts at the end of the rows already on disk. A write cut short (disk full,
    Ctrl-C inside it) leaves its rows queued; its bytes are cut off at once, and in any case
    overwritten by the next write or cut off when the table closes, so no row is ever written
    twice or torn. On a full disk every chunk that fitted stays."""

    def __init__(self, path: Path, record: type[Row]) -> None:
        self.path = path
        self.columns = tuple(f.name for f in dataclasses.fields(record))
        with writing(path):
            self.handle = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
            try:
                header = csv_text(self.columns, [], header=True)
                write_at(self.handle.fileno(), header, 0)
            except BaseException:
                self.handle.close()
                raise
        self._state: tuple[int, list[Row | dict], int] = (len(header), [], 0)

    def writerow(self, row: Row | dict) -> None:
        self._state[1].append(row)

    def writerows(self, rows) -> None:
        self._state[1].extend(rows)

    @property
    def queued(self) -> list[Row | dict]:
        _, rows, done = self._state
        return rows[done:]

    def write(self) -> None:
        """Write the queued rows to the file (handed to the OS). Raises WriteError."""
        end, rows, done = self._state
        with writing(self.path):
            while done < len(rows):
                chunk = rows[done : done + CHUNK_ROWS]
                data = csv_text(self.columns, chunk)
                write_at(self.handle.fileno(), data, end)
                end, done = end + len(data), done + len(chunk)
                self._state = (end, rows, done)  # one assignment: the chunk is booked
        self._state = (end, [], 0)  # all on disk: a new queue (writers run on this thread)

    def close(self) -> None:
        """Cut off anything beyond the whole rows written, then close."""
        if self.handle.closed:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self.handle.fileno()).st_size > self._state[0]:
                os.ftruncate(self.handle.fileno(), self._state[0])
        self.handle.close()


class RunRecorder:
    """Writes the tables of one run into `folder` (created), which it locks: a second run into
    the same folder is refused (UserError) until this one closes or its process ends."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        created = not self.folder.exists()
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = FolderLock(self.folder)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # an empty folder of our own
            raise
        self._tables: list[Table] = []
        self._extra: dict[str, Table] = {}
        self._written = time.monotonic()
        try:
            self._lock.reserve(RESERVE_BYTES)
            self.iterations = self._writer("iterations.csv", IterationRow)
            self.messages = self._writer("messages.csv", MessageRow)
            self.blocks = self._writer("blocks.csv", BlockRow)
        except BaseException:
            self._release()
            if created:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # if nothing is in it
            raise

    def table(self, name: str, record: type[Row]) -> Table:
        """An extra table of this run (created on first use), e.g. partial.csv of PartialRow."""
        if name not in self._extra:
            self._extra[name] = self._writer(name, record)
        return self._extra[name]

    def _writer(self, name: str, record: type[Row]) -> Table:
        self._tables.append(Table(self.folder / name, record))
        return self._tables[-1]

    def flush(self) -> None:
        """Write every queued row now. Raises WriteError."""
        for table in self._tables:
            table.write()
        self._written = time.monotonic()

    def flush_if_due(self) -> None:
        """Write the queued rows if WRITE_INTERVAL_S has passed since the last write (sessions
        call this after each iteration)."""
        if time.monotonic() - self._written >= WRITE_INTERVAL_S:
            self.flush()

    def write_metadata(self, data: dict[str, Any]) -> None:
        """Write the queued rows, then (re)write run.json atomically. Raises WriteError."""
        self.flush()
        text = _metadata_text(data)
        self._lock.reserve(max(RESERVE_BYTES, 2 * len(text)))
        write_atomically(self.folder / "run.json", text)

    def close(self, data: dict[str, Any] | None = None) -> None:
        """The run's last write: every queued row, then run.json from `data` (if given), then
        the folder is released. If the disk is full the reserve is given back first so that
        run.json still says how the run ended; a failed last flush marks a completed run as
        failed. The first write error is raised once everything is closed."""
        if self._lock.handle.closed:
            return
        error: WriteError | None = None
        try:
            try:
                self.flush()
            except WriteError as exc:
                error = exc
                if data is not None and data.get("status") == "completed":
                    data["status"] = f"failed: {exc}"
                elif data is not None and str(exc) not in str(data.get("status")):
                    data["write_error"] = str(exc)  # besides the run's own end
            if data is not None:
                text = _metadata_text(data)
                try:
                    write_atomically(self.folder / "run.json", text)
                except WriteError:
                    self._lock.release_reserve()
                    try:
                        write_atomically(self.folder / "run.json", text)
                    except WriteError as exc:
                        error = error or exc
        finally:
            self._release()
        if error is not None:
            raise error

    def _release(self) -> None:
        for table in self._tables:
            table.close()
        self._lock.release()


def _metadata_text(data: dict[str, Any]) -> str:
    return json.dumps(json_safe(data), indent=2, default=_plain, allow_nan=False)


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
