"""The master's record of every rank (PeerTable): who holds it, when it was last heard, its
state; the registration and liveness rules. No sockets: master/transport.py feeds it, and a
test can feed it directly.

Ranks: a worker says READY with a random token; the table gives it a rank and keeps a Peer.
A READY with a known token is that worker on a new connection (its TCP connection dropped): the
rank moves to the new routing id and keeps everything else, and is listed in `rejoined`. A rank
declared dead stays dead until a worker registers for it. Liveness (`judge`): dead when its
local process exited, or silent for `liveness` heartbeat intervals while the master listened;
a gap in the master's own listening is never held against a worker.
"""

from __future__ import annotations

import collections
import enum
import logging
import time
from dataclasses import dataclass

from bcgc_sim.wire.protocol import PROTOCOL_VERSION, Message

log = logging.getLogger("bcgc.master")
GAP_FRACTION = 4  # not looking for more than window / GAP_FRACTION restarts every peer's clock


@dataclass(slots=True)
class Received:  # one per message: not frozen, whose __init__ takes twice as long
    rank: int | None  # None: an identity that never said READY
    message: Message
    arrival_ns: int


class PeerState(enum.Enum):
    LIVE = "live"
    DEAD = "dead"  # declared dead; no replacement asked for (or none came in time)
    AWAITING = "awaiting a replacement"


_LIVE, _DEAD, _AWAITING = PeerState.LIVE, PeerState.DEAD, PeerState.AWAITING


@dataclass(slots=True, eq=False)
class Peer:
    """What the master knows of the worker holding one rank (times: monotonic ns)."""

    rank: int
    identity: bytes  # routing id of its newest connection: messages to it go there
    token: str  # chosen by the worker; a READY with it again is this worker reconnecting
    key: str  # the CURVE public key (Z85) it authenticated with; "" without CURVE
    pid: int
    heard_ns: int  # its last message
    beat_ns: int = 0  # its heartbeat interval as it reported it (0: unknown)
    state: PeerState = _LIVE
    run: str = ""  # the run (a scheme's set-up) it confirmed, or named when reconnecting
    setup_sent: str = ""  # the run of the last SETUP sent to it
    replaces: bool = False  # it took the rank of an earlier worker
    replace_by_ns: int = 0  # AWAITING: when to give up waiting for a replacement
    how: str = ""  # why it was declared dead
    host: str = ""  # the address its READY came from (ZeroMQ's Peer-Address), "" if unknown


class Rejections:
    """Rejected messages counted by reason (run.json `rejected_messages`) and logged: the first
    FIRST_LOGGED of each reason one line each, then one line per reason and SUMMARY_INTERVAL_S
    with the count since (a flood of 20000 messages writes a few lines, not 20000)."""

    FIRST_LOGGED = 5
    SUMMARY_INTERVAL_S = 10.0

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._next_summary = 0.0

    def add(self, reason: str, source: str, detail: str = "") -> None:
        self.counts[reason] += 1
        count = self.counts[reason]
        if count <= self.FIRST_LOGGED:
            log.warning("rejected a message (%s) from %s: %s", reason, source, detail or "-")
            if count == self.FIRST_LOGGED:
                log.warning(
                    "further '%s' rejections are logged as one count every %g s",
                    reason,
                    self.SUMMARY_INTERVAL_S,
                )
                self._next_summary = time.monotonic() + self.SUMMARY_INTERVAL_S
            return
        self._unlogged[reason] += 1
        self.summarise()

    def summarise(self, force: bool = False) -> None:
        """Log the counts not yet logged, if the interval has passed (or `force`)."""
        if not self._unlogged or (not force and time.monotonic() < self._next_summary):
            return
        for reason, count in sorted(self._unlogged.items()):
            log.warning("rejected %d more messages (%s) since the last count", count, reason)
        self._unlogged.clear()
        self._next_summary = time.monotonic() + self.SUMMARY_INTERVAL_S


class PeerTable:
    """Every rank's Peer, with the registration and liveness rules; no sockets (WorkerLink feeds
    it, a test can feed it directly)."""

    def __init__(self) -> None:
        self.by_rank: dict[int, Peer] = {}
        self.by_identity: dict[bytes, Peer] = {}  # older connections of a reconnected worker too
        self.by_token: dict[str, Peer] = {}
        self.dead: set[int] = set()  # ranks that are not LIVE, kept in step with the states
        self.size: int | None = None  # ranks are 0..size-1 once known
        self.version = 0  # counts changes of state: sessions re-evaluate when it moves
        self.rejoined: list[int] = []  # ranks whose worker reconnected, for the session to serve
        self.rejections = Rejections()
        self._looked_ns = 0  # the last liveness check
        self._resumed_ns = 0  # silence counts from here at the earliest (the master's last gap)

    def live(self) -> list[int]:
        return sorted(r for r, p in self.by_rank.items() if p.state is _LIVE)

    def source(self, identity: bytes) -> str:
        """How a log line names the sender of a message."""
        peer = self.by_identity.get(identity)
        return f"worker {peer.rank}" if peer is not None else f"peer {identity.hex()[:16]}"

    # -- registration --------------------------------------------------------------------------

    def register(
        self, identity: bytes, header: dict, key: str, now_ns: int, host: str = ""
    ) -> Peer | str:
        """A READY: the Peer that now holds a rank for this connection, or the reason it was
        refused. Once the size is known, a worker asking for a rank (a launcher's, or --rank)
        gets that rank or is refused (`duplicate-rank`, `rank-out-of-range`); one asking for
        none takes the lowest free rank."""
        if header.get("protocol") != PROTOCOL_VERSION:
            return "version"
        if identity in self.by_identity:
            return "duplicate-ready"
        token = header.get("token")
        token = token if type(token) is str and 8 <= len(token) <= 64 else ""
        beat = header.get("heartbeat_s")
        beat_ns = int(beat * 1e9) if type(beat) is float and 0 < beat < 3600 else 0
        peer = self.by_token.get(token) if token else None
        if peer is not None:
            return self._rejoin(peer, identity, header, key, now_ns, beat_ns)
        limit = self.size if self.size is not None else len(self.by_rank) + 1
        free = [
            r for r in range(limit) if r not in self.by_rank or self.by_rank[r].state is not _LIVE
        ]
        if not free:
            return "surplus-worker"
        wanted = header.get("rank")
        if type(wanted) is int and wanted >= 0 and self.size is not None:
            if wanted >= self.size:
                return "rank-out-of-range"
            if wanted not in free:
                return "duplicate-rank"
        if type(wanted) is not int or wanted not in free:
            wanted = free[0]
        old = self.by_rank.get(wanted)
        if old is not None:
            self._forget(old)
        pid = header.get("pid")
        peer = Peer(wanted, identity, token, key, pid if type(pid) is int else -1, now_ns, beat_ns)
        peer.host = host
        peer.replaces = old is not None
        self.by_rank[wanted] = peer
        self.by_identity[identity] = peer
        if token:
            self.by_token[token] = peer
        self.dead.discard(wanted)
        self.version += 1
        return peer

    def _rejoin(
        self, peer: Peer, identity: bytes, header: dict, key: str, now_ns: int, beat_ns: int
    ) -> Peer | str:
        """The worker of `peer` on a new connection (its TCP connection dropped and came back)."""
        if key != peer.key:
            return "wrong-key"  # its token, another CURVE key: not the same worker
        self.by_identity[identity] = peer
        peer.identity, peer.heard_ns = identity, now_ns
        peer.beat_ns = beat_ns or peer.beat_ns
        if peer.state is not _LIVE:  # declared dead while it was cut off; nobody took the rank
            peer.state, peer.how, peer.replace_by_ns = _LIVE, "", 0
            self.dead.discard(peer.rank)
        if header.get("settings") is not True:  # (renewed on purpose: its SETUP_OK follows)
            run = header.get("run")
            peer.run = run if type(run) is str else ""  # a SETUP_OK may have been lost
            self.rejoined.append(peer.rank)
        self.version += 1
        return peer

    def _forget(self, peer: Peer) -> None:
        """Drop every connection and the token of a worker whose rank goes to another one."""
        for identity in [i for i, p in self.by_identity.items() if p is peer]:
            del self.by_identity[identity]
        self.by_token.pop(peer.token, None)

    # -- liveness ------------------------------------------------------------------------------

    def judge(self, now_ns: int, exited: set[int], heartbeat_ns: int, liveness: int) -> list[Peer]:
        """Declare dead every live rank whose process exited, or that was silent for `liveness`
        intervals of its heartbeat while the master listened; returns them."""
        limit = liveness * heartbeat_ns
        if self._looked_ns and now_ns - self._looked_ns > limit // GAP_FRACTION:
            self._resumed_ns = now_ns  # the master was not looking: nobody's silence counts
        self._looked_ns = now_ns
        newly = []
        for peer in self.by_rank.values():
            if peer.state is not _LIVE:
                continue
            if peer.rank in exited:
                how = "its process exited"
            else:
                silence = now_ns - max(peer.heard_ns, self._resumed_ns)
                window = liveness * max(heartbeat_ns, peer.beat_ns)
                if silence <= window:
                    continue
                how = f"silent for more than {window / 1e9:g} s"
            self.mark_dead(peer, how)
            newly.append(peer)
        self.rejections.summarise()
        return newly

    def mark_dead(self, peer: Peer, how: str) -> None:
        peer.state, peer.how = _DEAD, how
        self.dead.add(peer.rank)
        self.version += 1

    def await_replacement(self, peer: Peer, deadline_ns: int) -> None:
        peer.state, peer.replace_by_ns = _AWAITING, deadline_ns
        self.dead.add(peer.rank)
        self.version += 1

    def take_rejoined(self) -> list[int]:
        ranks, self.rejoined = self.rejoined, []
        return ranks
