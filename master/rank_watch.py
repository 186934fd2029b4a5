"""One session's view of the ranks on its link, for every protocol (RankWatch).

A rank is dead when its process exits (local cluster) or when it has been silent (no message, no
heartbeat) for `liveness` heartbeat intervals while the master listened (master/peers.py). A
dead rank stays dead for the rest of the run, every later iteration and scheme included, until a
worker registers for it. With replacements (cluster.on_failure = "replace") one is asked for as
soon as a rank is dead and awaited at most `replace_timeout` seconds. A worker that reconnected
after a dropped connection is listed for the session to re-send what it may have missed; one
not set up for the run gets its SETUP again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from bcgc_sim.wire.protocol import MessageType, clock_id

from .errors import RunError
from .link import Link
from .peers import Peer, PeerState, Received
from .settings import SessionSettings

log = logging.getLogger("bcgc.master")
_LIVE, _AWAITING = PeerState.LIVE, PeerState.AWAITING
WATCH_INTERVAL_NS = 20_000_000  # how often an iteration checks for dead workers (20 ms)
WATCH_MS = 20  # the longest single wait for a message while watching: deaths seen within ~40 ms
WORKER_MESSAGES = frozenset(
    {
        MessageType.BLOCK,
        MessageType.NOTICE,
        MessageType.UPLOAD,
        MessageType.SETUP_OK,
        MessageType.FAILED,
    }
)


class RankWatch:
    """One session's view of the ranks on its link (the link's PeerTable), for both protocols.

    `poll()` declares dead the ranks whose process exited or that fell silent, records and logs
    each death and sends the rank a STOP (should it be alive after all, it exits: dead stays
    dead), asks for a replacement at once when `replaces`, gives up on replacements that did not
    come within replace_timeout, and sends SETUP to every live rank not set up for this run (a
    replacement, a newcomer, a worker whose SETUP a dropped connection lost). It returns True
    when any rank changed state: the session then checks again what it can still decode.
    """

    def __init__(
        self,
        link: Link,
        settings: SessionSettings,
        scheme: str,
        run_id: str,
        setup_header: Callable[[int], dict],
        dead_ranks: Callable[[], set[int]],
        replace: Callable[[int], None],
        replaces: bool,
    ) -> None:
        self.link, self.settings, self.scheme, self.run_id = link, settings, scheme, run_id
        self.setup_header, self.dead_ranks, self.replace = setup_header, dead_ranks, replace
        self.replaces = replaces
        self.events: list[dict] = []  # worker deaths, replacements, reconnections
        self.affinity: dict[int, list[int] | None] = {}
        self.clock = clock_id()
        self._version = -1
        if replaces:  # a rank whose replacement did not come earlier is asked for again
            for peer in link.peers.by_rank.values():
                if peer.state is PeerState.DEAD:
                    peer.replace_by_ns = 0

    def poll(self, iteration: int | None) -> bool:
        """Run every check once; True if a rank changed state since the last poll."""
        peers = self.link.peers
        settings = self.settings
        for peer in self.link.check_liveness(
            self.dead_ranks(), settings.heartbeat_s, settings.liveness
        ):
            self._died(peer, iteration)
        now = time.monotonic_ns()
        for peer in list(peers.by_rank.values()):
            if peer.state is _AWAITING and now > peer.replace_by_ns:
                how = f"no replacement within {settings.replace_timeout_s:g} s"
                peers.mark_dead(peer, how)
                log.warning(
                    "%s: worker %d: %s (cluster.replace_timeout)", self.scheme, peer.rank, how
                )
            elif peer.state is not _LIVE:
                if self.replaces and not peer.replace_by_ns and peer.state is not _AWAITING:
                    self.request_replacement(peer)
            elif peer.run != self.run_id and peer.setup_sent != self.run_id:
                self.link.send(peer.rank, MessageType.SETUP, self.setup_header(peer.rank))
                peer.setup_sent = self.run_id
        changed = peers.version != self._version
        self._version = peers.version
        return changed

    def _died(self, peer: Peer, iteration: int | None) -> None:
        when = "set-up" if iteration is None else f"iteration {iteration}"
        log.warning("%s, %s: worker %d is dead (%s)", self.scheme, when, peer.rank, peer.how)
        self.events.append(
            {"iteration": iteration, "rank": peer.rank, "event": "died", "how": peer.how}
        )
        self.link.send(peer.rank, MessageType.STOP, {"reason": f"declared dead: {peer.how}"})

    def declare_faulty(self, rank: int, how: str, iteration: int | None) -> None:
        """A live worker that misbehaves (non-finite values) is dead from now on."""
        peer = self.link.peers.by_rank[rank]
        if peer.state is _LIVE:
            self.link.peers.mark_dead(peer, how)
            self._died(peer, iteration)

    def request_replacement(self, peer: Peer) -> None:
        deadline = time.monotonic_ns() + int(self.settings.replace_timeout_s * 1e9)
        self.link.peers.await_replacement(peer, deadline)
        log.warning("%s: waiting for a replacement of worker %d", self.scheme, peer.rank)
        self.replace(peer.rank)

    def rejoined(self, iteration: int | None) -> list[int]:
        """Ranks whose worker reconnected since the last call and is set up for this run: the
        session re-sends what it may have missed. One that is not gets its SETUP again."""
        ready = []
        for rank in self.link.peers.take_rejoined():
            peer = self.link.peers.by_rank[rank]
            log.warning("%s: worker %d reconnected", self.scheme, rank)
            self.events.append({"iteration": iteration, "rank": rank, "event": "reconnected"})
            if peer.run == self.run_id:
                ready.append(rank)
            else:
                peer.setup_sent = ""  # the next poll sends it again
        return ready

    def on_setup_reply(self, received: Received, iteration: int | None) -> bool:
        """A SETUP_OK of this run: True if it set a rank up that was not before (a "replaced"
        event for a replacement). A FAILED set-up ends the run."""
        h, kind = received.message.header, received.message.kind
        if kind is MessageType.FAILED:
            raise RunError(
                f"worker {received.rank} could not set up {self.scheme}: {h.get('reason')}"
            )
        if kind is not MessageType.SETUP_OK or h.get("run") != self.run_id:
            return False
        peer = self.link.peers.by_rank[received.rank]
        self.affinity[received.rank] = h.get("affinity")
        beat = h.get("heartbeat_s")
        if type(beat) is float and 0 < beat < 3600:
            peer.beat_ns = int(beat * 1e9)
        if peer.run == self.run_id:
            return False
        peer.run = self.run_id
        if peer.replaces:
            peer.replaces = False
            log.warning("%s, iteration %s: worker %d replaced", self.scheme, iteration, peer.rank)
            self.events.append({"iteration": iteration, "rank": peer.rank, "event": "replaced"})
        return True

    def set_up(self, timeout_s: float) -> None:
        """Send SETUP to every live rank; return once each is set up for this run. Ranks that
        die meanwhile drop out (and are replaced, when `replaces`); a live one that does not
        answer within timeout_s ends the run."""
        peers = self.link.peers.by_rank
        end = time.monotonic() + timeout_s
        next_watch = 0
        while True:
            if time.monotonic_ns() >= next_watch:
                self.poll(None)
                self.rejoined(None)  # those already set up for this run need nothing more
                next_watch = time.monotonic_ns() + WATCH_INTERVAL_NS
            waiting = sorted(
                r for r, p in peers.items() if p.state is _LIVE and p.run != self.run_id
            )
            if not waiting:
                return
            if time.monotonic() > end:
                raise RunError(
                    f"workers {waiting} did not confirm set-up of {self.scheme} in {timeout_s:g} s"
                )
            received = self.link.receive(WATCH_MS)
            if received is not None and not self.on_setup_reply(received, None):
                self.unexpected(received)

    def begin_iteration(self, iteration: int) -> set[int]:
        """At the start of an iteration: what died since the last one counts from here, and
        reconnected ranks get this broadcast. The ranks to send theta: those set up for this run."""
        self.poll(iteration)
        self.rejoined(iteration)
        return self.set_up_ranks()

    def broadcast_theta(
        self, iteration: int, theta: np.ndarray, ranks: set[int]
    ) -> tuple[int, dict]:
        """ITERATE(theta) to `ranks`; the broadcast's monotonic time (ns) and its header."""
        start = time.monotonic_ns()
        header = {"run": self.run_id, "iteration": iteration, "sent_ns": start, "clock": self.clock}
        self.link.broadcast(MessageType.ITERATE, header, theta, ranks)
        return start, header

    def set_up_ranks(self) -> set[int]:
        """Live ranks set up for this run."""
        return {
            r
            for r, p in self.link.peers.by_rank.items()
            if p.state is _LIVE and p.run == self.run_id
        }

    def unexpected(self, received: Received) -> None:
        """Count a message no worker sends (work of an earlier scheme or iteration is dropped)."""
        if received.message.kind not in WORKER_MESSAGES:
            self.link.reject("unexpected", received.rank, received.message.kind.name)
