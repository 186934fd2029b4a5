"""Multipart send and receive with the least Python per frame.

pyzmq's send_multipart / recv_multipart combine enum flags for every frame and ask for RCVMORE
with a getsockopt call; at thousands of messages per second that is a measurable share of a
testbed iteration (scripts/bench_overhead.py). These do the same with plain-int flags and
Frame.more.

Copies: frames below COPY_BELOW bytes are copied into libzmq. Zero-copy sends hand the buffer's
release to pyzmq's garbage-collector thread, which then competes for the GIL (and, on a pinned
worker, for the core) at the moment the next message is due; a memcpy is cheaper until payloads
reach about a megabyte. `shareable` turns a message into zmq.Frame objects that can be sent to
many peers with one buffer (libzmq reference-counts it), as a broadcast of theta does.
"""

from __future__ import annotations

import zmq

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
COPY_BELOW = 1 << 20  # bytes


def configure(socket: zmq.Socket) -> zmq.Socket:
    """Apply the copy threshold to a new socket; returns it."""
    socket.copy_threshold = COPY_BELOW
    return socket


def send(socket: zmq.Socket, frames: list, flags: int = 0) -> None:
    """Send `frames` as one multipart message (raises zmq.Again under NOBLOCK when full)."""
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        socket.send(frame, flags if index == last else flags | _SNDMORE, copy=False)


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
