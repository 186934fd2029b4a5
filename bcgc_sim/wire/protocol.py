"""Wire format shared by master and workers (DESIGN.md "Wire format").

Every message is one or two frames:  [TAG + TYPE + HEADER, *PAYLOAD]
  TAG     b"BCGC" + protocol version byte
  TYPE    one byte n, then one of the MessageType values (n ASCII bytes)
  HEADER  msgpack map of plain values (no objects; never pickle)
  PAYLOAD raw array bytes, described by header["dtype"] and header["shape"]
(The master's ROUTER socket puts the peer identity in front; it is not part of the message.)

DESIGN.md lists tag, type, header and array; they travel in this order, with tag, type and
header in one frame: every frame costs pyzmq and libzmq work at both ends, and with four
frames per message the wire format alone cost about 2.1x a raw echo of the same bytes at
L = 1e3, against 1.6x with two (scripts/bench_overhead.py, N = 8, on the 2-core development VM).

`parse` validates everything before any array is built: tag and version, type, header
size and type, dtype from an allowlist, and payload length = prod(shape) * itemsize. Anything
else raises ProtocolError, which receivers count and drop.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 2  # 1: tag, type and header in three frames
TAG = b"BCGC" + bytes([PROTOCOL_VERSION])
MAX_HEADER_BYTES = 1 << 20  # 1 MiB: the setup header carries code rows, never data
ALLOWED_DTYPES = ("<f8", "<f4")
MAX_PAYLOAD_BYTES = 1 << 40  # no dimension may claim more (a zero-size array could otherwise)
Buffer = Any  # bytes, memoryview, zmq.Frame: anything with the buffer protocol
PARTIAL_PROTOCOL = "partial-r1"  # SETUP["protocol"] of a partial-gc plan (else: BCGC slots)
# Liveness (config cluster.heartbeat, cluster.liveness; the master sends both in SETUP): a peer
# sends a HEARTBEAT after DEFAULT_HEARTBEAT_S seconds without a message and counts the other
# as dead after DEFAULT_LIVENESS such intervals of silence.
DEFAULT_HEARTBEAT_S = 0.5
DEFAULT_LIVENESS = 10


class MessageType(bytes, enum.Enum):
    READY = b"READY"  # worker -> master: hello, with the worker's requested rank and pid
    SETUP = b"SETUP"  # master -> worker: rank, plan slots, code rows, data, straggler law
    SETUP_OK = b"SETUP_OK"  # worker -> master: data loaded, core pinned (affinity)
    ITERATE = b"ITERATE"  # master -> worker: theta for one iteration
    BLOCK = b"BLOCK"  # worker -> master: coded partial derivatives of one slot
    FAILED = b"FAILED"  # worker -> master: set-up failed (reason)
    STOP = b"STOP"  # master -> worker: exit now
    HEARTBEAT = b"HEARTBEAT"  # both ways: I am alive (sent when nothing else was sent lately)
    # the partial-straggler protocol, variant R1 (bcgc_sim.partial.decoder, workers/partial.py):
    NOTICE = b"NOTICE"  # worker -> master: chunk done (header only, no payload)
    COMBINE = b"COMBINE"  # master -> worker: the chunks to combine and their coefficients beta
    UPLOAD = b"UPLOAD"  # worker -> master: z_j = sum beta g_i^(u), ceil(L / l) floats
    ABANDON = b"ABANDON"  # master -> worker: this iteration is over for you (keep running)


def clock_id() -> str:
    """Names this host's monotonic clock: processes with the same id can compare
    time.monotonic_ns() readings (Linux: the boot id; elsewhere: none, never shared)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


class ProtocolError(ValueError):
    """A message that does not follow this protocol; receivers count it under `reason` (the
    master's rejected_messages: "malformed", "version", "oversized", or a shared-memory
    reference's "unknown-segment", "out-of-bounds", "stale-reference") and drop it."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class Message:
    """One parsed message. Not frozen: one is built per message, and a frozen dataclass's
    __init__ takes twice as long."""

    kind: MessageType
    header: dict[str, Any]
    array: np.ndarray | None = None


def encode(kind: MessageType, header: dict[str, Any], array: np.ndarray | None = None) -> list:
    """Frames for one message; the array (if any) is sent without a copy."""
    envelope = _PREFIX[kind]
    if array is None:
        return [envelope + msgpack.packb(header, use_bin_type=True)]
    array = np.ascontiguousarray(array)
    if array.dtype.str not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {array.dtype} is not allowed on the wire")
    header = {**header, "dtype": array.dtype.str, "shape": list(array.shape)}
    envelope += msgpack.packb(header, use_bin_type=True)
    return [envelope, memoryview(array).cast("B") if array.size else b""]


_MAGIC = TAG[:4]
_PREFIX = {t: TAG + bytes([len(t.value)]) + t.value for t in MessageType}
_TYPES = {t.value: t for t in MessageType}
_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}


def parse(frames: Sequence[Buffer], segments: Any = None) -> Message:
    """Validate and decode frames (TAG + TYPE + HEADER[, PAYLOAD]); raise ProtocolError.

    Frames are anything with the buffer protocol: bytes, memoryview, or zmq.Frame as received
    (the array is then a view of the frame's memory, not a copy). A header with a shared-memory
    reference ("shm", bcgc_sim.wire.shm) is resolved by `segments` (a SegmentTable of the sender's
    segments; None: refused), which checks it before any array is built."""
    if not frames:
        raise ProtocolError("expected 1 or 2 frames, got 0")
    envelope = memoryview(frames[0])
    if envelope[:4] != _MAGIC:
        raise ProtocolError("not a bcgc message")
    if len(envelope) < 5 or envelope[4] != PROTOCOL_VERSION:
        got = envelope[4] if len(envelope) >= 5 else "?"
        raise ProtocolError(f"protocol version {got}, expected {PROTOCOL_VERSION}", "version")
    if len(frames) > 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    end = 6 + envelope[5] if len(envelope) > 5 else 6
    name = bytes(envelope[6:end])
    kind = _TYPES.get(name) if end <= len(envelope) else None
    if kind is None:
        raise ProtocolError(f"unknown message type {name[:16]!r}")
    raw_header = envelope[end:]
    if len(raw_header) > MAX_HEADER_BYTES:
        raise ProtocolError("header too large", "oversized")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"header is not msgpack: {exc}") from None
    if type(header) is not dict:
        raise ProtocolError("header is not a map")
    array = None
    if len(frames) == 2:
        array = _array(header, frames[1])
    elif "shm" in header:
        array = _shared_array(header, segments)
    elif "dtype" in header:
        raise ProtocolError("header announces an array but no payload frame came")
    return Message(kind, header, array)


def _array(header: dict[str, Any], payload: Buffer) -> np.ndarray:
    dtype, shape, expected = _described(header)
    if len(payload) != expected:
        raise ProtocolError(f"payload has {len(payload)} bytes, shape {shape} needs {expected}")
    array = np.frombuffer(payload, dtype=dtype)
    return array if len(shape) == 1 else array.reshape(shape)


def _shared_array(header: dict[str, Any], segments: Any) -> np.ndarray:
    dtype, shape, expected = _described(header)
    if segments is None:
        raise ProtocolError(
            "shared-memory reference from a peer without segments", "unknown-segment"
        )
    array = segments.resolve(header["shm"], dtype, expected, header.get("iteration"))
    return array if len(shape) == 1 else array.reshape(shape)


def _described(header: dict[str, Any]) -> tuple[np.dtype, list, int]:
    """(dtype, shape, bytes) of the array a header describes; raise ProtocolError."""
    name, shape = header.get("dtype"), header.get("shape")
    dtype = _DTYPES.get(name) if type(name) is str else None
    if dtype is None:
        raise ProtocolError(f"dtype {name!r} not allowed")
    d = shape[0] if type(shape) is list and len(shape) == 1 else None
    if type(d) is int and 0 <= d <= MAX_PAYLOAD_BYTES // dtype.itemsize:
        return dtype, shape, d * dtype.itemsize  # a vector, as most messages carry: no loops
    return dtype, shape, _payload_bytes(shape, dtype)


def _payload_bytes(shape: Any, dtype: np.dtype) -> int:
    """The payload size an array of `shape` needs; raise ProtocolError for a bad shape."""
    # msgpack gives exact ints and lists: type() checks also refuse bools
    if type(shape) is not list or len(shape) > 2 or any(type(d) is not int or d < 0 for d in shape):
        raise ProtocolError(f"bad shape {shape!r}")
    if any(d > MAX_PAYLOAD_BYTES // dtype.itemsize for d in shape):
        raise ProtocolError(f"shape {shape} exceeds {MAX_PAYLOAD_BYTES} bytes")
    return math.prod(shape) * dtype.itemsize


HeaderSpec = tuple[tuple[str, tuple[type, ...]], ...]


def header_spec(**types: type | tuple[type, ...]) -> HeaderSpec:
    """The fields a header must have, with their types, ready for `check`."""
    return tuple((key, kind if isinstance(kind, tuple) else (kind,)) for key, kind in types.items())


def check(header: dict[str, Any], spec: HeaderSpec) -> None:
    """Check that `header` has each field of `spec` with exactly one of its types (msgpack
    yields exact types; a bool is not an int here); raise ProtocolError. Receivers keep the
    spec of a message checked on every arrival: building it costs more than the check."""
    for key, kinds in spec:
        if type(header.get(key)) not in kinds:
            raise ProtocolError(f"header field {key!r} missing or of the wrong type")


def require(header: dict[str, Any], **types: type | tuple[type, ...]) -> None:
    """check(header, header_spec(**types))."""
    check(header, header_spec(**types))
