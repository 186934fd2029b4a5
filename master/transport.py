"""The master's end of the wire: one ROUTER socket feeding the record of every rank
(master/peers.py).

Nothing received is trusted: frames are parsed by bcgc_sim.protocol (never unpickled); a
malformed message, a wrong protocol version or a message from an identity that holds no live
rank is counted in `rejected` (by reason), logged (Rejections: rate-limited) and dropped; so is a
shared-memory reference that is stale, out of bounds or names an unknown segment (its reason is
the ProtocolError's, bcgc_sim/wire/shm.py).
Messages larger than `max_message_bytes` are refused by ZeroMQ itself (ZMQ_MAXMSGSIZE: the
peer is disconnected before the master sees anything of them).

Ranks: a worker says READY with a random token; the master gives it a rank and keeps a Peer:
its current connection (routing id), when it was last heard, its state (live, dead, awaiting a
replacement) and the run (scheme set-up) it confirmed. A worker whose TCP connection dropped
reconnects under a new routing id and says READY again with the same token (with CURVE, from
the same public key, which ZeroMQ's ZAP handler gives as the message's User-Id): the rank moves
to the new connection, keeps everything else, and is listed in `rejoined` so that the session
re-sends what may have been lost. A rank declared dead stays dead until a worker registers for
it: a replacement, or the same worker proving who it is.

Liveness (`check_liveness`): a rank is dead when its local process exited, or when it was
silent for `liveness` heartbeat intervals while the master was listening. Queued messages are
read before judging, and when the master itself did not look for more than a quarter of that
window (a long computation, a SIGSTOP) every clock restarts from the moment it looks again: a
gap the master caused is never held against a worker. Workers watch their connection to the
master with ZeroMQ heartbeats, which the master's I/O thread answers even while its main thread
computes.

Shared memory (cluster.transport, MasterSegments): every SETUP offers the theta segment; a
SETUP_OK announcing the worker's own segment maps it for that rank. A worker that reconnects
keeps its segments (the same process); a worker that takes a rank anew, a replacement, starts
with none until its SETUP_OK, and a dead rank's mapping is dropped at the next broadcast.

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
    Message,
    MessageType,
    ProtocolError,
    clock_id,
    encode,
    parse,
)
from bcgc_sim.wire.shm import MasterSegments, Unavailable

from .peers import Peer, PeerState, PeerTable, Received

log = logging.getLogger("bcgc.master")
DRAIN_LIMIT = 1000  # messages read ahead by one liveness check (a flood must not stall it)
_LIVE = PeerState.LIVE


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
        AllowList(Path(allow))  # readable, and not empty
        return cls(public, secret, Path(allow))


class AllowList:
    """ZAP check of a worker's CURVE public key against the .key files of the --allow folder
    (read once). Runs in the authenticator's thread; the first refusal of each key is logged,
    every refusal is counted in `refused` (by key)."""

    def __init__(self, folder: Path) -> None:
        import zmq.auth

        try:
            self.keys = set(zmq.auth.load_certificates(str(folder)))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the worker keys in --allow {folder}: {exc}") from None
        if not self.keys:
            raise UserError(
                f"--allow {folder} holds no worker public keys (.key files from bcgc keygen)"
            )
        self.folder = folder
        self.refused: collections.Counter[bytes] = collections.Counter()

    def callback(self, domain: str, key: bytes) -> bool:
        """True if the Z85 public `key` may connect."""
        if key in self.keys:
            return True
        self.refused[key] += 1
        if self.refused[key] == 1:
            log.warning(
                "refused a CURVE handshake: worker key %s is not in the --allow folder %s "
                "(further refusals of this key are counted, not logged)",
                key.decode(errors="replace"),
                self.folder,
            )
        return False


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
    """Bound ROUTER socket; ranks are assigned on READY (PeerTable)."""

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1",
        max_message_bytes: int = -1,
        curve: Curve | None = None,
        transport: str = "auto",
    ) -> None:
        if not is_loopback(bind) and curve is None:
            raise UserError(
                f"binding the master to {bind} exposes it beyond this machine: give --key and --allow "
                "(CURVE keys from 'bcgc keygen'), or bind to 127.0.0.1"
            )
        framing.keep_freed_memory()  # this process moves large arrays every iteration
        self.context = zmq.Context()
        self.auth = None
        self.allow: AllowList | None = None  # with CURVE: refused handshakes counted by key
        self.shared = MasterSegments(transport, clock_id())  # bulk arrays on this host
        self.socket = framing.configure(self.context.socket(zmq.ROUTER))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if max_message_bytes > 0:
            self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.context)
            self.auth.start()
            self.allow = AllowList(curve.allow)
            self.auth.configure_curve_callback(domain="*", credentials_provider=self.allow)
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
        self.peers = PeerTable()
        self.refused: collections.Counter[tuple[str, str]] = collections.Counter()  # READYs
        self._pending: collections.deque[Received] = collections.deque()  # read ahead
        self._timeout_ms = -1  # the socket's ZMQ_RCVTIMEO (-1: wait forever)

    # views of the PeerTable that callers and tests read
    @property
    def identities(self) -> dict[int, bytes]:
        return {rank: peer.identity for rank, peer in self.peers.by_rank.items()}

    @property
    def dead(self) -> set[int]:
        return self.peers.dead

    @property
    def rejected(self) -> collections.Counter[str]:
        return self.peers.rejections.counts

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; linger_ms lets messages already queued (a STOP) still leave."""
        self.peers.rejections.summarise(force=True)
        if self.auth is not None:
            self.auth.stop()
        self.context.destroy(linger=linger_ms)
        self.shared.close()

    def reject(self, reason: str, source: int | bytes | None, detail: str = "") -> None:
        """Count and log one rejected message; `source` is a rank or a routing id."""
        if isinstance(source, bytes):
            name = self.peers.source(source)
        else:
            name = "an unknown peer" if source is None else f"worker {source}"
        self.peers.rejections.add(reason, name, detail)

    def send(self, rank: int, kind: MessageType, header: dict, array=None) -> None:
        """Send one message, its array in frames. A SETUP also offers the theta segment, sized
        for the L float64 of its data (header["data"]["coordinates"]), unless
        cluster.transport is "zmq"."""
        if kind is MessageType.SETUP:
            header = {**header, **self.shared.setup_fields(header["data"]["coordinates"])}
        self.send_frames(rank, encode(kind, header, array))

    def send_frames(self, rank: int, frames: list) -> None:
        peer = self.peers.by_rank.get(rank)
        if peer is not None:
            self._send_to(peer.identity, frames)

    def _send_to(self, identity: bytes, frames: list) -> None:
        try:
            framing.send(self.socket, [identity, *frames])
        except zmq.ZMQError:
            pass  # the peer is gone (ROUTER_MANDATORY); liveness is judged elsewhere

    def broadcast(self, kind: MessageType, header: dict, array, ranks) -> None:
        """The same message to every rank in `ranks`: by reference to the ranks whose segment
        is mapped (the array copied once into the theta segment), in frames (one buffer for
        all) to the others."""
        shared = self.shared
        for rank in self.peers.dead & shared.tables.keys():
            shared.forget(rank)  # a dead worker's segment is freed
        by_reference = None
        if array is not None and not shared.tables.keys().isdisjoint(ranks):
            by_reference = shared.frames(kind, header, array)
        frames = None
        for rank in sorted(ranks):
            if by_reference is not None and rank in shared.tables:
                self.send_frames(rank, by_reference)
                continue
            if frames is None:
                frames = framing.shareable(encode(kind, header, array))
            self.send_frames(rank, frames)

    def check_liveness(self, exited: set[int], heartbeat_s: float, liveness: int) -> list[Peer]:
        """Read what is queued, then declare dead the live ranks whose process exited or that
        were silent too long (PeerTable.judge); returns them."""
        for _ in range(DRAIN_LIMIT):
            if not framing.readable(self.socket, 0):
                break
            received = self._read(framing.receive(self.socket))
            if received is not None:
                self._pending.append(received)
        return self.peers.judge(time.monotonic_ns(), exited, int(heartbeat_s * 1e9), liveness)

    def drain(self, timeout_ms: int) -> bool:
        """Read and drop whatever arrives within timeout_ms (heartbeats included); True if
        anything did."""
        self._pending.clear()
        self._receive_timeout(max(0, int(timeout_ms)))
        try:
            frames = framing.receive(self.socket)
        except zmq.Again:
            return False
        self._read(frames)
        return True

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
        peer = self.peers.by_identity.get(identity)
        try:  # a shared-memory reference is resolved in its sender's segments only
            message = parse(frames[1:], None if peer is None else self.shared.tables.get(peer.rank))
        except ProtocolError as exc:
            self.reject(exc.reason, identity, str(exc))
            return None
        if message.kind is MessageType.READY:
            self._register(identity, message, frames[1])
            return None
        if peer is None or peer.state is not _LIVE:
            reason = "unknown-worker" if peer is None else "dead-worker"
            self.reject(reason, identity, message.kind.name)
            return None
        peer.heard_ns = arrival
        if message.kind is MessageType.HEARTBEAT:
            return None
        if message.kind is MessageType.SETUP_OK:
            self._accept_segment(peer.rank, message.header)
        return Received(peer.rank, message, arrival)

    def _accept_segment(self, rank: int, header: dict) -> None:
        """Map the segment a worker announced in SETUP_OK (or forget its old one). Under
        cluster.transport = "shm" a segment that cannot be mapped ends the run."""
        try:
            self.shared.accepted(rank, header)
        except (Unavailable, ProtocolError) as exc:
            self.shared.forget(rank)  # its theta now goes in frames, and so do its answers
            if self.shared.mode == "shm":
                raise UserError(
                    f"cluster.transport = 'shm' but the master cannot map worker {rank}'s "
                    f"shared memory: {exc}; use 'auto' to fall back to ZeroMQ frames"
                ) from None
            log.warning("worker %d: shared memory unavailable (%s), using frames", rank, exc)

    def _register(self, identity: bytes, message: Message, frame: zmq.Frame) -> None:
        """A READY: a rank for its sender, or a refusal counted by (reason, host) in `refused`;
        a worker refused for its rank or for lack of one is told why (STOP), so that it exits."""
        try:
            host = frame.get("Peer-Address")
        except zmq.ZMQError:
            host = ""
        key = ""
        if self.auth is not None:
            try:
                key = frame.get("User-Id")  # the Z85 public key the handshake authenticated
            except zmq.ZMQError:
                key = ""
        known = identity in self.peers.by_identity
        known_token = message.header.get("token") in self.peers.by_token
        result = self.peers.register(identity, message.header, key, time.monotonic_ns(), host)
        if isinstance(result, str):
            self.refused[result, host] += 1
            detail = self._refusal_detail(result, message.header)
            if result in ("surplus-worker", "duplicate-rank", "rank-out-of-range") and not known:
                # tell it, so that it exits instead of waiting for a set-up
                self._send_to(identity, encode(MessageType.STOP, {"reason": detail}))
            self.reject(result, identity, detail)
            return
        if known_token:  # the same process: its segments and mappings are still good
            log.info("worker %d reconnected (pid %s)", result.rank, result.pid)
        else:  # a new worker for the rank: nothing by reference until its SETUP_OK
            self.shared.forget(result.rank)
            log.info("worker rank %d registered (pid %s, host %s)", result.rank, result.pid, host)

    def _refusal_detail(self, reason: str, header: dict) -> str:
        """What a refused worker is told and the log says."""
        rank, size = header.get("rank"), self.peers.size
        if reason == "version":
            return f"READY with protocol {header.get('protocol')!r}"
        if reason == "surplus-worker":
            return (
                f"all {size} ranks are taken (a replacement is taken once the master has "
                "declared a rank dead)"
            )
        if reason == "duplicate-rank":
            holder = self.peers.by_rank[rank]
            return (
                f"rank {rank} is held by a live worker (pid {holder.pid} on "
                f"{holder.host or 'an unknown host'}): check the launcher's ranks or --rank"
            )
        if reason == "rank-out-of-range":
            return f"rank {rank} is not below the master's {size} workers"
        return ""

    def wait_for_workers(self, count: int, timeout_s: float, check=None, report=None) -> None:
        """Block until ranks 0..count-1 are taken by live workers (later READYs beyond them are
        refused as surplus); `check()` may raise (e.g. a worker died); on timeout the error
        ends with `report()`, if given."""
        self.peers.size = count
        by_rank = self.peers.by_rank
        end = time.monotonic() + timeout_s
        while any(r not in by_rank or by_rank[r].state is not _LIVE for r in range(count)):
            if check is not None:
                check()
            if time.monotonic() > end:
                live = len(self.peers.live())
                raise UserError(
                    f"only {live} of {count} workers connected to {self.endpoint} within "
                    f"{timeout_s:g} s" + (f"; {report()}" if report is not None else "")
                )
            received = self.receive(100)
            if received is not None:
                self.reject("unexpected", received.rank, received.message.kind.name)
