"""One partial-gc plan on the testbed: the master's side of variant R1 (bcgc_sim.partial.decoder),
the part of the session skeleton (master/session.py) that differs.

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

Worker failure (spec/partial-gc.md A10; the liveness rules are RankWatch's, master/rank_watch.py): a
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

import math
import time
from dataclasses import dataclass, field

import numpy as np

from bcgc_sim.model.layout import partition_bounds
from bcgc_sim.partial.decoder import Outcome, R1Decoder
from bcgc_sim.results import PartialRow
from bcgc_sim.wire.protocol import (
    NOTICE_HEADER,
    PARTIAL_PROTOCOL,
    UPLOAD_HEADER,
    MessageType,
    ProtocolError,
    check,
)

from .errors import RunError
from .peers import Received
from .rank_watch import WATCH_INTERVAL_NS, WATCH_MS
from .session import OVERFLOW, Iteration, Session
from .settings import IterationResult


@dataclass
class _Iteration(Iteration):
    combines: dict[int, tuple[dict, np.ndarray]] = field(default_factory=dict)  # sent at the stop
    notices: list[tuple[int, int]] = field(default_factory=list)  # used (worker, chunk)
    rows: list[dict] = field(default_factory=list)
    stop_ns: int | None = None
    reason: str = ""
    nmse_estimated: float = math.nan
    nmse_predicted: float = math.nan
    round_trip_s: float = math.nan  # stop -> last UPLOAD
    covered: int = 0
    notices_used: int = 0
    notices_late: int = 0
    uploads: int = 0
    downlink: int = 0


class PartialSession(Session):
    """Runs one PartialPlan on the connected workers; rows as every session's, + partial.csv.
    No replacement workers: `replace` is accepted for symmetry and not used (R1)."""

    def start(self) -> None:
        plan, model, data = self.plan, self.model, self.data
        if plan.n_workers != model.n_workers or plan.coordinates != data.coordinates:
            raise ValueError("the plan was made for another number of workers or coordinates")
        self.decoder = R1Decoder(
            plan.assignment, plan.ordering, data.coordinates, plan.parts, seed=self.settings.seed
        )
        self.unit_s = self.settings.time_scale * model.scale  # seconds per raw unit
        self.bounds = partition_bounds(data.rows, model.n_workers)
        self.table = self.recorder.table("partial.csv", PartialRow)

    def plan_fields(self, rank: int) -> dict:
        return {
            "protocol": PARTIAL_PROTOCOL,
            "chunk_load": self.plan.chunk_load,
            "order": list(self.plan.ordering[rank]),
            "bounds": list(self.bounds),
            "parts": self.plan.parts,
        }

    def predicted_seconds(self, cycle_times: np.ndarray) -> float:
        return float(self.plan.raw_runtime(cycle_times[None])[0]) * self.unit_s

    def new_iteration(self, number, theta, cycle_times, stall_s) -> _Iteration:
        state = _Iteration(number, theta, cycle_times, stall_s)
        if not self.settings.natural:
            state.nmse_predicted = float(self.plan.nmse_at_stop(cycle_times[None])[0])
        return state

    def check_answering(self, state: _Iteration) -> None:
        if not self.plan.approximate:
            self._check_reachable(state, "")

    # -- receiving ---------------------------------------------------------------------------

    def receive_until_done(self, state: _Iteration) -> int:
        """NOTICEs until the stop rule fires, then one UPLOAD per chosen worker."""
        deadline = self.plan.deadline
        stop_at = None if deadline is None else state.start + round(deadline * self.unit_s * 1e9)
        while state.stop_ns is None:  # compute phase
            self.watch_if_due(state)
            now = time.monotonic_ns()
            if stop_at is not None and now >= stop_at:
                self.watch_workers(state)  # the workers chosen now must be alive
                self._stop(state, "deadline")
                break
            # receive timeouts have ms resolution: in the last millisecond before a deadline,
            # spin (timeout 0)
            wait_ms = WATCH_MS if stop_at is None else min(WATCH_MS, (stop_at - now) // 1_000_000)
            received = self.receive(state, int(wait_ms))
            if received is None:
                continue
            if stop_at is not None and received.arrival_ns >= stop_at:
                self.watch_workers(state)
                self._stop(state, "deadline")  # this message came after the deadline
                self._handle(received, state)
                break
            if self._handle(received, state):
                state.last_progress = time.monotonic()
                if self._stop_rule() is not None:
                    self.watch_workers(state)  # the workers chosen now must be alive
                    reason = self._stop_rule()  # (a death may have taken copies away)
                    if reason is not None:
                        self._stop(state, reason)
        state.last_progress = time.monotonic()
        state.next_watch = time.monotonic_ns() + WATCH_INTERVAL_NS
        while not self.decoder.complete:  # upload phase
            self.watch_if_due(state)
            received = self.receive(state, WATCH_MS)
            if received is not None and self._handle(received, state):
                state.last_progress = time.monotonic()
        return time.monotonic_ns()

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
            if not self.watch.on_setup_reply(received, state.number):
                self.watch.unexpected(received)
            return False  # (set up: it takes part from the next iteration)
        row = self._message_row(received, state)
        if row is None:
            return False
        state.rows.append(row)
        if row["status"] == "stale":
            state.stale += 1
            return False
        if message.kind is MessageType.NOTICE:
            return self._on_notice(received, row, state)
        worker = received.rank
        outcome = self.decoder.offer(worker, message.array)
        row["status"] = outcome.value
        state.uploads += outcome is Outcome.USED
        if outcome is Outcome.DUPLICATE or outcome is Outcome.REJECTED:
            reason = "duplicate" if outcome is Outcome.DUPLICATE else "unexpected-upload"
            self.link.reject(reason, worker, f"UPLOAD, shape {list(message.array.shape)}")
        return outcome is Outcome.USED

    def _on_notice(self, received: Received, row: dict, state: _Iteration) -> bool:
        worker, chunk = received.rank, received.message.header["chunk"]
        outcome = self.decoder.notice(worker, chunk)
        row["status"] = outcome.value
        if outcome is Outcome.USED:
            state.notices.append((worker, chunk))
            state.notices_used += 1
            state.overruns += row["overrun_s"] > 0
            state.max_overrun = max(state.max_overrun, row["overrun_s"])
        elif outcome is Outcome.LATE:
            state.notices_late += 1
        else:  # rare: counted by reason
            reason = "duplicate" if outcome is Outcome.DUPLICATE else "unexpected-chunk"
            self.link.reject(reason, worker, f"NOTICE of chunk {chunk}")
        return outcome is Outcome.USED

    def _message_row(self, received: Received, state: _Iteration) -> dict | None:
        """The messages.csv row of a NOTICE or UPLOAD (status "stale" or "", set when used);
        None if malformed."""
        message, h = received.message, received.message.header
        notice = message.kind is MessageType.NOTICE
        try:
            check(h, NOTICE_HEADER if notice else UPLOAD_HEADER)
            if not notice and message.array is None:
                raise ProtocolError("UPLOAD without values")
        except ProtocolError as exc:
            self.link.reject("malformed", received.rank, f"{message.kind.name}: {exc}")
            return None
        stale = h["run"] != self.run_id or h["iteration"] != state.number
        if notice:
            slot, due, overrun = h["position"] - 1, h["deadline_ns"], h["overrun_ns"] / 1e9
        else:
            slot, due, overrun = self.plan.storage, h["combine_ns"], 0.0
        return self.message_row(received, state, slot, due, overrun, "stale" if stale else "")

    # -- failures ----------------------------------------------------------------------------

    def _check_reachable(self, state: _Iteration, cause: str) -> None:
        """Exact mode: every chunk must keep l live, answering holders; else a RunError."""
        answering = self.answering(state, state.participants)
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

    def serve_rejoined(self, rank: int, state: _Iteration) -> None:
        if rank not in state.participants:
            return  # set up while cut off: it takes part from the next iteration
        if state.stop_ns is None:
            self.send_theta(rank, state)
        elif rank in state.combines and rank not in self.decoder.uploads:
            header, beta = state.combines[rank]
            self.link.send(rank, MessageType.COMBINE, header, beta)

    def ranks_changed(self, state: _Iteration) -> None:
        """Before the stop drop a dead worker's copies, after it end the run."""
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
        coefficients, uploads = self.decoder.coefficients, self.decoder.uploads
        missing = sorted(w for w in coefficients if w in dead and w not in uploads)
        if missing:
            raise RunError(
                f"{self.scheme}, iteration {state.number}: worker(s) {missing} died after the stop "
                "and before uploading; variant R1 cannot recover (its processed chunks were only "
                "in that worker's memory, spec/partial-gc.md A10)"
            )

    def stalled(self, state: _Iteration) -> None:
        phase = "NOTICE" if state.stop_ns is None else "UPLOAD"
        raise RunError(
            f"{self.scheme}, iteration {state.number}: no usable {phase} for {state.stall_s:g} s "
            f"although worker(s) {sorted(self.answering(state, state.participants))} are live "
            "(cluster.stall_timeout; 0 = derived)"
        )

    # -- after the clock stopped -------------------------------------------------------------

    def conclude(self, state: _Iteration, end_ns: int) -> np.ndarray:
        state.round_trip_s = (end_ns - state.stop_ns) / 1e9
        self.recorder.messages.writerows(state.rows)
        gradient = self.decoder.gradient()
        if not np.isfinite(gradient).all():
            self._non_finite(state)
        return gradient

    def _non_finite(self, state: _Iteration) -> None:
        """The decoded gradient is not finite: reject the UPLOADs with non-finite values,
        declare their senders faulty, and end the run (R1 cannot recover the chunks)."""
        uploads = self.decoder.uploads
        faulty = sorted(w for w, values in uploads.items() if not np.isfinite(values).all())
        for worker in faulty:
            self.link.reject("non-finite", worker, "UPLOAD")
            self.watch.declare_faulty(worker, "sent non-finite values", state.number)
        cause = (
            f"worker(s) {faulty} sent non-finite values; variant R1 cannot recover their chunks"
            if faulty
            else OVERFLOW
        )
        raise RunError(f"{self.scheme}, iteration {state.number}: {cause}")

    def record(self, state: _Iteration, result: IterationResult, gradient, true_gradient):
        if true_gradient is not None:
            norm = float(true_gradient @ true_gradient)
            difference = gradient - true_gradient
            result.nmse = float(difference @ difference) / norm if norm > 0 else 0.0
        result.round_trip_s = state.round_trip_s
        plan, measured, predicted = self.plan, result.measured_s, result.predicted_s
        self.block_row(
            state,
            0,
            plan.storage - plan.parts,
            (0, plan.coordinates),
            len(self.decoder.coefficients),
            measured,
            predicted,
        )
        self.table.writerow(
            {
                "scheme": self.scheme,
                "iteration": state.number,
                "stop_reason": state.reason,
                "stop_s": (state.stop_ns - state.start) / 1e9,
                "round_trip_s": result.round_trip_s,
                "measured_s": measured,
                "predicted_s": predicted,
                "notices_used": state.notices_used,
                "notices_late": state.notices_late,
                "uploads": state.uploads,
                "covered_chunks": state.covered,
                "nmse_estimated": state.nmse_estimated,
                "nmse_predicted": state.nmse_predicted,
                "nmse": result.nmse,
                "gradient_rel_error": result.gradient_rel_error,
                "uplink_floats": state.uploads * plan.upload_length,
                "downlink_floats": state.downlink,
                "worst_condition": self.decoder.worst_condition,
            }
        )
        return state.notices_used + state.uploads, state.notices_late
