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

Worker failure (spec/partial-gc.md A10): before the stop a dead worker's copies are dropped (its
notices are replayed away) and the iteration goes on while every chunk can still get l copies
from live, answering workers; otherwise, and whenever a worker dies between the stop and its
upload (R1 keeps the processed chunks only in the worker's memory), the run ends with a RunError.
No replacement workers (cluster.on_failure = "replace" is a BCGC feature).
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
    clock_id,
    header_spec,
)

from .session import (
    IterationResult,
    RunError,
    SessionSettings,
    common_setup_fields,
    no_dead_ranks,
    notice_dead,
    set_up_workers,
)
from .transport import Received, WorkerLink

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
        self.dead_ranks = dead_ranks  # `replace` is accepted for symmetry and not used (R1)
        self.run_id = f"{scheme}-{time.monotonic_ns()}"
        self.decoder = R1Decoder(
            plan.assignment, plan.ordering, data.coordinates, plan.parts, seed=settings.seed
        )
        self.unit_s = settings.time_scale * model.scale  # seconds per raw unit
        self.ns_per_load = self.unit_s * 1e9
        self.bounds = partition_bounds(data.rows, model.n_workers)
        self.affinity: dict[int, list[int] | None] = {}
        self.clock = clock_id()
        self.events: list[dict] = []
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
        """Send every worker its order and chunks; wait for all SETUP_OK."""
        self.affinity = set_up_workers(
            self.link, self.setup_header, self.model.n_workers, self.run_id, self.scheme, timeout_s
        )

    # -- one iteration ----------------------------------------------------------------------
    def iterate(self, iteration: int, theta: np.ndarray) -> tuple[IterationResult, np.ndarray]:
        """One iteration at theta; returns its record and the decoded gradient, shape (L,)."""
        n, plan = self.model.n_workers, self.plan
        if self.settings.natural:  # nothing injected: no cycle times to predict from
            cycle_times = np.full(n, math.nan)
            predicted, predicted_nmse = math.nan, math.nan
        else:
            cycle_times = iteration_cycle_times(
                self.model.distribution, self.settings.seed, iteration, n
            )
            predicted = float(plan.raw_runtime(cycle_times[None])[0]) * self.unit_s
            predicted_nmse = float(plan.nmse_at_stop(cycle_times[None])[0])
        if not plan.approximate:
            self._check_reachable(iteration, cycle_times, "")
        self.decoder.reset()
        start = time.monotonic_ns()
        state = _Iteration(iteration, start, cycle_times)
        stop_at = (
            None if plan.deadline is None else start + round(plan.deadline * self.unit_s * 1e9)
        )
        header = {"run": self.run_id, "iteration": iteration, "sent_ns": start, "clock": self.clock}
        self.link.broadcast(MessageType.ITERATE, header, theta)
        last_progress = time.monotonic()
        while state.stop_ns is None:  # compute phase: NOTICEs until the stop rule fires
            self._watch_workers(state)
            now = time.monotonic_ns()
            if stop_at is not None and now >= stop_at:
                self._stop(state, "deadline")
                break
            # receive timeouts have ms resolution: in the last millisecond before a deadline, spin
            # (timeout 0)
            wait_ms = 50 if stop_at is None else min(50, (stop_at - now) // 1_000_000)
            received = self.link.receive(int(wait_ms))
            if received is None:
                last_progress = self._check_stall(state, last_progress)
                continue
            if stop_at is not None and received.arrival_ns >= stop_at:
                self._stop(state, "deadline")  # this message came after the deadline
                self._handle(received, state)
                break
            if self._handle(received, state):
                last_progress = time.monotonic()
            if self.decoder.exact_ready:
                self._stop(state, "exact")
            elif plan.nmse_target > 0 and self.decoder.estimated_nmse <= plan.nmse_target + 1e-12:
                self._stop(state, "nmse")
        last_progress = time.monotonic()
        while not self.decoder.complete:  # upload phase: one UPLOAD per chosen worker
            self._watch_workers(state)
            received = self.link.receive(50)
            if received is None:
                last_progress = self._check_stall(state, last_progress)
                continue
            if self._handle(received, state):
                last_progress = time.monotonic()
        end = time.monotonic_ns()
        measured = (end - start) / 1e9
        round_trip = (end - state.stop_ns) / 1e9
        self.recorder.messages.writerows(state.rows)  # after the clock stopped: not part of it
        gradient = self.decoder.gradient()
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

    def _stop(self, state: _Iteration, reason: str) -> None:
        """Freeze S_i: COMBINE to the workers whose copies are used, ABANDON to the rest."""
        state.stop_ns, state.reason = time.monotonic_ns(), reason  # the round trip starts here
        coefficients = self.decoder.stop()
        state.nmse_estimated = self.decoder.estimated_nmse
        state.covered = int(np.count_nonzero(self.decoder.counts >= self.plan.parts))
        base = {"run": self.run_id, "iteration": state.number}
        for worker, c in coefficients.items():
            beta = np.ascontiguousarray(c.beta, dtype=np.float64)
            self.link.send(worker, MessageType.COMBINE, {**base, "chunks": list(c.chunks)}, beta)
            state.downlink += beta.size
        for worker in range(self.model.n_workers):
            if worker not in coefficients and worker not in self.link.dead:
                self.link.send(worker, MessageType.ABANDON, base)

    def _handle(self, received: Received, state: _Iteration) -> bool:
        """NOTICE, UPLOAD or FAILED of a worker; True if it advanced the protocol."""
        message = received.message
        if message.kind is MessageType.FAILED:
            h = message.header
            if h.get("run") == self.run_id:
                raise RunError(
                    f"{self.scheme}, iteration {state.number}: worker {received.rank} failed: "
                    f"{h.get('reason')}"
                )
            return False
        if message.kind not in (MessageType.NOTICE, MessageType.UPLOAD):
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
            return outcome is Outcome.USED
        outcome = self.decoder.offer(worker, message.array)
        row["status"] = outcome.value
        state.uploads += outcome is Outcome.USED
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
        except ProtocolError:
            self.link.rejected["malformed"] += 1
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
    def _answering(self, cycle_times: np.ndarray) -> set[int]:
        return {
            r for r in range(self.model.n_workers)
            if r not in self.link.dead and (self.settings.natural or math.isfinite(cycle_times[r]))
        }  # fmt: skip

    def _check_reachable(self, iteration: int, cycle_times: np.ndarray, cause: str) -> None:
        """Exact mode: every chunk must keep l live, answering holders; else a RunError."""
        answering = self._answering(cycle_times)
        a, parts = self.plan.assignment, self.plan.parts
        for chunk in range(a.n_chunks):
            holders = sorted(set(a.holders(chunk).tolist()) & answering)
            if len(holders) < parts:
                raise RunError(
                    f"{self.scheme}, iteration {iteration}: {cause}chunk {chunk} can get only "
                    f"{len(holders)} of the l = {parts} processed copies the exact gradient needs "
                    f"(live, answering holders: {holders}); use partial-gc-approx, a larger "
                    "partial.storage or fewer failures"
                )

    def _watch_workers(self, state: _Iteration) -> None:
        """Notice dead ranks: drop their copies before the stop, end the run after it."""
        newly = notice_dead(
            self.link, self.dead_ranks(), self.settings, self.scheme, state.number, self.events
        )
        if not newly:
            return
        dead = ", ".join(str(r) for r in sorted(self.link.dead))
        if state.stop_ns is None:  # R1: a dead worker can never upload; forget its copies
            state.notices = [(w, c) for w, c in state.notices if w not in self.link.dead]
            self.decoder.reset()
            for worker, chunk in state.notices:
                self.decoder.notice(worker, chunk)
            if not self.plan.approximate:
                self._check_reachable(state.number, state.cycle_times, f"worker(s) {dead} died; ")
            return
        missing = sorted(
            w for w in self.decoder.coefficients if w in self.link.dead and w not in self.decoder.uploads
        )  # fmt: skip
        if missing:
            raise RunError(
                f"{self.scheme}, iteration {state.number}: worker(s) {missing} died after the stop "
                "and before uploading; variant R1 cannot recover (its processed chunks were only "
                "in that worker's memory, spec/partial-gc.md A10)"
            )

    def _check_stall(self, state: _Iteration, last_progress: float) -> float:
        if time.monotonic() - last_progress > self.settings.stall_timeout_s:
            phase = "NOTICE" if state.stop_ns is None else "UPLOAD"
            raise RunError(
                f"{self.scheme}, iteration {state.number}: no usable {phase} for "
                f"{self.settings.stall_timeout_s:g} s; workers may have died"
            )
        return last_progress

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
