"""One scheme on the testbed: set the workers up, then run iterations and record them.

Per iteration the master regenerates every worker's T_n from the seed, so each measured
runtime has its exact prediction beside it: time_scale * (M C / N) * R(plan, T). The measured
runtime runs from the broadcast of theta to the decode of the last slot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from bcgc_sim.codes import CodeBook, cyclic_support
from bcgc_sim.errors import UserError
from bcgc_sim.layout import Layout
from bcgc_sim.model import SystemModel
from bcgc_sim.plans import Plan
from bcgc_sim.problems import ProblemData, full_gradient
from bcgc_sim.protocol import MessageType, ProtocolError, clock_id, require
from bcgc_sim.results import RunRecorder
from bcgc_sim.stragglers import distribution_to_spec, iteration_cycle_times

from .decoder import IterationDecoder, Outcome
from .transport import WorkerLink


class RunError(UserError):
    """The run cannot go on (an undecodable block, a silent cluster); ends with one line."""


@dataclass
class IterationResult:
    measured_s: float
    predicted_s: float
    loss: float
    gradient_rel_error: float | None
    stale: int  # messages of an older iteration or scheme, dropped
    overruns: int  # used messages whose compute ended after their deadline


@dataclass(frozen=True)
class SessionSettings:
    seed: int
    time_scale: float  # seconds per model time unit
    check: bool  # compare every decoded gradient with the uncoded one
    learning_rate: float  # theta <- theta - learning_rate * gradient / M
    pin: bool = True  # workers pin themselves to cores
    stall_timeout_s: float = 30.0  # no message for this long inside an iteration: give up


class SchemeSession:
    """Runs one plan on the connected workers; rows go to `recorder`."""

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
    ) -> None:
        self.link, self.scheme, self.plan, self.layout = link, scheme, plan, layout
        self.model, self.data, self.codes, self.settings = model, data, codes, settings
        self.recorder = recorder
        self.run_id = f"{scheme}-{time.monotonic_ns()}"
        self.decoder = IterationDecoder(layout.slots, model.n_workers, data.coordinates, codes)
        self.ns_per_load = settings.time_scale * model.scale * 1e9
        self.affinity: dict[int, list[int] | None] = {}
        self.clock = clock_id()

    def setup(self, timeout_s: float = 60.0) -> None:
        """Send every worker its rank's plan and code rows; wait for all SETUP_OK."""
        n = self.model.n_workers
        levels = sorted({slot.stragglers for slot in self.layout.slots})
        common = {
            "run": self.run_id,
            "n_workers": n,
            "seed": self.settings.seed,
            "ns_per_load": float(self.ns_per_load),
            "slots": [
                [s.start, s.stop, s.stragglers, s.load, s.partition] for s in self.layout.slots
            ],
            "partitions": {k: list(v) for k, v in self.layout.partitions.items()},
            "data": self.data.to_header(),
            "straggler": distribution_to_spec(self.model.distribution),
            "pin": self.settings.pin,
        }
        for rank in range(n):
            rows = {
                str(s): self.codes.matrix(s)[rank, cyclic_support(rank, s, n)].tolist()
                for s in levels
            }
            self.link.send(rank, MessageType.SETUP, {**common, "rank": rank, "code_rows": rows})
        end = time.monotonic() + timeout_s
        while len(self.affinity) < n:
            received = self.link.receive(max(1, int((end - time.monotonic()) * 1000)))
            if received is None:
                missing = sorted(set(range(n)) - set(self.affinity))
                raise RunError(
                    f"workers {missing} did not confirm set-up of {self.scheme} in {timeout_s:g} s"
                )
            h = received.message.header
            if received.message.kind is MessageType.FAILED:
                raise RunError(
                    f"worker {received.rank} could not set up {self.scheme}: {h.get('reason')}"
                )
            if received.message.kind is MessageType.SETUP_OK and h.get("run") == self.run_id:
                self.affinity[received.rank] = h.get("affinity")

    def predicted_seconds(self, cycle_times: np.ndarray) -> float:
        return (
            float(self.plan.raw_runtime(cycle_times[None, :])[0])
            * self.model.scale
            * self.settings.time_scale
        )

    def _check_decodable(self, iteration: int, cycle_times: np.ndarray) -> None:
        answering = int(np.isfinite(cycle_times).sum())
        for index, slot in enumerate(self.layout.slots):
            if answering < self.decoder.needed(index):
                raise RunError(
                    f"{self.scheme}, iteration {iteration}: block {index} (s = {slot.stragglers}) needs "
                    f"{self.decoder.needed(index)} workers but only {answering} of {self.model.n_workers} "
                    f"answer (full stragglers); use a scheme with more redundancy or a lower failure probability"
                )

    def iterate(self, iteration: int, theta: np.ndarray) -> tuple[IterationResult, np.ndarray]:
        """One iteration at theta; returns its record and the decoded gradient, shape (L,)."""
        cycle_times = iteration_cycle_times(
            self.model.distribution, self.settings.seed, iteration, self.model.n_workers
        )
        self._check_decodable(iteration, cycle_times)
        predicted = self.predicted_seconds(cycle_times)
        self.decoder.reset()
        counts = {o: 0 for o in Outcome} | {"stale": 0}
        overruns, max_overrun, decoded_at = 0, 0.0, [math.nan] * len(self.layout.slots)
        start = time.monotonic_ns()
        header = {"run": self.run_id, "iteration": iteration, "sent_ns": start, "clock": self.clock}
        self.link.broadcast(MessageType.ITERATE, header, theta)
        last_progress = time.monotonic()
        while not self.decoder.complete:
            received = self.link.receive(200)
            if received is None:
                if time.monotonic() - last_progress > self.settings.stall_timeout_s:
                    raise RunError(
                        f"{self.scheme}, iteration {iteration}: no usable message for "
                        f"{self.settings.stall_timeout_s:g} s; workers may have died"
                    )
                continue
            row = self._message_row(received, iteration, start)
            if row is None:
                continue
            if row["status"] == "stale":
                counts["stale"] += 1
            else:
                outcome = self.decoder.offer(row["worker"], row["slot"], received.message.array)
                row["status"] = outcome.value
                counts[outcome] += 1
                if outcome is Outcome.USED:
                    last_progress = time.monotonic()
                    overruns += row["overrun_s"] > 0
                    max_overrun = max(max_overrun, row["overrun_s"])
                    if self.decoder.decoded[row["slot"]] and math.isnan(decoded_at[row["slot"]]):
                        decoded_at[row["slot"]] = (received.arrival_ns - start) / 1e9
            self.recorder.messages.writerow(row)
        measured = (time.monotonic_ns() - start) / 1e9
        gradient = self.decoder.gradient.copy()
        true_gradient, loss = full_gradient(self.data, theta)
        error = None
        if self.settings.check:
            scale = float(np.max(np.abs(true_gradient))) or 1.0
            error = float(np.max(np.abs(gradient - true_gradient))) / scale
        self._record(
            iteration,
            cycle_times,
            start,
            decoded_at,
            measured,
            predicted,
            loss,
            error,
            counts,
            overruns,
            max_overrun,
        )
        result = IterationResult(
            measured, predicted, loss / self.data.rows, error, counts["stale"], overruns
        )
        return result, gradient

    def _message_row(self, received, iteration: int, start: int) -> dict | None:
        message = received.message
        if message.kind is not MessageType.BLOCK or received.rank is None or message.array is None:
            return None
        h = message.header
        try:
            require(
                h,
                run=str,
                iteration=int,
                worker=int,
                slot=int,
                cycle_time=float,
                start_ns=int,
                received_ns=int,
                deadline_ns=int,
                send_ns=int,
                overrun_ns=int,
            )
        except ProtocolError:
            self.link.malformed += 1
            return None
        stale = h["run"] != self.run_id or h["iteration"] != iteration
        worker_start = h["start_ns"]
        return {
            "scheme": self.scheme,
            "iteration": h["iteration"],
            "slot": h["slot"],
            "worker": received.rank,
            "cycle_time": h["cycle_time"],
            "worker_start_s": (worker_start - start) / 1e9,
            "received_s": (h["received_ns"] - start) / 1e9,
            "deadline_s": (h["deadline_ns"] - worker_start) / 1e9,
            "send_s": (h["send_ns"] - worker_start) / 1e9,
            "arrival_s": (received.arrival_ns - start) / 1e9,
            "overrun_s": h["overrun_ns"] / 1e9,
            "status": "stale" if stale else "",
        }

    def _record(
        self,
        iteration,
        cycle_times,
        start,
        decoded_at,
        measured,
        predicted,
        loss,
        error,
        counts,
        overruns,
        max_overrun,
    ) -> None:
        order = np.sort(cycle_times)
        unit = self.model.scale * self.settings.time_scale
        for index, slot in enumerate(self.layout.slots):
            needed = self.decoder.needed(index)
            self.recorder.blocks.writerow(
                {
                    "scheme": self.scheme,
                    "iteration": iteration,
                    "slot": index,
                    "stragglers": slot.stragglers,
                    "start": slot.start,
                    "stop": slot.stop,
                    "needed": needed,
                    "decoded_s": decoded_at[index],
                    "predicted_s": order[needed - 1] * slot.load * unit,
                }
            )
        self.recorder.iterations.writerow(
            {
                "scheme": self.scheme,
                "iteration": iteration,
                "measured_s": measured,
                "predicted_s": predicted,
                "ratio": measured / predicted if predicted > 0 else math.nan,
                "loss": loss / self.data.rows,
                "gradient_rel_error": error,
                "messages_used": counts[Outcome.USED],
                "messages_late": counts[Outcome.LATE],
                "messages_stale": counts["stale"],
                "overruns": overruns,
                "max_overrun_s": max_overrun,
            }
        )
        self.recorder.flush()
