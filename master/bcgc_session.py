"""The BCGC family on the testbed (bcgc, single-bcgc, tandon, uncoded, ...): the part of the
session skeleton (master/session.py) that differs, which is how BLOCKs are decoded.

Each worker streams one BLOCK per slot of the layout; slot k is decoded from its first N - s
messages (master/decoder.py), and the gradient is complete when every slot is. The measured
runtime runs from the broadcast of theta to the decode of the last slot.

Worker failure (the liveness rules are RankWatch's, master/rank_watch.py): at the start of every
iteration and whenever a rank changes state the session checks every slot against the ranks
that can still answer: slots that can still get N - s messages keep decoding; when one cannot,
the run ends at once with a RunError naming the workers and the block (on_failure = "error").
With on_failure = "replace" a replacement is asked for as soon as a rank is dead (a local
process is started; remote workers are awaited), given the rank's plan, code rows and data, and
sent the current theta; an iteration that needs it waits for it (its measured runtime includes
the wait), at most `replace_timeout` seconds. A worker that reconnected after a dropped
connection gets what it may have missed again (SETUP, or this iteration's theta). A used message
with non-finite values is rejected, its sender declared faulty, and the slot decoded from the
others: never a nan gradient. An iteration in which no usable message arrives for the stall
limit (cluster.stall_timeout, or derived from the liveness window and the predicted iteration)
ends the run with a RunError naming the silent workers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bcgc_sim.model.codes import CodeBook, cyclic_support
from bcgc_sim.model.layout import Layout
from bcgc_sim.model.plans import Plan
from bcgc_sim.model.system import SystemModel
from bcgc_sim.problems import ProblemData
from bcgc_sim.results import RunRecorder
from bcgc_sim.wire.protocol import BLOCK_HEADER, MessageType, ProtocolError, check

from .decoder import IterationDecoder, Outcome
from .errors import RunError
from .link import Link
from .peers import PeerState, Received
from .rank_watch import WATCH_MS
from .session import OVERFLOW, Iteration, Session
from .settings import IterationResult, SessionSettings, no_dead_ranks

_BLOCK, _USED = MessageType.BLOCK, Outcome.USED  # looked up per message
_LIVE, _AWAITING = PeerState.LIVE, PeerState.AWAITING


@dataclass
class _Iteration(Iteration):
    # every BLOCK of this run with its outcome (None: stale); tallied after the clock stopped
    seen: list[tuple[Received, Outcome | None]] = field(default_factory=list)
    counts: dict = field(default_factory=lambda: {o: 0 for o in Outcome})
    decoded_at: list[float] = field(default_factory=list)  # seconds from the broadcast, per slot


class SchemeSession(Session):
    """Runs one slot plan (Plan, its Layout and codes) on the connected workers."""

    def __init__(
        self,
        link: Link,
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
        self.layout, self.codes = layout, codes
        super().__init__(link, scheme, plan, model, data, settings, recorder, dead_ranks, replace)

    def start(self) -> None:
        n, coordinates = self.model.n_workers, self.data.coordinates
        self.decoder = IterationDecoder(self.layout.slots, n, coordinates, self.codes)

    def replaces(self, settings: SessionSettings) -> bool:
        return settings.on_failure == "replace"

    def plan_fields(self, rank: int) -> dict:
        n = self.model.n_workers
        slots = self.layout.slots
        levels = sorted({slot.stragglers for slot in slots})
        return {
            "slots": [[s.start, s.stop, s.stragglers, s.load, s.partition] for s in slots],
            "partitions": {k: list(v) for k, v in self.layout.partitions.items()},
            "code_rows": {
                str(s): self.codes.matrix(s)[rank, cyclic_support(rank, s, n)].tolist()
                for s in levels
            },
        }

    def new_iteration(self, number, theta, cycle_times, stall_s) -> _Iteration:
        state = _Iteration(number, theta, cycle_times, stall_s)
        state.decoded_at = [math.nan] * len(self.layout.slots)
        return state

    def check_cycle_times(self, number: int, cycle_times: np.ndarray) -> None:
        """Full stragglers (T = inf) never answer: refuse an iteration they make undecodable."""
        answering = int(np.isfinite(cycle_times).sum())
        for index, slot in enumerate(self.layout.slots):
            needed = self.decoder.needed(index)
            if answering < needed:
                raise RunError(
                    f"{self.scheme}, iteration {number}: block {index} (s = {slot.stragglers}) "
                    f"needs {needed} workers but only {answering} of {self.model.n_workers} "
                    "answer (full stragglers); use a scheme with more redundancy or a lower "
                    "failure probability"
                )

    # -- receiving ---------------------------------------------------------------------------

    def receive_until_done(self, state: _Iteration) -> int:
        """Receive and decode until every slot is decoded from finite values."""
        try:
            while True:
                while not self.decoder.complete:
                    self.watch_if_due(state)
                    received = self.receive(state, WATCH_MS)
                    if received is not None and self._on_block(received, state):
                        state.last_progress = time.monotonic()
                end = time.monotonic_ns()
                # after the clock stopped: one check of the whole gradient, not one per message
                if np.isfinite(self.decoder.gradient).all():
                    return end
                self._drop_non_finite(state)
        except RunError:
            self._count_rejections(state)  # what was rejected is counted even when the run ends
            raise

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
            self.send_theta(rank, state)

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
            raise RunError(f"{self.scheme}, iteration {state.number}: {OVERFLOW}")
        for rank in sorted(faulty):
            self.watch.declare_faulty(rank, "sent non-finite values", state.number)
        self.decoder.reset()
        for index, (received, outcome) in enumerate(state.seen):
            if outcome is not None and outcome is not Outcome.REJECTED:
                slot, values = received.message.header["slot"], received.message.array
                state.seen[index] = (received, self.decoder.offer(received.rank, slot, values))
        self.watch_workers(state)

    # -- worker failure ----------------------------------------------------------------------

    def serve_rejoined(self, rank: int, state: _Iteration) -> None:
        if rank in state.participants:  # its theta or its blocks may have been lost
            if not self.decoder.complete:
                self.send_theta(rank, state)
        else:  # set up for this run while cut off: it joins now
            self._join(rank, state)

    def ranks_changed(self, state: _Iteration) -> None:
        self.check_answering(state)

    def check_answering(self, state: _Iteration) -> None:
        """RunError if a slot can no longer get N - s messages from the ranks that can still
        answer: live ones (sent this theta, or being set up to get it) and, with replacements,
        ranks awaiting one."""
        coming = self.answering(state, self.link.peers.by_rank, awaiting=True)
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
            f"{self.decoder.needed(index)} messages it needs arrived, {still} live workers "
            "still to answer)"
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

    def stalled(self, state: _Iteration) -> None:
        """No usable message for the stall limit; a replacement being awaited is bounded by its
        own timeout instead."""
        peers = self.link.peers.by_rank
        if any(p.state is _AWAITING for p in peers.values()):
            return
        decoded, arrived = self.decoder.decoded, self.decoder.arrived
        missing = sorted(
            r
            for r in state.participants
            if peers[r].state is _LIVE
            and any(not done and r not in got for done, got in zip(decoded, arrived, strict=True))
        )
        raise RunError(
            f"{self.scheme}, iteration {state.number}: no usable message for {state.stall_s:g} s "
            f"although worker(s) {missing} are live and owe blocks (cluster.stall_timeout; "
            "0 = derived)"
        )

    # -- after the clock stopped -------------------------------------------------------------

    def conclude(self, state: _Iteration, end_ns: int) -> np.ndarray:
        self._tally(state)
        self.recorder.messages.writerows(
            self.message_row(
                received,
                state,
                received.message.header["slot"],
                received.message.header["deadline_ns"],
                received.message.header["overrun_ns"] / 1e9,
                "stale" if outcome is None else outcome.value,
            )
            for received, outcome in state.seen
        )
        return self.decoder.gradient.copy()

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

    def record(self, state: _Iteration, result: IterationResult, gradient, true_gradient):
        order = np.sort(state.cycle_times)
        unit = self.model.scale * self.settings.time_scale
        for index, slot in enumerate(self.layout.slots):
            needed = self.decoder.needed(index)
            self.block_row(
                state,
                index,
                slot.stragglers,
                (slot.start, slot.stop),
                needed,
                state.decoded_at[index],
                order[needed - 1] * slot.load * unit,
            )
        return state.counts[Outcome.USED], state.counts[Outcome.LATE]
