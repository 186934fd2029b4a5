"""The master's end of the wire: one ROUTER socket, worker identities by rank, parsed messages.

Nothing received is trusted: frames are parsed by bcgc_sim.wire.protocol (never unpickled); a
malformed message, a wrong protocol version or a message from an identity that never said
READY is counted in `rejected` (by reason), logged, and dropped. Messages larger than
`max_message_bytes` are refused by ZeroMQ itself (ZMQ_MAXMSGSIZE: the peer is disconnected).

Liveness: every message from a rank (workers send heartbeats from their own loop) refreshes
`last_seen[rank]`; `silent()` names the ranks quiet for too long. Workers watch the connection
to the master instead (ZeroMQ's own heartbeats and disconnect events), so a master busy with a
long computation is never mistaken for a dead one.

Security: a non-loopback endpoint is refused unless CURVE is on; with CURVE only workers whose
public key is in the allowlist folder complete the handshake (others never reach this code).
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from bcgc_sim.errors import UserError
from bcgc_sim.wire import framing
from bcgc_sim.wire.protocol import (
    PROTOCOL_VERSION,
    Message,
    MessageType,
    ProtocolError,
    encode,
    parse,
)

log = logging.getLogger("bcgc.master")


@dataclass(slots=True)
class Received:  # one per message: not frozen, whose __init__ takes twice as long
    rank: int | None  # None: an identity that never said READY
    message: Message
    arrival_ns: int


@dataclass(frozen=True)
class Curve:
    """The master's CURVE key pair and the folder of allowed worker public keys (Z85 files)."""

    public: bytes
    secret: bytes
    allow: Path

    @classmethod
    def load(cls, key_file: str, allow: str) -> Curve:
        import zmq.auth

        try:
            public, secret = zmq.auth.load_certificate(key_file)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the master's CURVE key {key_file}: {exc}") from None
        if secret is None:
            raise UserError(f"{key_file} holds no secret key: give the .key_secret file")
        if not Path(allow).is_dir():
            raise UserError(
                f"--allow must be a folder of worker public keys (bcgc keygen), got {allow}"
            )
        return cls(public, secret, Path(allow))


def is_loopback(endpoint: str) -> bool:
    """True for ipc:// and tcp:// endpoints on 127.0.0.0/8, ::1 or localhost."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or '*': every interface


class WorkerLink:
    """Bound ROUTER socket; ranks are assigned on READY."""

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1",
        max_message_bytes: int = -1,
        curve: Curve | None = None,
    ) -> None:
        if not is_loopback(bind) and curve is None:
            raise UserError(
                f"binding the master to {bind} exposes it beyond this machine: give --key and --allow "
                "(CURVE keys from 'bcgc keygen'), or bind to 127.0.0.1"
            )
        framing.keep_freed_memory()  # this process moves large arrays every iteration
        self.context = zmq.Context()
        self.auth = None
        self.socket = framing.configure(self.context.socket(zmq.ROUTER))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if max_message_bytes > 0:
            self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.context)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=str(curve.allow))
            self.socket.curve_secretkey, self.socket.curve_publickey = curve.secret, curve.public
            self.socket.curve_server = True
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
        self.dead: set[int] = set()  # ranks given up on; a new READY may take their place
        self.rejected: collections.Counter[str] = collections.Counter()
        self.last_seen: dict[int, int] = {}
        self.n_workers: int | None = None  # ranks are 0..n_workers-1 once known
        self._pending: collections.deque[Received] = collections.deque()  # read by silent()
        self._timeout_ms = -1  # the socket's ZMQ_RCVTIMEO (-1: wait forever)

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; linger_ms lets messages already queued (a STOP) still leave."""
        if self.auth is not None:
            self.auth.stop()
        self.context.destroy(linger=linger_ms)

    def send(self, rank: int, kind: MessageType, header: dict, array=None) -> None:
        self.send_frames(rank, encode(kind, header, array))

    def send_frames(self, rank: int, frames: list) -> None:
        try:
            framing.send(self.socket, [self.identities[rank], *frames])
        except zmq.ZMQError:
            pass  # the peer is gone (ROUTER_MANDATORY); liveness is judged elsewhere

    def broadcast(self, kind: MessageType, header: dict, array=None) -> None:
        frames = framing.shareable(encode(kind, header, array))  # one buffer for all ranks
        for rank in sorted(self.identities):
            if rank not in self.dead:
                self.send_frames(rank, frames)

    def silent(self, limit_s: float) -> set[int]:
        """Live ranks that sent nothing for more than limit_s (after reading what is queued)."""
        while framing.readable(self.socket, 0):
            received = self._read(framing.receive(self.socket))
            if received is not None:
                self._pending.append(received)
        cutoff = time.monotonic_ns() - int(limit_s * 1e9)
        return {
            r for r in self.identities if r not in self.dead and self.last_seen.get(r, 0) < cutoff
        }

    def _reject(self, reason: str, identity: bytes, detail: str = "") -> None:
        self.rejected[reason] += 1
        log.warning("rejected a message (%s) from peer %s %s", reason, identity.hex()[:16], detail)

    def receive(self, timeout_ms: int) -> Received | None:
        """The next message (not READY, not HEARTBEAT), or None after timeout_ms.

        A blocking receive with a timeout (ZMQ_RCVTIMEO) rather than a poll and then a receive:
        at N messages per iteration every wake-up path costs (scripts/bench_overhead.py)."""
        if self._pending:
            return self._pending.popleft()
        timeout_ms = max(0, int(timeout_ms))  # ZMQ_RCVTIMEO: -1 would wait forever
        end = time.monotonic_ns() + timeout_ms * 1_000_000
        while True:
            self._receive_timeout(timeout_ms)
            try:
                frames = framing.receive(self.socket)
            except zmq.Again:
                return None
            received = self._read(frames)
            if received is not None:
                return received
            # a registration or heartbeat: wait only for what is left of timeout_ms
            timeout_ms = max(0, (end - time.monotonic_ns()) // 1_000_000)

    def _receive_timeout(self, timeout_ms: int) -> None:
        if timeout_ms != self._timeout_ms:
            self.socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self._timeout_ms = timeout_ms

    def _read(self, frames: list[zmq.Frame]) -> Received | None:
        """One message as received: registrations, heartbeats and rejects are handled here."""
        arrival = time.monotonic_ns()
        identity = frames[0].bytes
        try:
            message = parse(frames[1:])
        except ProtocolError as exc:
            reason = "version" if "protocol version" in str(exc) else "malformed"
            self._reject(reason, identity, str(exc))
            return None
        if message.kind is MessageType.READY:
            self._register(identity, message)
            return None
        rank = self.ranks.get(identity)
        if rank is None or rank in self.dead:
            self._reject("unknown-worker", identity, message.kind.name)
            return None
        self.last_seen[rank] = arrival
        if message.kind is MessageType.HEARTBEAT:
            return None
        return Received(rank, message, arrival)

    def _register(self, identity: bytes, message: Message) -> None:
        h = message.header
        if h.get("protocol") != PROTOCOL_VERSION:
            self._reject("version", identity, f"READY with protocol {h.get('protocol')!r}")
            return
        if identity in self.ranks:
            self._reject("duplicate-ready", identity)
            return
        wanted = h.get("rank")
        limit = self.n_workers if self.n_workers is not None else len(self.identities) + 1
        free = sorted(r for r in range(limit) if r not in self.identities or r in self.dead)
        if not free:
            self._reject("surplus-worker", identity, f"all {limit} ranks are taken")
            return
        if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted not in free:
            wanted = free[0]
        old = self.identities.get(wanted)
        if old is not None:
            del self.ranks[old]
        self.identities[wanted] = identity
        self.ranks[identity] = wanted
        self.dead.discard(wanted)
        self.pids[wanted] = h.get("pid") if isinstance(h.get("pid"), int) else -1
        self.last_seen[wanted] = time.monotonic_ns()
        log.info("worker rank %d registered (pid %s)", wanted, self.pids[wanted])

    def wait_for_workers(self, count: int, timeout_s: float, check=None) -> None:
        """Block until ranks 0..count-1 are taken by live workers (later READYs beyond them are
        refused as surplus); `check()` may raise (e.g. a worker died)."""
        self.n_workers = count
        end = time.monotonic() + timeout_s
        while any(r not in self.identities or r in self.dead for r in range(count)):
            if check is not None:
                check()
            if time.monotonic() > end:
                raise UserError(
                    f"only {len(self.identities) - len(self.dead)} of {count} workers connected to "
                    f"{self.endpoint} within {timeout_s:g} s"
                )
            received = self.receive(100)
            if received is not None:
                self._reject(
                    "unexpected", self.identities[received.rank], received.message.kind.name
                )
