"""The master's end of the wire: one ROUTER socket, worker identities by rank, parsed messages.

Nothing received is trusted: frames are parsed by bcgc_sim.protocol (never unpickled) and a
message from an identity that never said READY is counted and dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import zmq

from bcgc_sim.errors import UserError
from bcgc_sim.protocol import PROTOCOL_VERSION, Message, MessageType, ProtocolError, encode, parse


@dataclass(frozen=True)
class Received:
    rank: int | None  # None: an identity that never said READY
    message: Message
    arrival_ns: int


class WorkerLink:
    """Bound ROUTER socket; ranks are assigned on READY."""

    def __init__(self, bind: str = "tcp://127.0.0.1", max_message_bytes: int = -1) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if max_message_bytes > 0:
            self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        try:
            if bind.startswith("ipc://") or bind.count(":") >= 2:  # a full endpoint
                self.socket.bind(bind)
                self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                port = self.socket.bind_to_random_port(bind)
                self.endpoint = f"{bind}:{port}"
        except zmq.ZMQError as exc:
            self.close()
            raise UserError(f"cannot bind the master to {bind}: {exc}") from None
        self.identities: dict[int, bytes] = {}
        self.ranks: dict[bytes, int] = {}
        self.pids: dict[int, int] = {}
        self.malformed = 0
        self.unknown = 0

    def close(self) -> None:
        self.context.destroy(linger=0)

    def send(self, rank: int, kind: MessageType, header: dict, array=None) -> None:
        self.send_frames(rank, encode(kind, header, array))

    def send_frames(self, rank: int, frames: list) -> None:
        try:
            self.socket.send_multipart([self.identities[rank], *frames], copy=False)
        except zmq.ZMQError:
            pass  # the peer is gone (ROUTER_MANDATORY); liveness is judged elsewhere

    def broadcast(self, kind: MessageType, header: dict, array=None) -> None:
        frames = encode(kind, header, array)
        for rank in sorted(self.identities):
            self.send_frames(rank, frames)

    def receive(self, timeout_ms: int) -> Received | None:
        """The next well-formed message, or None after timeout_ms with nothing (bad ones dropped)."""
        end = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = max(0, int((end - time.monotonic()) * 1000))
            if not self.socket.poll(remaining, zmq.POLLIN):
                return None
            frames = self.socket.recv_multipart(copy=False)
            arrival = time.monotonic_ns()
            identity = frames[0].bytes
            try:
                message = parse([f.buffer for f in frames[1:]])
            except ProtocolError:
                self.malformed += 1
                continue
            if message.kind is MessageType.READY:
                self._register(identity, message)
                continue
            rank = self.ranks.get(identity)
            if rank is None:
                self.unknown += 1
            return Received(rank, message, arrival)

    def _register(self, identity: bytes, message: Message) -> None:
        h = message.header
        if h.get("protocol") != PROTOCOL_VERSION or identity in self.ranks:
            self.malformed += 1
            return
        wanted = h.get("rank")
        if not isinstance(wanted, int) or wanted < 0 or wanted in self.identities:
            wanted = next(r for r in range(len(self.identities) + 1) if r not in self.identities)
        self.identities[wanted] = identity
        self.ranks[identity] = wanted
        self.pids[wanted] = h.get("pid") if isinstance(h.get("pid"), int) else -1

    def wait_for_workers(self, count: int, timeout_s: float, check=None) -> None:
        """Block until `count` workers said READY; `check()` may raise (e.g. a worker died)."""
        end = time.monotonic() + timeout_s
        while len(self.identities) < count:
            if check is not None:
                check()
            if time.monotonic() > end:
                raise UserError(
                    f"only {len(self.identities)} of {count} workers connected to {self.endpoint} "
                    f"within {timeout_s:g} s"
                )
            received = self.receive(100)
            if received is not None:
                self.unknown += 1  # anything but READY before set-up is unexpected
