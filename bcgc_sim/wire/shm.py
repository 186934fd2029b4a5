"""Bulk arrays through shared memory between processes on one host (DESIGN.md "Wire format").

A message whose array travels this way carries, instead of a payload frame, the header field
    "shm": [segment name, offset, length, iteration]
(with "dtype" and "shape" as usual) naming `length` bytes at `offset` of a segment its sender
wrote and its receiver has mapped. The receiver checks the reference before any array is built
(`SegmentTable.resolve`): a segment it never mapped from that peer, bytes outside the segment
or off the record grid, or bytes no longer stamped with the message's iteration are refused
with a ProtocolError (reasons `unknown-segment`, `out-of-bounds`, `stale-reference`), counted
and dropped like any malformed message. Nothing is unpickled.

Why memfd segments opened through /proc (and not multiprocessing.shared_memory or named
/dev/shm files): Python's shared_memory registers each segment with a resource tracker owned
by the process that opened it; an unrelated process that attaches registers it again, and the
first tracker to exit unlinks the segment under the others or warns of a leak (`track=False`
exists only from Python 3.13). Named POSIX segments need an unlink after every peer mapped
them, and a SIGKILL in between leaves the name in /dev/shm for good. Here a segment is an
anonymous memory file (memfd_create): it never has a name in any file system. A peer on the
same host maps it by opening /proc/<creator pid>/fd/<fd> (allowed between processes of one user)
and checks a random token written at its start; from then on its own mapping keeps the memory.
The kernel frees it when the last process that holds the file or a mapping is gone, however it
ended (exit, error, Ctrl-C, SIGKILL): there is nothing to unlink and nothing to clean up. The
name given to memfd_create (a per-run prefix) only shows in /proc/<pid>/maps and fd links.

Layout: a 64-byte header (MAGIC, 16-byte token), then two halves. Iteration i writes into half
i mod 2 (double buffering), as records: an 8-byte stamp, padding to 64 bytes, then the array,
rounded up to 64 bytes. The stamp is 0 before the record was ever written, -1 while its bytes
are written, then the iteration + 1.

Why reuse is safe: a sender writes iteration i's arrays only into half i mod 2, so they are
overwritten no earlier than by iteration i + 2. The master starts iteration i + 1 only after
it decoded iteration i and reads a worker's arrays only inside the iteration they belong to
(later arrivals are stale and only their headers are read), and a worker writes iteration
i + 2 only after the master sent its theta; so the master never reads bytes that may still
change. Conversely the master writes theta of i + 2 only after iteration i + 1 completed:
a worker still reading theta of iteration i then computes for an iteration that is over,
and its late messages are dropped as stale (their run and iteration are checked), never
decoded. Every reference is also checked against its record's stamp when it is resolved.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from .protocol import ALLOWED_DTYPES, MessageType, ProtocolError, encode

MAGIC = b"BCGCSHM\x01"
ALIGN = 64  # bytes: records start and arrays begin on this grid
HEADER_BYTES = 64  # MAGIC + token, padded
RECORD_BYTES = 64  # stamp (int64) + padding, before each array
WRITING = -1  # the stamp while a record's bytes are being written
MAX_SEGMENT_BYTES = 1 << 40
TRANSPORTS = ("auto", "zmq", "shm")  # cluster.transport
_STAMP = struct.Struct("<q")
# Pages are allocated and mapped when a segment is made or attached, at set-up, not one fault
# at a time inside the first two iterations (64 workers x 16 MB at N = 64, L = 1e6).
_POPULATED = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}\Z")
_TOKEN = re.compile(r"[0-9a-f]{32}\Z")


class Unavailable(Exception):
    """Shared memory cannot be used with this peer (another host, another user or namespace,
    no memfd); with cluster.transport = "auto" the bytes travel in frames instead."""


def record_bytes(nbytes: int) -> int:
    """Bytes one record of an `nbytes` array takes in a half (stamp, padding, rounded array)."""
    return RECORD_BYTES + -(-nbytes // ALIGN) * ALIGN


@dataclass(frozen=True)
class SegmentInfo:
    """What a peer needs to map a segment: sent in SETUP (the master's) and SETUP_OK (a
    worker's). `clock` is the creator's boot id: a peer with another one is on another host."""

    name: str
    pid: int
    fd: int
    size: int  # bytes
    token: str  # 32 hex digits, also written after MAGIC at the segment's start
    clock: str

    def to_header(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_header(cls, value: Any) -> SegmentInfo:
        """Validate a received description (plain msgpack values); raise ProtocolError."""
        if type(value) is not dict:
            raise ProtocolError("shared-memory segment description is not a map")
        kinds = {"name": str, "pid": int, "fd": int, "size": int, "token": str, "clock": str}
        if set(value) != set(kinds) or any(type(value[k]) is not t for k, t in kinds.items()):
            raise ProtocolError(f"bad shared-memory segment description {sorted(value)}")
        info = cls(**value)
        if not _NAME.match(info.name) or not _TOKEN.match(info.token):
            raise ProtocolError("bad shared-memory segment name or token")
        if info.pid <= 0 or info.fd < 0 or not HEADER_BYTES <= info.size <= MAX_SEGMENT_BYTES:
            raise ProtocolError("bad shared-memory segment pid, fd or size")
        return info


class OwnSegment:
    """A segment this process created and writes, two halves of `half_bytes` (double buffered
    by iteration parity). Its file descriptor stays open so that peers can map it."""

    def __init__(self, name: str, half_bytes: int, clock: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad segment name {name!r}")
        if not hasattr(os, "memfd_create"):
            raise Unavailable("this system has no memfd_create")
        self.half = -(-max(half_bytes, RECORD_BYTES) // ALIGN) * ALIGN
        size = HEADER_BYTES + 2 * self.half
        token = os.urandom(16)
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size, flags=_POPULATED)
        except OSError as exc:
            os.close(self.fd)
            raise Unavailable(f"cannot create a shared segment of {size} bytes: {exc}") from None
        self.map[: len(MAGIC) + 16] = MAGIC + token
        self._bytes = memoryview(self.map)
        self.info = SegmentInfo(name, os.getpid(), self.fd, size, token.hex(), clock)
        self._iteration: int | None = None
        self._cursor = self._end = HEADER_BYTES

    def put(self, iteration: int, array: np.ndarray) -> list | None:
        """Copy `array` into iteration's half; its reference [name, offset, length, iteration],
        or None when the half has no room left (the caller sends the bytes in frames)."""
        if iteration != self._iteration:
            self._iteration = iteration
            self._cursor = HEADER_BYTES + (iteration & 1) * self.half
            self._end = self._cursor + self.half
        data = memoryview(np.ascontiguousarray(array)).cast("B")
        offset = self._cursor + RECORD_BYTES
        end = self._cursor + record_bytes(len(data))
        if iteration < 0 or end > self._end:
            return None
        _STAMP.pack_into(self.map, offset - 8, WRITING)
        self._bytes[offset : offset + len(data)] = data
        _STAMP.pack_into(self.map, offset - 8, iteration + 1)
        self._cursor = end
        return [self.info.name, offset, len(data), iteration]

    def close(self) -> None:
        """Unmap and close; peers that mapped the segment keep their mapping until they drop it."""
        if self.fd < 0:
            return
        self._bytes.release()
        try:
            self.map.close()
        except BufferError:  # arrays still view it: the mapping goes with the last of them
            pass
        os.close(self.fd)
        self.fd = -1


class PeerSegment:
    """Another process's segment, mapped read-only."""

    def __init__(self, info: SegmentInfo) -> None:
        self.info = info
        path = f"/proc/{info.pid}/fd/{info.fd}"
        try:  # only a memfd, and never wait (a peer could name a FIFO)
            if not os.readlink(path).startswith(f"/memfd:{info.name} "):
                raise Unavailable(f"{path} is not the memfd {info.name}")
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise Unavailable(
                f"cannot open segment {info.name} of process {info.pid}: {exc}"
            ) from None
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_size != info.size:
                raise Unavailable(f"segment {info.name} is not the announced {info.size} bytes")
            self.map = mmap.mmap(fd, info.size, flags=_POPULATED, prot=mmap.PROT_READ)
        except OSError as exc:
            raise Unavailable(f"cannot map segment {info.name}: {exc}") from None
        finally:
            os.close(fd)
        if self.map[: len(MAGIC) + 16] != MAGIC + bytes.fromhex(info.token):
            raise Unavailable(f"segment {info.name}: wrong magic or token (another process?)")


class SegmentTable:
    """The segments a receiver accepts references to from one peer; resolves references."""

    def __init__(self) -> None:
        self._segments: dict[str, PeerSegment] = {}

    def __len__(self) -> int:
        return len(self._segments)

    def __contains__(self, name: str) -> bool:
        return name in self._segments

    def attach(self, info: SegmentInfo, keep: int = 1) -> None:
        """Map `info` (no-op if mapped); keep at most `keep` segments (the newest)."""
        if info.name in self._segments and self._segments[info.name].info == info:
            return
        segment = PeerSegment(info)
        self._segments.pop(info.name, None)
        while len(self._segments) >= keep:
            self._segments.pop(next(iter(self._segments)))
        self._segments[info.name] = segment

    def clear(self) -> None:
        """Drop every mapping (each goes once no array views it any more)."""
        self._segments.clear()

    def resolve(self, ref: Any, dtype: np.dtype, nbytes: int, iteration: Any) -> np.ndarray:
        """The read-only array `ref` names, of `nbytes` bytes of `dtype`, for a message of
        `iteration`; raise BadReference (a ProtocolError) before any array is built."""
        if type(ref) is not list or len(ref) != 4 or type(iteration) is not int:
            raise ProtocolError(f"bad shared-memory reference {str(ref)[:80]}")
        name, offset, length, generation = ref
        if type(name) is not str or type(offset) is not int or type(length) is not int:
            raise ProtocolError(f"bad shared-memory reference {str(ref)[:80]}")
        if type(generation) is not int or generation != iteration or iteration < 0:
            raise ProtocolError(f"reference of iteration {generation!r}, header {iteration}")
        segment = self._segments.get(name)
        if segment is None:
            raise ProtocolError(
                f"no segment {name[:64]!r} mapped from this peer", "unknown-segment"
            )
        if length != nbytes:
            raise ProtocolError(f"reference of {length} bytes, header needs {nbytes}")
        if (
            offset % ALIGN
            or offset < HEADER_BYTES + RECORD_BYTES
            or offset + length > segment.info.size
        ):
            raise ProtocolError(
                f"{length} bytes at {offset} of {segment.info.size}", "out-of-bounds"
            )
        (stamp,) = _STAMP.unpack_from(segment.map, offset - 8)
        if stamp != generation + 1:
            raise ProtocolError(
                f"record holds iteration {stamp - 1}, not {generation}", "stale-reference"
            )
        return np.frombuffer(
            segment.map, dtype=dtype, count=length // dtype.itemsize, offset=offset
        )


def encode_shared(
    segment: OwnSegment, kind: MessageType, header: dict[str, Any], array: np.ndarray
) -> list | None:
    """One frame: `header` with dtype, shape and a reference to `array`, copied into
    `segment` (for header["iteration"]); None when the segment has no room (send frames)."""
    array = np.ascontiguousarray(array)
    if array.dtype.str not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {array.dtype} is not allowed on the wire")
    ref = segment.put(header["iteration"], array)
    if ref is None:
        return None
    shaped = {**header, "dtype": array.dtype.str, "shape": list(array.shape), "shm": ref}
    return encode(kind, shaped)


def run_prefix() -> str:
    """A segment name prefix unique to this process and run: bcgc-<pid>-<8 hex digits>."""
    return f"bcgc-{os.getpid()}-{os.urandom(4).hex()}"


class MasterSegments:
    """The master's side: one segment for theta (offered in every SETUP), and per rank the
    segment its worker announced in SETUP_OK. `mode` is cluster.transport: "zmq" offers
    nothing; "shm" makes a worker that cannot map the segment fail its set-up; "auto" lets
    it fall back to frames. A worker answers by reference exactly when its theta came by
    reference, which the master does for the ranks whose segment it has mapped."""

    def __init__(self, mode: str, clock: str) -> None:
        if mode not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {mode!r}")
        self.mode, self.clock = mode, clock
        self.prefix = run_prefix()
        self.segment: OwnSegment | None = None
        self.tables: dict[int, SegmentTable] = {}

    def setup_fields(self, coordinates: int) -> dict[str, Any]:
        """The SETUP fields that offer the theta segment (made or grown for `coordinates`
        float64 values); {} when shared memory is off or unavailable on this host."""
        if self.mode == "zmq" or not self.clock:
            return {}
        need = record_bytes(8 * coordinates)
        if self.segment is None or self.segment.half < need:
            if self.segment is not None:
                self.segment.close()
                self.segment = None
            try:
                self.segment = OwnSegment(f"{self.prefix}-theta", need, self.clock)
            except Unavailable as exc:
                if self.mode == "shm":
                    raise UserError(f"cluster.transport = 'shm' but {exc}") from None
                self.mode = "zmq"  # auto: frames from now on
                return {}
        offer = {"segment": self.segment.info.to_header(), "required": self.mode == "shm"}
        return {"shm_offer": offer | {"prefix": self.prefix}}

    def accepted(self, rank: int, header: dict[str, Any]) -> None:
        """Read a SETUP_OK: map the segment it announces (raise Unavailable or ProtocolError),
        or forget the rank's segment when it announces none."""
        value = header.get("shm_segment")
        if value is None:
            self.forget(rank)
            return
        info = SegmentInfo.from_header(value)
        if info.clock != self.clock:
            raise Unavailable(f"segment {info.name} is on another host")
        self.tables.setdefault(rank, SegmentTable()).attach(info)

    def forget(self, rank: int) -> None:
        """Drop the mapping of a rank's segment (a dead worker's memory is then freed)."""
        table = self.tables.pop(rank, None)
        if table is not None:
            table.clear()

    def frames(self, kind: MessageType, header: dict[str, Any], array: np.ndarray) -> list | None:
        """`array` copied once into the theta segment and the one-frame message that names it,
        or None (no segment, or no room: send frames)."""
        if self.segment is None:
            return None
        return encode_shared(self.segment, kind, header, array)

    def close(self) -> None:
        for rank in list(self.tables):
            self.forget(rank)
        if self.segment is not None:
            self.segment.close()
            self.segment = None


class WorkerSegments:
    """A worker's side: the master's theta segment, mapped, and this worker's own segment for
    the arrays it sends. `replying` is set per ITERATE: answer by reference iff theta came so."""

    def __init__(self, clock: str) -> None:
        self.clock = clock
        self.table = SegmentTable()
        self.segment: OwnSegment | None = None
        self.replying = False

    def setup(self, offer: Any, rank: int, half_bytes: int) -> dict[str, Any]:
        """Accept a SETUP's offer (None: none) for arrays of up to `half_bytes` per iteration
        (sum of record_bytes); the SETUP_OK fields. Raise Unavailable when the offer cannot be
        taken and requires it; without the requirement fall back to frames ({})."""
        self.replying = False
        if offer is None:
            self.table.clear()
            return {}
        try:
            if type(offer) is not dict or type(offer.get("prefix")) is not str:
                raise ProtocolError("bad shared-memory offer")
            info = SegmentInfo.from_header(offer.get("segment"))
            if info.clock != self.clock:
                raise Unavailable("the master is on another host (another boot id)")
            self.table.attach(info)
            name = f"{offer['prefix']}-w{rank}-{os.getpid()}"
            if (
                self.segment is None
                or self.segment.info.name != name
                or self.segment.half < half_bytes
            ):
                if self.segment is not None:
                    self.segment.close()
                self.segment = OwnSegment(name, half_bytes, self.clock)
        except (Unavailable, ProtocolError, ValueError) as exc:
            self.table.clear()
            if type(offer) is dict and offer.get("required") is True:
                raise Unavailable(f"cluster.transport = 'shm' but {exc}") from None
            return {}
        return {"shm_segment": self.segment.info.to_header()}

    def frames(self, kind: MessageType, header: dict[str, Any], array: np.ndarray) -> list | None:
        """The one-frame message naming `array` in this worker's segment, or None (send frames)."""
        if not self.replying or self.segment is None:
            return None
        return encode_shared(self.segment, kind, header, array)

    def close(self) -> None:
        self.table.clear()
        if self.segment is not None:
            self.segment.close()
            self.segment = None
