"""Multipart send and receive with the least Python per frame, shared by master and workers.

(bcgc_sim opens no sockets; this module only moves frames on sockets that master/ and workers/
own, so that both ends follow one framing, copy and memory policy.)

pyzmq's send_multipart / recv_multipart combine enum flags for every frame and ask for RCVMORE
with a getsockopt call; at thousands of messages per second that is a measurable share of a
testbed iteration (scripts/bench_overhead.py). These do the same with plain-int flags and
Frame.more, and wait with zmq_poll rather than a new Poller per call.

Copies: frames below COPY_BELOW bytes are copied into libzmq. A zero-copy send hands the
buffer's release to pyzmq's garbage-collector thread, which then competes for the GIL (and, on
a pinned worker, for the core) just when the next message is due; for 80 KB messages copying
was about 12% faster in the raw echo of scripts/bench_overhead.py. At 240 KB and 800 KB the
two were within the run-to-run noise, and larger arrays are better not copied. `shareable`
turns a message into zmq.Frame objects that can be sent to many peers with one buffer (libzmq
reference-counts it), as a broadcast of theta does.
"""

from __future__ import annotations

import ctypes
import struct

import zmq

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)
COPY_BELOW = 1 << 17  # bytes


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def keep_freed_memory() -> bool:
    """Make this process reuse freed memory for arrays and messages instead of mapping fresh
    pages: glibc serves blocks over 128 KiB with mmap and returns them on free, so every
    iteration's theta, gradient blocks and libzmq buffers page-fault anew (about 3000 faults,
    half the testbed's CPU time, per iteration at N = 8, L = 1e5 on the development VM).
    Blocks up to 32 MiB (glibc's limit) now come from the heap, and up to 256 MiB of freed
    heap is kept. True if applied (glibc); elsewhere nothing changes."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20)) and bool(
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    )


def configure(socket: zmq.Socket) -> zmq.Socket:
    """Apply the copy threshold to a new socket; returns it."""
    socket.copy_threshold = COPY_BELOW
    return socket


def send(socket: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Send `frames` as one multipart message (raises zmq.Again under NOBLOCK when full)."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        socket.send(frame, flags if index == last else flags | _SNDMORE, copy=False)


def readable(socket: zmq.Socket, timeout_ms: int) -> bool:
    """True once a message is queued, False after timeout_ms (0: do not wait). Socket.poll would
    build a Poller object on every call."""
    return bool(zmq.zmq_poll([(socket, _POLLIN)], timeout_ms))


def receive(socket: zmq.Socket) -> list[zmq.Frame]:
    """The frames of the next multipart message (blocks until one is queued)."""
    frame = socket.recv(copy=False)
    frames = [frame]
    while frame.more:  # the rest of a multipart message is already queued
        frame = socket.recv(copy=False)
        frames.append(frame)
    return frames


def shareable(frames: list) -> list[zmq.Frame]:
    """The same message as zmq.Frame objects, to be sent to many peers without copies."""
    return [
        frame if isinstance(frame, zmq.Frame) else zmq.Frame(frame, copy_threshold=COPY_BELOW)
        for frame in frames
    ]


def monitor_event(monitor: zmq.Socket) -> int:
    """The event id of the next message on a socket monitor (zmq_socket_monitor: frame 1 is
    a 16-bit event id and a 32-bit value, frame 2 the endpoint). Read here rather than with
    zmq.utils.monitor, whose import loads asyncio: a sixth of a worker's start-up."""
    frames = monitor.recv_multipart()
    if len(frames) != 2 or len(frames[0]) != 6:
        raise zmq.ZMQError(msg=f"malformed socket monitor message of {len(frames)} frames")
    return struct.unpack("=hi", frames[0])[0]
