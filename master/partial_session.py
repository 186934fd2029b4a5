"""One partial-gc plan on the testbed: the master's side of variant R1 (bcgc_sim.partial.decoder).

Per iteration the master broadcasts theta, feeds every NOTICE to `R1Decoder.notice`, and stops
  * exact (partial-gc): at the NOTICE after which every chunk has l processed copies;
  * approximate (partial-gc-approx): at the plan's deadline (seconds = raw deadline x
    time_scale x M C / N from the broadcast), or earlier when the estimated NMSE reaches the
    plan's target or the gradient is exact.
At the stop it sends COMBINE (chunks, beta: shape (n_j, l) float64) to every worker in
`R1Decoder.stop()` and ABANDON to the others, then adds each UPLOAD (`R1Decoder.offer`) until
every chosen worker has uploaded. The measured runtime runs from the broadcast to the last
UPLOAD; the prediction (PartialPlan.raw_runtime for the same regenerated T) is the stop time
alone, so their difference is the COMBINE / UPLOAD round trip, which is recorded per iteration
(partial.csv: round_trip_s) and never hidden.

Worker failure (spec/partial-gc.md A10; the liveness rules are the BCGC session's RankWatch): a
rank known dead stays dead for every later iteration and scheme. Before the stop a dead worker's
copies are dropped (its notices are replayed away) and the iteration goes on while every chunk
can still get l copies from live, answering workers; otherwise, and whenever a worker dies
between the stop and its upload (R1 keeps the processed chunks only in the worker's memory), the
run ends with a RunError. An UPLOAD with non-finite values ends it too (rejected and counted).
No replacement workers (cluster.on_failure = "replace" is a BCGC feature); a worker that
registers for a dead rank is set up and takes part from the next iteration. A worker that
reconnected after a dropped connection gets this iteration's theta again (before the stop) or its
COMBINE again (after it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bcgc_sim.model.layout import partition_bounds
from bcgc_sim.model.stragglers import iteration_cycle_times
from bcgc_sim.model.system import SystemModel
from bcgc_sim.partial.decoder import Outcome, R1Decoder
from bcgc_sim.partial.plan import PartialPlan
from bcgc_sim.problems import ProblemData, full_gradient, loss_at, relative_error
from bcgc_sim.results import PartialRow, RunRecorder
from bcgc_sim.wire.protocol import (
    PARTIAL_PROTOCOL,
    MessageType,
    ProtocolError,
    check,
    header_spec,
)

from .session import (
    WATCH_INTERVAL_NS,
    WATCH_MS,
    IterationResult,
    RankWatch,
    RunError,
    SessionSettings,
    common_setup_fields,
    no_dead_ranks,
    stall_limit_s,
)
from .transport import PeerState, Received, WorkerLink

log = logging.getLogger("bcgc.master")
_COMMON = dict(run=str, iteration=int, cycle_time=float, start_ns=int, received_ns=int)
NOTICE_HEADER = header_spec(
    chunk=int, position=int, deadline_ns=int, overrun_ns=int, send_ns=int, **_COMMON
)
UPLOAD_HEADER = header_spec(combine_ns=int, send_ns=int, **_COMMON)


@dataclass
class _Iteration:
    number: int
    start: int
    cycle_times: np.ndarray
    header: dict = field(default_factory=dict)  # this iteration's ITERATE header
    participants: set[int] = field(default_factory=set)  # ranks sent this iteration's theta
    combines: dict[int, tuple[dict, np.ndarray]] = field(default_factory=dict)  # sent at the stop
    notices: list[tuple[int, int]] = field(default_factory=list)  # used (worker, chunk)
    rows: list[dict] = field(default_factory=list)
    stop_ns: int | None = None
    reason: str = ""
    nmse_estimated: float = math.nan
    covered: int = 0
    stale: int = 0
    overruns: int = 0
    max_overrun: float = 0.0
    notices_used: int = 0
    notices_late: int = 0
    uploads: int = 0
    downlink: int = 0


class PartialSession:
    """Runs one PartialPlan on the connected workers; the interface of SchemeSession
    (setup, iterate, scheme, affinity, events), rows to `recorder` (+ partial.csv)."""

    def __init__(
        self,
        link: WorkerLink,
        scheme: str,
        plan: PartialPlan,
        model: SystemModel,
        data: ProblemData,
        settings: SessionSettings,
        recorder: RunRecorder,
        dead_ranks: Callable[[], set[int]] = no_dead_ranks,
        replace: Callable[[int], None] = lambda rank: None,
    ) -> None:
        if plan.n_workers != model.n_workers or plan.coordinates != data.coordinates:
            raise ValueError("the plan was made for another number of workers or coordinates")
        self.link, self.scheme, self.plan = link, scheme, plan
        self.model, self.data, self.settings, self.recorder = model, data, settings, recorder
        self.run_id = f"{scheme}-{time.monotonic_ns()}"
        self.decoder = R1Decoder(
            plan.assignment, plan.ordering, data.coordinates, plan.parts, seed=settings.seed
        )
        self.unit_s = settings.time_scale * model.scale  # seconds per raw unit
        self.ns_per_load = self.unit_s * 1e9
        self.bounds = partition_bounds(data.rows, model.n_workers)
        self.watch = RankWatch(  # `replace` is accepted for symmetry and not used (R1)
            link, settings, scheme, self.run_id, self.setup_header, dead_ranks, replace,
            replaces=False,
        )  # fmt: skip
        self.events = self.watch.events
        self.affinity = self.watch.affinity
        self.longest_s = 0.0  # the longest iteration so far (natural mode's stall limit)
        self.table = recorder.table("partial.csv", PartialRow)

    # -- set-up -----------------------------------------------------------------------------
    def setup_header(self, rank: int) -> dict:
        fields = common_setup_fields(
            self.settings, self.model, self.data, self.run_id, rank, self.ns_per_load
        )
        return fields | {
            "protocol": PARTIAL_PROTOCOL, "chunk_load": self.plan.chunk_load,
            "order": list(self.plan.ordering[rank]), "bounds": list(self.bounds),
            "parts": self.plan.parts,
        }  # fmt: skip

    def setup(self, timeout_s: float = 60.0) -> None:
        """Send every live worker its order and chunks; wait for their SETUP_OK."""
        self.watch.set_up(timeout_s)

    def release(self) -> None:
        """Drop the last iteration's uploads: they may view a worker's shared memory, which
        this process keeps mapped while they live (the runner calls this when a scheme ends)."""
        self.decoder.reset()

    # -- one iteration ----------------------------------------------------------------------
    def iterate(self, iteration: int, theta: np.ndarray) -> tuple[IterationResult, np.ndarray]:
        """One iteration at theta; returns its record and the decoded gradient, shape (L,)."""
        n, plan = self.model.n_workers, self.plan
        if self.settings.natural:  # nothing injected: no cycle times to predict from
            cycle_times = np.full(n, math.nan)
            predicted, predicted_nmse = math.nan, math.nan
            expected = max(self.longest_s, 10 * self.settings.window_s)
        else:
            cycle_times = iteration_cycle_times(
                self.model.distribution, self.settings.seed, iteration, n
            )
            predicted = float(plan.raw_runtime(cycle_times[None])[0]) * self.unit_s
            predicted_nmse = float(plan.nmse_at_stop(cycle_times[None])[0])
            expected = predicted
        stall_s = stall_limit_s(self.settings, expected)
        self.decoder.reset()
        state = _Iteration(iteration, 0, cycle_times)
        state.participants = self.watch.begin_iteration(iteration)
        if not plan.approximate:
            self._check_reachable(state, "")
        start, state.header = self.watch.broadcast_theta(iteration, theta, state.participants)
        state.start = start
        stop_at = (
            None if plan.deadline is None else start + round(plan.deadline * self.unit_s * 1e9)
        )
        last_progress = time.monotonic()
        next_watch = start + WATCH_INTERVAL_NS
        while state.stop_ns is None:  # compute phase: NOTICEs until the stop rule fires
            now = time.monotonic_ns()
            if now >= next_watch:
                self._watch_workers(state, theta)
                next_watch = now + WATCH_INTERVAL_NS
            if stop_at is not None and now >= stop_at:
                self._watch_workers(state, theta)  # the workers chosen now must be alive
                self._stop(state, "deadline")
                break
            # receive timeouts have ms resolution: in the last millisecond before a deadline, spin
            # (timeout 0)
            wait_ms = WATCH_MS if stop_at is None else min(WATCH_MS, (stop_at - now) // 1_000_000)
            received = self.link.receive(int(wait_ms))
            if received is None:
                self._check_stall(state, last_progress, stall_s)
                continue
            if stop_at is not None and received.arrival_ns >= stop_at:
                self._watch_workers(state, theta)
                self._stop(state, "deadline")  # this message came after the deadline
                self._handle(received, state)
                break
            if self._handle(received, state):
                last_progress = time.monotonic()
                if self._stop_rule() is not None:
                    self._watch_workers(state, theta)  # the workers chosen now must be alive
                    reason = self._stop_rule()  # (a death may have taken copies away)
                    if reason is not None:
                        self._stop(state, reason)
        last_progress = time.monotonic()
        next_watch = time.monotonic_ns() + WATCH_INTERVAL_NS
        while not self.decoder.complete:  # upload phase: one UPLOAD per chosen worker
            if time.monotonic_ns() >= next_watch:
                self._watch_workers(state, theta)
                next_watch = time.monotonic_ns() + WATCH_INTERVAL_NS
            received = self.link.receive(WATCH_MS)
            if received is None:
                self._check_stall(state, last_progress, stall_s)
                continue
            if self._handle(received, state):
                last_progress = time.monotonic()
        end = time.monotonic_ns()
        measured = (end - start) / 1e9
        self.longest_s = max(self.longest_s, measured)
        round_trip = (end - state.stop_ns) / 1e9
        self.recorder.messages.writerows(state.rows)  # after the clock stopped: not part of it
        gradient = self.decoder.gradient()
        if not np.isfinite(gradient).all():
            self._non_finite(state)
        error = nmse = None
        if self.settings.check:
            true_gradient, loss = full_gradient(self.data, theta)
            error = relative_error(gradient, true_gradient)
            norm = float(true_gradient @ true_gradient)
            difference = gradient - true_gradient
            nmse = float(difference @ difference) / norm if norm > 0 else 0.0
        else:
            loss = loss_at(self.data, theta)
        self._record(state, measured, predicted, loss, error, nmse, round_trip, predicted_nmse)
        result = IterationResult(
            measured, predicted, loss / self.data.rows, error, state.stale, state.overruns,
            nmse=nmse, round_trip_s=round_trip,
        )  # fmt: skip
        return result, gradient

    def _stop_rule(self) -> str | None:
        """Why to stop now ("exact", "nmse"), or None; the deadline is the loop's."""
        if self.decoder.exact_ready:
            return "exact"
        target = self.plan.nmse_target
        if target > 0 and self.decoder.estimated_nmse <= target + 1e-12:
            return "nmse"
        return None

    def _stop(self, state: _Iteration, reason: str) -> None:
        """Freeze S_i: COMBINE to the workers whose copies are used, ABANDON to the rest."""
        state.stop_ns, state.reason = time.monotonic_ns(), reason  # the round trip starts here
        coefficients = self.decoder.stop()
        state.nmse_estimated = self.decoder.estimated_nmse
        state.covered = int(np.count_nonzero(self.decoder.counts >= self.plan.parts))
        base = {"run": self.run_id, "iteration": state.number}
        for worker, c in coefficients.items():
            beta = np.ascontiguousarray(c.beta, dtype=np.float64)
            header = {**base, "chunks": list(c.chunks)}
            state.combines[worker] = (header, beta)  # sent again if its connection drops
            self.link.send(worker, MessageType.COMBINE, header, beta)
            state.downlink += beta.size
        for worker in sorted(state.participants):
            if worker not in coefficients and worker not in self.link.dead:
                self.link.send(worker, MessageType.ABANDON, base)

    def _handle(self, received: Received, state: _Iteration) -> bool:
        """NOTICE, UPLOAD or FAILED of a worker; True if it advanced the protocol."""
        message = received.message
        if message.kind is MessageType.FAILED and message.header.get("run") == self.run_id:
            raise RunError(
                f"{self.scheme}, iteration {state.number}: worker {received.rank} failed: "
                f"{message.header.get('reason')}"
            )  # a COMBINE it could not compute; a failed set-up (no run) ends it below
        if message.kind not in (MessageType.NOTICE, MessageType.UPLOAD):
            if self.watch.on_setup_reply(received, state.number):
                return False  # set up: it takes part from the next iteration
            self.watch.unexpected(received)
            return False
        row = self._message_row(received, state)
        if row is None:
            return False
        state.rows.append(row)
        if row["status"] == "stale":
            state.stale += 1
            return False
        worker = received.rank
        if message.kind is MessageType.NOTICE:
            outcome = self.decoder.notice(worker, message.header["chunk"])
            row["status"] = outcome.value
            if outcome is Outcome.USED:
                state.notices.append((worker, message.header["chunk"]))
                state.notices_used += 1
                state.overruns += row["overrun_s"] > 0
                state.max_overrun = max(state.max_overrun, row["overrun_s"])
            elif outcome is Outcome.LATE:
                state.notices_late += 1
            else:  # rare: counted by reason
                reason = "duplicate" if outcome is Outcome.DUPLICATE else "unexpected-chunk"
                self.link.reject(reason, worker, f"NOTICE of chunk {message.header['chunk']}")
            return outcome is Outcome.USED
        outcome = self.decoder.offer(worker, message.array)
        row["status"] = outcome.value
        state.uploads += outcome is Outcome.USED
        if outcome is Outcome.DUPLICATE or outcome is Outcome.REJECTED:
            reason = "duplicate" if outcome is Outcome.DUPLICATE else "unexpected-upload"
            self.link.reject(reason, worker, f"UPLOAD, shape {list(message.array.shape)}")
        return outcome is Outcome.USED

    def _message_row(self, received: Received, state: _Iteration) -> dict | None:
        message, h = received.message, received.message.header
        try:
            if message.kind is MessageType.NOTICE:
                check(h, NOTICE_HEADER)
            else:
                check(h, UPLOAD_HEADER)
                if message.array is None:
                    raise ProtocolError("UPLOAD without values")
        except ProtocolError as exc:
            self.link.reject("malformed", received.rank, f"{message.kind.name}: {exc}")
            return None
        stale = h["run"] != self.run_id or h["iteration"] != state.number
        worker_start, start = h["start_ns"], state.start
        notice = message.kind is MessageType.NOTICE
        due = h["deadline_ns"] if notice else h["combine_ns"]
        return {
            "scheme": self.scheme, "iteration": h["iteration"],
            "slot": h["position"] - 1 if notice else self.plan.storage,
            "worker": received.rank,  # the sender's identity, never the header's claim
            "cycle_time": h["cycle_time"], "worker_start_s": (worker_start - start) / 1e9,
            "received_s": (h["received_ns"] - start) / 1e9,
            "deadline_s": (due - worker_start) / 1e9, "send_s": (h["send_ns"] - worker_start) / 1e9,
            "arrival_s": (received.arrival_ns - start) / 1e9,
            "overrun_s": h["overrun_ns"] / 1e9 if notice else 0.0,
            "status": "stale" if stale else "",
        }  # fmt: skip

    # -- failures ---------------------------------------------------------------------------
    def _answering(self, state: _Iteration) -> set[int]:
        """Ranks that can still send this iteration's notices: sent its theta, live, not full
        stragglers."""
        peers = self.link.peers.by_rank
        return {
            r for r in state.participants
            if peers[r].state is PeerState.LIVE
            and (self.settings.natural or math.isfinite(state.cycle_times[r]))
        }  # fmt: skip

    def _check_reachable(self, state: _Iteration, cause: str) -> None:
        """Exact mode: every chunk must keep l live, answering holders; else a RunError."""
        answering = self._answering(state)
        a, parts = self.plan.assignment, self.plan.parts
        for chunk in range(a.n_chunks):
            holders = sorted(set(a.holders(chunk).tolist()) & answering)
            if len(holders) < parts:
                raise RunError(
                    f"{self.scheme}, iteration {state.number}: {cause}chunk {chunk} can get only "
                    f"{len(holders)} of the l = {parts} processed copies the exact gradient needs "
                    f"(live, answering holders: {holders}); use partial-gc-approx, a larger "
                    "partial.storage or fewer failures"
                )

    def _watch_workers(self, state: _Iteration, theta: np.ndarray) -> None:
        """Notice dead ranks: drop their copies before the stop, end the run after it; give a
        reconnected worker what it may have missed."""
        changed = self.watch.poll(state.number)
        for rank in self.watch.rejoined(state.number):
            if rank not in state.participants:
                continue  # set up while cut off: it takes part from the next iteration
            if state.stop_ns is None:
                self.link.send(rank, MessageType.ITERATE, state.header, theta)
            elif rank in state.combines and rank not in self.decoder.uploads:
                header, beta = state.combines[rank]
                self.link.send(rank, MessageType.COMBINE, header, beta)
        if not changed:
            return
        dead = self.link.peers.dead
        if state.stop_ns is None:  # R1: a dead worker can never upload; forget its copies
            if any(w in dead for w, _ in state.notices):
                state.notices = [(w, c) for w, c in state.notices if w not in dead]
                self.decoder.reset()
                for worker, chunk in state.notices:
                    self.decoder.notice(worker, chunk)
            if not self.plan.approximate:
                names = ", ".join(str(r) for r in sorted(dead))
                self._check_reachable(state, f"worker(s) {names} died; ")
            return
        missing = sorted(
            w for w in self.decoder.coefficients if w in dead and w not in self.decoder.uploads
        )  # fmt: skip
        if missing:
            raise RunError(
                f"{self.scheme}, iteration {state.number}: worker(s) {missing} died after the stop "
                "and before uploading; variant R1 cannot recover (its processed chunks were only "
                "in that worker's memory, spec/partial-gc.md A10)"
            )

    def _non_finite(self, state: _Iteration) -> None:
        """The decoded gradient is not finite: reject the UPLOADs with non-finite values,
        declare their senders faulty, and end the run (R1 cannot recover the chunks)."""
        faulty = sorted(
            w for w, values in self.decoder.uploads.items() if not np.isfinite(values).all()
        )
        for worker in faulty:
            self.link.reject("non-finite", worker, "UPLOAD")
            self.watch.declare_faulty(worker, "sent non-finite values", state.number)
        cause = (
            f"worker(s) {faulty} sent non-finite values; variant R1 cannot recover their chunks"
            if faulty
            else "the decoded gradient is not finite (overflow: theta diverged?); lower problem.learning_rate"
        )
        raise RunError(f"{self.scheme}, iteration {state.number}: {cause}")

    def _check_stall(self, state: _Iteration, last_progress: float, stall_s: float) -> None:
        if time.monotonic() - last_progress > stall_s:
            phase = "NOTICE" if state.stop_ns is None else "UPLOAD"
            raise RunError(
                f"{self.scheme}, iteration {state.number}: no usable {phase} for {stall_s:g} s "
                f"although worker(s) {sorted(self._answering(state))} are live "
                "(cluster.stall_timeout; 0 = derived)"
            )

    # -- records ----------------------------------------------------------------------------
    def _record(
        self,
        state: _Iteration,
        measured: float,
        predicted: float,
        loss: float,
        error: float | None,
        nmse: float | None,
        round_trip: float,
        predicted_nmse: float,
    ) -> None:
        plan = self.plan
        self.recorder.blocks.writerow({
            "scheme": self.scheme, "iteration": state.number, "slot": 0,
            "stragglers": plan.storage - plan.parts, "start": 0, "stop": plan.coordinates,
            "needed": len(self.decoder.coefficients), "decoded_s": measured,
            "predicted_s": predicted,
        })  # fmt: skip
        self.recorder.iterations.writerow({
            "scheme": self.scheme, "iteration": state.number, "measured_s": measured,
            "predicted_s": predicted, "ratio": measured / predicted if predicted > 0 else math.nan,
            "loss": loss / self.data.rows, "gradient_rel_error": error,
            "messages_used": state.notices_used + state.uploads,
            "messages_late": state.notices_late, "messages_stale": state.stale,
            "overruns": state.overruns, "max_overrun_s": state.max_overrun,
        })  # fmt: skip
        self.table.writerow({
            "scheme": self.scheme, "iteration": state.number, "stop_reason": state.reason,
            "stop_s": (state.stop_ns - state.start) / 1e9, "round_trip_s": round_trip,
            "measured_s": measured, "predicted_s": predicted,
            "notices_used": state.notices_used, "notices_late": state.notices_late,
            "uploads": state.uploads, "covered_chunks": state.covered,
            "nmse_estimated": state.nmse_estimated, "nmse_predicted": predicted_nmse,
            "nmse": nmse, "gradient_rel_error": error,
            "uplink_floats": state.uploads * plan.upload_length,
            "downlink_floats": state.downlink, "worst_condition": self.decoder.worst_condition,
        })  # fmt: skip
        self.recorder.flush_if_due()
