"""The frame every protocol's session shares: set-up, one iteration, and the rows it records.

Per iteration (`Session.iterate`) the master regenerates every worker's T_n from the seed, so
each measured runtime has its exact prediction beside it: time_scale * (M C / N) * R(plan, T)
(nothing is predicted in natural mode). It sends theta (ITERATE) to every live rank set up for
this run and receives until the protocol says the gradient is complete; meanwhile it checks the
ranks (RankWatch) every WATCH_INTERVAL_NS and ends the run (RunError) when no usable message came
for the stall limit. The measured runtime runs from the broadcast to the protocol's last
decode. After the clock stopped it compares the gradient with the uncoded one (run.check) or
computes the loss, and records the iteration: iterations.csv, blocks.csv, messages.csv.

A protocol provides only what differs, as a subclass: the SETUP fields of its plan
(`plan_fields`), its message handling and stop rule (`receive_until_done`), what it does when
ranks change state or reconnect (`ranks_changed`, `serve_rejoined`), and its own rows. The
BCGC family (bcgc, tandon, uncoded, ...): master/bcgc_session.py; partial-gc:
master/partial_session.py. Everything works against a `Link` (master/link.py): the ZeroMQ
WorkerLink, or an in-process fake in tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bcgc_sim.model.stragglers import iteration_cycle_times
from bcgc_sim.model.system import SystemModel
from bcgc_sim.problems import ProblemData, full_gradient, loss_at, relative_error
from bcgc_sim.results import RunRecorder
from bcgc_sim.wire.protocol import MessageType

from .link import Link
from .peers import PeerState, Received
from .rank_watch import WATCH_INTERVAL_NS, RankWatch
from .settings import (
    IterationResult,
    SessionSettings,
    common_setup_fields,
    no_dead_ranks,
    stall_limit_s,
)

OVERFLOW = (
    "the decoded gradient is not finite (overflow: theta diverged?); lower problem.learning_rate"
)


@dataclass
class Iteration:
    """Book-keeping of the iteration in progress (times: monotonic; a protocol adds its own)."""

    number: int
    theta: np.ndarray
    cycle_times: np.ndarray  # T_n of every worker (nan in natural mode, inf: a full straggler)
    stall_s: float  # no usable message for this long ends the run
    start: int = 0  # ns: the broadcast of theta
    header: dict = field(default_factory=dict)  # this iteration's ITERATE header
    participants: set[int] = field(default_factory=set)  # ranks sent this iteration's theta
    stale: int = 0  # messages of an older iteration or scheme, dropped
    overruns: int = 0  # used messages whose compute ended after their deadline
    max_overrun: float = 0.0  # seconds
    last_progress: float = 0.0  # s: the last usable message
    next_watch: int = 0  # ns: the next check of the ranks


class Session:
    """Runs one plan on the connected workers; rows go to `recorder`.

    `dead_ranks()` reports ranks the cluster knows are gone (a local process that exited);
    `replace(rank)` starts a replacement for a dead rank (a local process) or does nothing
    (remote workers: an operator or launcher starts one, and its READY takes the place).
    """

    def __init__(
        self,
        link: Link,
        scheme: str,
        plan,
        model: SystemModel,
        data: ProblemData,
        settings: SessionSettings,
        recorder: RunRecorder,
        dead_ranks: Callable[[], set[int]] = no_dead_ranks,
        replace: Callable[[int], None] = lambda rank: None,
    ) -> None:
        self.link, self.scheme, self.plan = link, scheme, plan
        self.model, self.data, self.settings, self.recorder = model, data, settings, recorder
        self.run_id = f"{scheme}-{time.monotonic_ns()}"
        self.ns_per_load = settings.time_scale * model.scale * 1e9
        self.watch = RankWatch(
            link,
            settings,
            scheme,
            self.run_id,
            self.setup_header,
            dead_ranks,
            replace,
            self.replaces(settings),
        )
        self.events = self.watch.events  # worker deaths, replacements, reconnections
        self.affinity = self.watch.affinity
        self.longest_s = 0.0  # the longest iteration so far (natural mode's stall limit)
        self.start()

    # -- what a protocol provides ------------------------------------------------------------

    def start(self) -> None:
        """Set up the protocol's own state (its decoder first)."""
        raise NotImplementedError

    def replaces(self, settings: SessionSettings) -> bool:
        """True if the protocol takes replacement workers for dead ranks."""
        return False

    def plan_fields(self, rank: int) -> dict:
        """The SETUP fields of rank's share of the plan."""
        raise NotImplementedError

    def new_iteration(
        self, number: int, theta: np.ndarray, cycle_times: np.ndarray, stall_s: float
    ) -> Iteration:
        return Iteration(number, theta, cycle_times, stall_s)

    def check_cycle_times(self, number: int, cycle_times: np.ndarray) -> None:
        """Refuse an iteration that the drawn cycle times make impossible (RunError)."""

    def check_answering(self, state: Iteration) -> None:
        """Refuse an iteration that the ranks that can still answer cannot complete."""

    def receive_until_done(self, state: Iteration) -> int:
        """Receive and handle messages until the gradient is complete; the monotonic time (ns)
        of the last decode."""
        raise NotImplementedError

    def conclude(self, state: Iteration, end_ns: int) -> np.ndarray:
        """Book-keeping after the clock stopped; the decoded gradient, shape (L,)."""
        raise NotImplementedError

    def serve_rejoined(self, rank: int, state: Iteration) -> None:
        """Give a reconnected worker what it may have missed."""

    def ranks_changed(self, state: Iteration) -> None:
        """A rank changed state (died, replaced, ...): end the run if the iteration is lost."""

    def stalled(self, state: Iteration) -> None:
        """No usable message for state.stall_s: end the run (RunError), or return to go on."""
        raise NotImplementedError

    def record(
        self,
        state: Iteration,
        result: IterationResult,
        gradient: np.ndarray,
        true_gradient: np.ndarray | None,
    ) -> tuple[int, int]:
        """Write the protocol's own rows (and complete `result`); (messages used, late)."""
        raise NotImplementedError

    # -- set-up ------------------------------------------------------------------------------

    def setup_header(self, rank: int) -> dict:
        fields = common_setup_fields(
            self.settings, self.model, self.data, self.run_id, rank, self.ns_per_load
        )
        return fields | self.plan_fields(rank)

    def setup(self, timeout_s: float = 60.0) -> None:
        """Send every live worker its share of the plan; wait for their SETUP_OK."""
        self.watch.set_up(timeout_s)

    def release(self) -> None:
        """Drop the last iteration's messages: they may view a worker's shared memory, which
        this process keeps mapped while they live (the runner calls this when a scheme ends)."""
        self.decoder.reset()

    # -- one iteration -----------------------------------------------------------------------

    def predicted_seconds(self, cycle_times: np.ndarray) -> float:
        raw = float(self.plan.raw_runtime(cycle_times[None, :])[0])
        return raw * self.model.scale * self.settings.time_scale

    def iterate(self, iteration: int, theta: np.ndarray) -> tuple[IterationResult, np.ndarray]:
        """One iteration at theta; returns its record and the decoded gradient, shape (L,)."""
        n = self.model.n_workers
        if self.settings.natural:  # nothing injected: no cycle times to predict from
            cycle_times = np.full(n, math.nan)
            predicted = math.nan
            expected = max(self.longest_s, 10 * self.settings.window_s)
        else:
            seed = self.settings.seed
            cycle_times = iteration_cycle_times(self.model.distribution, seed, iteration, n)
            self.check_cycle_times(iteration, cycle_times)
            predicted = expected = self.predicted_seconds(cycle_times)
        self.decoder.reset()
        state = self.new_iteration(
            iteration, theta, cycle_times, stall_limit_s(self.settings, expected)
        )
        state.participants = self.watch.begin_iteration(iteration)
        self.check_answering(state)
        state.start, state.header = self.watch.broadcast_theta(iteration, theta, state.participants)
        state.last_progress = time.monotonic()
        state.next_watch = state.start + WATCH_INTERVAL_NS  # the first check after 20 ms: timed
        end = self.receive_until_done(state)
        measured = (end - state.start) / 1e9
        self.longest_s = max(self.longest_s, measured)
        # book-keeping and recording are not part of the runtime
        gradient = self.conclude(state, end)
        if self.settings.check:
            true_gradient, loss = full_gradient(self.data, theta)
            error = relative_error(gradient, true_gradient)
        else:
            true_gradient, loss, error = None, loss_at(self.data, theta), None
        result = IterationResult(
            measured, predicted, loss / self.data.rows, error, state.stale, state.overruns
        )
        used, late = self.record(state, result, gradient, true_gradient)
        self.recorder.iterations.writerow(
            {
                "scheme": self.scheme,
                "iteration": iteration,
                "measured_s": measured,
                "predicted_s": predicted,
                "ratio": measured / predicted if predicted > 0 else math.nan,
                "loss": result.loss,
                "gradient_rel_error": error,
                "messages_used": used,
                "messages_late": late,
                "messages_stale": state.stale,
                "overruns": state.overruns,
                "max_overrun_s": state.max_overrun,
            }
        )
        self.recorder.flush_if_due()
        return result, gradient

    # -- steps the protocols' receive loops share ---------------------------------------------

    def watch_if_due(self, state: Iteration) -> None:
        if time.monotonic_ns() >= state.next_watch:
            self.watch_workers(state)
            state.next_watch = time.monotonic_ns() + WATCH_INTERVAL_NS

    def receive(self, state: Iteration, wait_ms: int) -> Received | None:
        """The next message within wait_ms, or None (then the stall limit is checked)."""
        received = self.link.receive(wait_ms)
        if received is None and time.monotonic() - state.last_progress > state.stall_s:
            self.stalled(state)
        return received

    def watch_workers(self, state: Iteration) -> None:
        """Notice dead ranks, serve reconnected ones; the protocol judges what a change costs."""
        changed = self.watch.poll(state.number)
        for rank in self.watch.rejoined(state.number):
            self.serve_rejoined(rank, state)
        if changed:
            self.ranks_changed(state)

    def send_theta(self, rank: int, state: Iteration) -> None:
        """This iteration's ITERATE to one rank (again, or for the first time)."""
        self.link.send(rank, MessageType.ITERATE, state.header, state.theta)

    def answering(self, state: Iteration, ranks, awaiting: bool = False) -> set[int]:
        """The ranks among `ranks` that can still answer this iteration: live (or, with
        `awaiting`, awaiting a replacement) and not full stragglers."""
        peers = self.link.peers.by_rank
        states = (PeerState.LIVE, PeerState.AWAITING) if awaiting else (PeerState.LIVE,)
        natural = self.settings.natural
        return {
            r
            for r in ranks
            if peers[r].state in states and (natural or math.isfinite(state.cycle_times[r]))
        }

    # -- records -----------------------------------------------------------------------------

    def message_row(
        self,
        received: Received,
        state: Iteration,
        slot: int,
        due_ns: int,
        overrun_s: float,
        status: str,
    ) -> dict:
        """The messages.csv row of a checked answer (its header has the iteration fields)."""
        h = received.message.header
        worker_start, start = h["start_ns"], state.start
        return {
            "scheme": self.scheme,
            "iteration": h["iteration"],
            "slot": slot,
            "worker": received.rank,  # the sender's identity, never the header's claim
            "cycle_time": h["cycle_time"],
            "worker_start_s": (worker_start - start) / 1e9,
            "received_s": (h["received_ns"] - start) / 1e9,
            "deadline_s": (due_ns - worker_start) / 1e9,
            "send_s": (h["send_ns"] - worker_start) / 1e9,
            "arrival_s": (received.arrival_ns - start) / 1e9,
            "overrun_s": overrun_s,
            "status": status,
        }

    def block_row(
        self,
        state: Iteration,
        slot: int,
        stragglers: int,
        bounds: tuple[int, int],
        needed: int,
        decoded_s: float,
        predicted_s: float,
    ) -> None:
        """One blocks.csv row: when a slot (or the whole partial-gc gradient) was decoded."""
        self.recorder.blocks.writerow(
            {
                "scheme": self.scheme,
                "iteration": state.number,
                "slot": slot,
                "stragglers": stragglers,
                "start": bounds[0],
                "stop": bounds[1],
                "needed": needed,
                "decoded_s": decoded_s,
                "predicted_s": predicted_s,
            }
        )
