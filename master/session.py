"""One scheme on the testbed: set the workers up, then run iterations and record them.

Per iteration the master regenerates every worker's T_n from the seed, so each measured
runtime has its exact prediction beside it: time_scale * (M C / N) * R(plan, T). The measured
runtime runs from the broadcast of theta to the decode of the last slot.

Worker failure (RankWatch, shared with the partial-gc session): a rank is dead when its process
exits (local cluster) or when it has been silent (no message, no heartbeat) for `liveness`
heartbeat intervals while the master listened (master/transport.py). A dead rank stays dead for
the rest of the run, every later iteration and scheme included, until a worker registers for
it. At the start of every iteration and whenever a rank changes state the session checks every
slot against the ranks that can still answer: slots that can still get N - s messages keep
decoding; when one cannot, the run ends at once with a RunError naming the workers and the
block (on_failure = "error"). With on_failure = "replace" a replacement is asked for as soon as
a rank is dead (a local process is started; remote workers are awaited), given the rank's plan,
code rows and data, and sent the current theta; an iteration that needs it waits for it (its
measured runtime includes the wait), at most `replace_timeout` seconds. A worker that
reconnected after a dropped connection gets what it may have missed again (SETUP, or this
iteration's theta). A used message with non-finite values is rejected, its sender declared
faulty, and the slot decoded from the others: never a nan gradient. An iteration in which no
usable message arrives for the stall limit (cluster.stall_timeout, or derived from the liveness
window and the predicted iteration) ends the run with a RunError naming the silent workers.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bcgc_sim.errors import UserError
from bcgc_sim.model.codes import CodeBook, cyclic_support
from bcgc_sim.model.layout import Layout
from bcgc_sim.model.plans import Plan
from bcgc_sim.model.stragglers import distribution_to_spec, iteration_cycle_times
from bcgc_sim.model.system import SystemModel
from bcgc_sim.problems import ProblemData, full_gradient, loss_at, relative_error
from bcgc_sim.results import RunRecorder
from bcgc_sim.wire.protocol import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_LIVENESS,
    MessageType,
    ProtocolError,
    check,
    clock_id,
    header_spec,
)

from .decoder import IterationDecoder, Outcome
from .transport import Peer, PeerState, Received, WorkerLink

log = logging.getLogger("bcgc.master")
_BLOCK, _USED = MessageType.BLOCK, Outcome.USED  # looked up per message
_LIVE, _AWAITING = PeerState.LIVE, PeerState.AWAITING


WATCH_INTERVAL_NS = 20_000_000  # how often an iteration checks for dead workers (20 ms)
WATCH_MS = 20  # the longest single wait for a message while watching: deaths seen within ~40 ms
BLOCK_HEADER = header_spec(
    run=str, iteration=int, worker=int, slot=int, cycle_time=float, start_ns=int,
    received_ns=int, deadline_ns=int, send_ns=int, overrun_ns=int,
)  # fmt: skip
WORKER_MESSAGES = frozenset(
    {
        MessageType.BLOCK,
        MessageType.NOTICE,
        MessageType.UPLOAD,
        MessageType.SETUP_OK,
        MessageType.FAILED,
    }
)


class RunError(UserError):
    """The run cannot go on (an undecodable block, a silent cluster); ends with one line,
    which master.log records (with its time) when the error is raised."""

    def __init__(self, message: str) -> None:
        log.error("the run ends: %s", message)
        super().__init__(message)


@dataclass
class IterationResult:
    measured_s: float
    predicted_s: float
    loss: float
    gradient_rel_error: float | None
    stale: int  # messages of an older iteration or scheme, dropped
    overruns: int  # used messages whose compute ended after their deadline
    nmse: float | None = None  # partial-gc: ||g_hat - g||^2 / ||g||^2 (with check)
    round_trip_s: float | None = None  # partial-gc: stop -> last UPLOAD (COMBINE / UPLOAD)


@dataclass(frozen=True)
class SessionSettings:
    seed: int
    time_scale: float  # seconds per model time unit
    check: bool  # compare every decoded gradient with the uncoded one
    learning_rate: float  # theta <- theta - learning_rate * gradient / M
    pin: bool = True  # workers pin themselves to cores
    natural: bool = False  # no injected delays: real compute (and real load) sets the pace
    repeat: tuple[int, ...] = ()  # natural mode: per-worker repetitions of the work (slowdown)
    heartbeat_s: float = DEFAULT_HEARTBEAT_S  # a heartbeat after this long without a message
    liveness: int = DEFAULT_LIVENESS  # heartbeat intervals of silence before a peer is dead
    on_failure: str = "error"  # or "replace": wait for a replacement worker
    replace_timeout_s: float = 60.0
    stall_timeout_s: float = 0.0  # no usable message for this long: give up (0 = stall_limit_s)

    @property
    def window_s(self) -> float:
        """The liveness window: seconds of silence after which a worker is dead."""
        return self.liveness * self.heartbeat_s


def stall_limit_s(settings: SessionSettings, expected_s: float) -> float:
    """Seconds an iteration may go without a usable message: cluster.stall_timeout, or (0) the
    liveness window plus twice the expected iteration plus 1 s. `expected_s` is the predicted
    iteration; in natural mode (nothing predicted) the caller gives the longest so far, at
    least ten liveness windows. A dead worker is found by the liveness rules well before this:
    the limit only ends iterations in which live workers stay silent."""
    if settings.stall_timeout_s > 0:
        return settings.stall_timeout_s
    return settings.window_s + 2 * expected_s + 1.0


@dataclass
class _Iteration:
    """Book-keeping of the iteration in progress."""

    number: int
    header: dict
    theta: np.ndarray
    cycle_times: np.ndarray
    start: int
    participants: set[int] = field(default_factory=set)  # ranks sent this iteration's theta
    # every BLOCK of this run with its outcome (None: stale); tallied after the clock stopped
    seen: list[tuple[Received, Outcome | None]] = field(default_factory=list)
    stale: int = 0
    overruns: int = 0  # used messages whose compute ended after their deadline
    max_overrun: float = 0.0  # seconds
    counts: dict = field(default_factory=lambda: {o: 0 for o in Outcome})
    decoded_at: list[float] = field(default_factory=list)  # seconds from the broadcast, per slot


def no_dead_ranks() -> set[int]:
    return set()


def common_setup_fields(
    settings: SessionSettings,
    model: SystemModel,
    data: ProblemData,
    run_id: str,
    rank: int,
    ns_per_load: float,
) -> dict:
    """The SETUP header fields every protocol shares (the rest is the protocol's plan)."""
    return {
        "run": run_id, "rank": rank, "n_workers": model.n_workers, "seed": settings.seed,
        "ns_per_load": float(ns_per_load), "data": data.to_header(),
        "straggler": distribution_to_spec(model.distribution),
        "pin": settings.pin, "natural": settings.natural,
        "repeat": settings.repeat[rank] if settings.repeat else 1,
        "heartbeat_s": settings.heartbeat_s, "liveness": settings.liveness,
    }  # fmt: skip


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
        link: WorkerLink,
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


class SchemeSession:
    """Runs one plan on the connected workers; rows go to `recorder`.

    `dead_ranks()` reports ranks the cluster knows are gone (a local process that exited);
    `replace(rank)` starts a replacement for a dead rank (a local process) or does nothing
    (remote workers: an operator or launcher starts one, and its READY takes the place).
    """

    def __init__(
        self,
        link: WorkerLink,
        scheme: str,
        plan: Plan,
        layout: Layout,
        model: SystemModel,
        data: ProblemData,
        codes: CodeBook,
        settings: SessionSettings,
        recorder: RunRecorder,
        dead_ranks: Callable[[], set[int]] = no_dead_ranks,
        replace: Callable[[int], None] = lambda rank: None,
    ) -> None:
        self.link, self.scheme, self.plan, self.layout = link, scheme, plan, layout
        self.model, self.data, self.codes, self.settings = model, data, codes, settings
        self.recorder = recorder
        self.run_id = f"{scheme}-{time.monotonic_ns()}"
        self.decoder = IterationDecoder(layout.slots, model.n_workers, data.coordinates, codes)
        self.ns_per_load = settings.time_scale * model.scale * 1e9
        self.watch = RankWatch(
            link, settings, scheme, self.run_id, self.setup_header, dead_ranks, replace,
            replaces=settings.on_failure == "replace",
        )  # fmt: skip
        self.events = self.watch.events  # worker deaths, replacements, reconnections
        self.affinity = self.watch.affinity
        self.longest_s = 0.0  # the longest iteration so far (natural mode's stall limit)

    # -- set-up -----------------------------------------------------------------------------

    def setup_header(self, rank: int) -> dict:
        n = self.model.n_workers
        levels = sorted({slot.stragglers for slot in self.layout.slots})
        fields = common_setup_fields(
            self.settings, self.model, self.data, self.run_id, rank, self.ns_per_load
        )
        return fields | {
            "slots": [[s.start, s.stop, s.stragglers, s.load, s.partition] for s in self.layout.slots],
            "partitions": {k: list(v) for k, v in self.layout.partitions.items()},
            "code_rows": {str(s): self.codes.matrix(s)[rank, cyclic_support(rank, s, n)].tolist() for s in levels},
        }  # fmt: skip

    def setup(self, timeout_s: float = 60.0) -> None:
        """Send every live worker its rank's plan and code rows; wait for their SETUP_OK."""
        self.watch.set_up(timeout_s)

    def release(self) -> None:
        """Drop the last iteration's blocks: they may view a worker's shared memory, which this
        process keeps mapped while they live (the runner calls this when a scheme ends)."""
        self.decoder.reset()

    # -- one iteration ----------------------------------------------------------------------

    def predicted_seconds(self, cycle_times: np.ndarray) -> float:
        raw = float(self.plan.raw_runtime(cycle_times[None, :])[0])
        return raw * self.model.scale * self.settings.time_scale

    def iterate(self, iteration: int, theta: np.ndarray) -> tuple[IterationResult, np.ndarray]:
        """One iteration at theta; returns its record and the decoded gradient, shape (L,)."""
        if self.settings.natural:  # nothing injected: no cycle times to predict from
            cycle_times = np.full(self.model.n_workers, math.nan)
            predicted = math.nan
            expected = max(self.longest_s, 10 * self.settings.window_s)
        else:
            cycle_times = iteration_cycle_times(
                self.model.distribution, self.settings.seed, iteration, self.model.n_workers
            )
            self._check_full_stragglers(iteration, cycle_times)
            predicted = expected = self.predicted_seconds(cycle_times)
        stall_s = stall_limit_s(self.settings, expected)
        self.decoder.reset()
        state = _Iteration(
            iteration, {}, theta, cycle_times, 0, decoded_at=[math.nan] * len(self.layout.slots)
        )
        state.participants = self.watch.begin_iteration(iteration)
        self._check_decodable(state)
        start, state.header = self.watch.broadcast_theta(iteration, theta, state.participants)
        state.start = start
        try:
            end = self._receive_until_decoded(state, stall_s)
        except RunError:
            self._count_rejections(state)  # what was rejected is counted even when the run ends
            raise
        measured = (end - start) / 1e9
        self.longest_s = max(self.longest_s, measured)
        # book-keeping and recording are not part of the runtime
        self._tally(state)
        self.recorder.messages.writerows(
            self._message_row(r, outcome, state) for r, outcome in state.seen
        )
        gradient = self.decoder.gradient.copy()
        error = None
        if self.settings.check:
            true_gradient, loss = full_gradient(self.data, theta)
            error = relative_error(gradient, true_gradient)
        else:
            loss = loss_at(self.data, theta)
        self._record(state, measured, predicted, loss, error)
        return IterationResult(
            measured, predicted, loss / self.data.rows, error, state.stale, state.overruns
        ), gradient

    def _receive_until_decoded(self, state: _Iteration, stall_s: float) -> int:
        """Receive and decode until every slot is decoded from finite values; the monotonic
        time (ns) of the last decode."""
        last_progress = time.monotonic()
        next_watch = state.start + WATCH_INTERVAL_NS  # the first check after 20 ms: this is timed
        while True:
            while not self.decoder.complete:
                if time.monotonic_ns() >= next_watch:
                    self._watch_workers(state)
                    next_watch = time.monotonic_ns() + WATCH_INTERVAL_NS
                received = self.link.receive(WATCH_MS)
                if received is None:
                    if time.monotonic() - last_progress > stall_s:
                        self._stalled(state, stall_s)
                    continue
                if self._on_block(received, state):
                    last_progress = time.monotonic()
            end = time.monotonic_ns()
            # after the clock stopped: one check of the whole gradient instead of one per message
            if np.isfinite(self.decoder.gradient).all():
                return end
            self._drop_non_finite(state)

    def _on_block(self, received: Received, state: _Iteration) -> bool:
        """Feed a BLOCK to the decoder; True if it was used (or it set a replacement up). The
        rest of the book-keeping waits for _tally, after the iteration: this runs inside the
        measured runtime."""
        message = received.message
        if message.kind is not _BLOCK or message.array is None:
            return self._on_other(received, state)
        h = message.header
        try:
            check(h, BLOCK_HEADER)
        except ProtocolError as exc:
            self.link.reject("malformed", received.rank, f"BLOCK: {exc}")
            return False
        if h["run"] != self.run_id or h["iteration"] != state.number:
            state.seen.append((received, None))
            return False
        # the sender's identity gives the worker, never the header's claim
        outcome = self.decoder.offer(received.rank, h["slot"], message.array)
        state.seen.append((received, outcome))
        return outcome is _USED

    def _on_other(self, received: Received, state: _Iteration) -> bool:
        """Anything but a BLOCK: a SETUP_OK sets a replacement or a newcomer up, which then gets
        this iteration's theta. True if it did."""
        if received.message.kind is _BLOCK:
            self.link.reject("malformed", received.rank, "BLOCK without values")
            return False
        if not self.watch.on_setup_reply(received, state.number):
            self.watch.unexpected(received)
            return False
        self._join(received.rank, state)
        return True

    def _join(self, rank: int, state: _Iteration) -> None:
        """Send this iteration's theta to a worker set up after its broadcast (a replacement
        gets it even if the worker it replaces had it)."""
        if not self.decoder.complete:
            state.participants.add(rank)
            self.link.send(rank, MessageType.ITERATE, state.header, state.theta)

    def _tally(self, state: _Iteration) -> None:
        """Counts, overruns, slot decode times and rejections (by reason) of the finished
        iteration, from state.seen: a slot was decoded by the last message it used."""
        for received, outcome in state.seen:
            if outcome is None:
                state.stale += 1
                continue
            state.counts[outcome] += 1
            if outcome is _USED:
                h = received.message.header
                overrun = h["overrun_ns"] / 1e9
                state.overruns += overrun > 0
                state.max_overrun = max(state.max_overrun, overrun)
                if self.decoder.decoded[h["slot"]]:
                    state.decoded_at[h["slot"]] = (received.arrival_ns - state.start) / 1e9
        self._count_rejections(state)

    def _count_rejections(self, state: _Iteration) -> None:
        """Count (and log) by reason every block of this iteration the decoder did not take."""
        largest = 8 * self.data.coordinates  # no legitimate payload has more bytes
        for received, outcome in state.seen:
            h = received.message.header
            if outcome is Outcome.DUPLICATE:
                self.link.reject("duplicate", received.rank, f"block {h['slot']} again")
            elif outcome is Outcome.REJECTED:
                values = received.message.array
                if not 0 <= h["slot"] < len(self.layout.slots):
                    reason = "unknown-slot"
                elif not np.isfinite(values).all():
                    reason = "non-finite"
                else:
                    reason = "oversized" if values.nbytes > largest else "wrong-shape"
                self.link.reject(
                    reason, received.rank, f"block {h['slot']}, shape {list(values.shape)}"
                )

    def _drop_non_finite(self, state: _Iteration) -> None:
        """The decoded gradient is not finite: reject each used message with non-finite values,
        declare its sender faulty, and decode again from the other messages (the loop then waits
        for more, or the dead ranks make a slot undecodable)."""
        faulty = set()
        for index, (received, outcome) in enumerate(state.seen):
            if outcome is not None and not np.isfinite(received.message.array).all():
                state.seen[index] = (received, Outcome.REJECTED)
                faulty.add(received.rank)
        if not faulty:  # every message was finite: the decode itself overflowed
            raise RunError(
                f"{self.scheme}, iteration {state.number}: the decoded gradient is not finite "
                "(overflow: theta diverged?); lower problem.learning_rate"
            )
        for rank in sorted(faulty):
            self.watch.declare_faulty(rank, "sent non-finite values", state.number)
        self.decoder.reset()
        for index, (received, outcome) in enumerate(state.seen):
            if outcome is not None and outcome is not Outcome.REJECTED:
                h = received.message.header
                state.seen[index] = (
                    received, self.decoder.offer(received.rank, h["slot"], received.message.array)
                )  # fmt: skip
        self._watch_workers(state)

    def _check_full_stragglers(self, iteration: int, cycle_times: np.ndarray) -> None:
        """Full stragglers (T = inf) never answer: refuse an iteration they make undecodable."""
        answering = int(np.isfinite(cycle_times).sum())
        for index, slot in enumerate(self.layout.slots):
            if answering < self.decoder.needed(index):
                raise RunError(
                    f"{self.scheme}, iteration {iteration}: block {index} (s = {slot.stragglers}) needs "
                    f"{self.decoder.needed(index)} workers but only {answering} of {self.model.n_workers} "
                    f"answer (full stragglers); use a scheme with more redundancy or a lower failure probability"
                )

    # -- worker failure ---------------------------------------------------------------------

    def _watch_workers(self, state: _Iteration) -> None:
        """Notice dead ranks, serve reconnected ones; end the run when a slot can no longer be
        decoded."""
        changed = self.watch.poll(state.number)
        for rank in self.watch.rejoined(state.number):
            if rank in state.participants:  # its theta or its blocks may have been lost
                if not self.decoder.complete:
                    self.link.send(rank, MessageType.ITERATE, state.header, state.theta)
            else:  # set up for this run while cut off: it joins now
                self._join(rank, state)
        if changed:
            self._check_decodable(state)

    def _check_decodable(self, state: _Iteration) -> None:
        """RunError if a slot can no longer get N - s messages from the ranks that can still
        answer: live ones (sent this theta, or being set up to get it) and, with replacements,
        ranks awaiting one."""
        peers = self.link.peers.by_rank
        natural = self.settings.natural
        coming = {
            r for r, p in peers.items()
            if (p.state is _LIVE or p.state is _AWAITING)
            and (natural or math.isfinite(state.cycle_times[r]))
        }  # fmt: skip
        for index in range(len(self.layout.slots)):
            if self.decoder.decoded[index]:
                continue
            arrived = self.decoder.arrived[index]
            still = len(coming - arrived.keys())
            if len(arrived) + still < self.decoder.needed(index):
                self._undecodable(state, index, len(arrived), still)

    def _undecodable(self, state: _Iteration, index: int, have: int, still: int) -> None:
        slot, now = self.layout.slots[index], time.monotonic_ns()
        what = (
            f"block {index} (s = {slot.stragglers}) can no longer be decoded ({have} of the "
            f"{self.decoder.needed(index)} messages it needs arrived, {still} live workers still to answer)"
        )
        peers = self.link.peers.by_rank
        expired = sorted(
            r for r, p in peers.items() if p.state is PeerState.DEAD and 0 < p.replace_by_ns < now
        )
        if expired:
            raise RunError(
                f"{self.scheme}, iteration {state.number}: no replacement for worker(s) "
                f"{', '.join(map(str, expired))} within {self.settings.replace_timeout_s:g} s "
                f"(cluster.replace_timeout) and {what}"
            )
        dead = sorted(self.link.peers.dead)
        hows = "; ".join(f"worker {r}: {peers[r].how}" for r in dead)
        hint = (
            ""
            if self.watch.replaces
            else "; set cluster.on_failure = 'replace' to wait for replacement workers"
        )
        raise RunError(
            f"{self.scheme}, iteration {state.number}: worker(s) {', '.join(map(str, dead))} died "
            f"and {what[:-1]}; {hows}){hint}"
        )

    def _stalled(self, state: _Iteration, stall_s: float) -> None:
        """No usable message for stall_s; a replacement being awaited is bounded by its own
        timeout instead."""
        peers = self.link.peers.by_rank
        if any(p.state is _AWAITING for p in peers.values()):
            return
        missing = sorted(
            r for r in state.participants
            if peers[r].state is _LIVE
            and any(not done and r not in got for done, got in zip(self.decoder.decoded, self.decoder.arrived, strict=True))
        )  # fmt: skip
        raise RunError(
            f"{self.scheme}, iteration {state.number}: no usable message for {stall_s:g} s although "
            f"worker(s) {missing} are live and owe blocks (cluster.stall_timeout; 0 = derived)"
        )

    # -- records ----------------------------------------------------------------------------

    def _message_row(self, received: Received, outcome: Outcome | None, state: _Iteration) -> dict:
        """The messages.csv row of a BLOCK that _on_block accepted (header already checked)."""
        h = received.message.header
        worker_start, start = h["start_ns"], state.start
        return {
            "scheme": self.scheme, "iteration": h["iteration"], "slot": h["slot"],
            "worker": received.rank, "cycle_time": h["cycle_time"],
            "worker_start_s": (worker_start - start) / 1e9,
            "received_s": (h["received_ns"] - start) / 1e9,
            "deadline_s": (h["deadline_ns"] - worker_start) / 1e9,
            "send_s": (h["send_ns"] - worker_start) / 1e9,
            "arrival_s": (received.arrival_ns - start) / 1e9, "overrun_s": h["overrun_ns"] / 1e9,
            "status": "stale" if outcome is None else outcome.value,
        }  # fmt: skip

    def _record(
        self, state: _Iteration, measured: float, predicted: float, loss: float, error: float | None
    ) -> None:
        order = np.sort(state.cycle_times)
        unit = self.model.scale * self.settings.time_scale
        for index, slot in enumerate(self.layout.slots):
            needed = self.decoder.needed(index)
            self.recorder.blocks.writerow({
                "scheme": self.scheme, "iteration": state.number, "slot": index,
                "stragglers": slot.stragglers, "start": slot.start, "stop": slot.stop,
                "needed": needed, "decoded_s": state.decoded_at[index],
                "predicted_s": order[needed - 1] * slot.load * unit,
            })  # fmt: skip
        self.recorder.iterations.writerow({
            "scheme": self.scheme, "iteration": state.number, "measured_s": measured,
            "predicted_s": predicted, "ratio": measured / predicted if predicted > 0 else math.nan,
            "loss": loss / self.data.rows, "gradient_rel_error": error,
            "messages_used": state.counts[Outcome.USED], "messages_late": state.counts[Outcome.LATE],
            "messages_stale": state.stale, "overruns": state.overruns, "max_overrun_s": state.max_overrun,
        })  # fmt: skip
        self.recorder.flush_if_due()
