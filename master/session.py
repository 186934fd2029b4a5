"""One scheme on the testbed: set the workers up, then run iterations and record them.

Per iteration the master regenerates every worker's T_n from the seed, so each measured
runtime has its exact prediction beside it: time_scale * (M C / N) * R(plan, T). The measured
runtime runs from the broadcast of theta to the decode of the last slot.

Worker failure: a rank counts as dead when its process exits (local cluster) or when it has
been silent (no message, no heartbeat) for `liveness` heartbeat intervals. Slots that can still
get N - s messages keep decoding. When a slot can no longer be decoded the run ends with a
RunError (on_failure = "error"), or (on_failure = "replace") a replacement worker is awaited,
given the dead rank's plan, code rows and data, and sent the current theta; the iteration then
completes (its measured runtime includes the wait).
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
from .transport import Received, WorkerLink

log = logging.getLogger("bcgc.master")
_BLOCK, _USED = MessageType.BLOCK, Outcome.USED  # looked up per message


WATCH_INTERVAL_NS = 20_000_000  # how often an iteration checks for dead workers (20 ms)
BLOCK_HEADER = header_spec(
    run=str, iteration=int, worker=int, slot=int, cycle_time=float, start_ns=int,
    received_ns=int, deadline_ns=int, send_ns=int, overrun_ns=int,
)  # fmt: skip


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
    stall_timeout_s: float = 60.0  # no usable message for this long inside an iteration: give up


@dataclass
class _Iteration:
    """Book-keeping of the iteration in progress."""

    number: int
    header: dict
    theta: np.ndarray
    cycle_times: np.ndarray
    start: int
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


def setup_reply(received: Received, run_id: str, scheme: str) -> tuple[bool, list[int] | None]:
    """(True, affinity) for a SETUP_OK of this run; raise RunError for a FAILED set-up."""
    h, kind = received.message.header, received.message.kind
    if kind is MessageType.FAILED:
        raise RunError(f"worker {received.rank} could not set up {scheme}: {h.get('reason')}")
    if kind is MessageType.SETUP_OK and h.get("run") == run_id:
        return True, h.get("affinity")
    return False, None


def notice_dead(
    link: WorkerLink,
    exited: set[int],
    settings: SessionSettings,
    scheme: str,
    iteration: int,
    events: list[dict],
) -> set[int]:
    """Mark as dead the ranks whose process exited or that were silent too long; log and record
    each one in `events`; return the newly dead ranks."""
    liveness_s = settings.liveness * settings.heartbeat_s
    silent = link.silent(liveness_s)
    newly = (exited | silent) - link.dead
    for rank in sorted(newly):
        how = f"silent for more than {liveness_s:g} s" if rank in silent else "its process exited"
        log.warning("%s, iteration %d: worker %d is dead (%s)", scheme, iteration, rank, how)
        link.dead.add(rank)
        events.append({"iteration": iteration, "rank": rank, "event": "died", "how": how})
    return newly


def set_up_workers(
    link: WorkerLink,
    header: Callable[[int], dict],
    n: int,
    run_id: str,
    scheme: str,
    timeout_s: float,
) -> dict[int, list[int] | None]:
    """Send every rank its SETUP header(rank); wait for all SETUP_OK; their CPU affinities."""
    for rank in range(n):
        link.send(rank, MessageType.SETUP, header(rank))
    affinity: dict[int, list[int] | None] = {}
    end = time.monotonic() + timeout_s
    while len(affinity) < n:
        received = link.receive(max(1, int((end - time.monotonic()) * 1000)))
        if received is None:
            missing = sorted(set(range(n)) - set(affinity))
            raise RunError(
                f"workers {missing} did not confirm set-up of {scheme} in {timeout_s:g} s"
            )
        ok, cores = setup_reply(received, run_id, scheme)
        if ok:
            affinity[received.rank] = cores
    return affinity


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
        self.dead_ranks, self.replace = dead_ranks, replace
        self.run_id = f"{scheme}-{time.monotonic_ns()}"
        self.decoder = IterationDecoder(layout.slots, model.n_workers, data.coordinates, codes)
        self.ns_per_load = settings.time_scale * model.scale * 1e9
        self.affinity: dict[int, list[int] | None] = {}
        self.clock = clock_id()
        self.events: list[dict] = []  # worker deaths and replacements
        self.awaiting: dict[int, dict] = {}  # rank -> replacement state

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
        """Send every worker its rank's plan and code rows; wait for all SETUP_OK."""
        self.affinity = set_up_workers(
            self.link, self.setup_header, self.model.n_workers, self.run_id, self.scheme, timeout_s
        )

    # -- one iteration ----------------------------------------------------------------------

    def predicted_seconds(self, cycle_times: np.ndarray) -> float:
        raw = float(self.plan.raw_runtime(cycle_times[None, :])[0])
        return raw * self.model.scale * self.settings.time_scale

    def iterate(self, iteration: int, theta: np.ndarray) -> tuple[IterationResult, np.ndarray]:
        """One iteration at theta; returns its record and the decoded gradient, shape (L,)."""
        if self.settings.natural:  # nothing injected: no cycle times to predict from
            cycle_times = np.full(self.model.n_workers, math.nan)
            predicted = math.nan
        else:
            cycle_times = iteration_cycle_times(
                self.model.distribution, self.settings.seed, iteration, self.model.n_workers
            )
            self._check_full_stragglers(iteration, cycle_times)
            predicted = self.predicted_seconds(cycle_times)
        self.decoder.reset()
        start = time.monotonic_ns()
        header = {"run": self.run_id, "iteration": iteration, "sent_ns": start, "clock": self.clock}
        state = _Iteration(
            iteration,
            header,
            theta,
            cycle_times,
            start,
            decoded_at=[math.nan] * len(self.layout.slots),
        )
        self.link.broadcast(MessageType.ITERATE, header, theta)
        last_progress = time.monotonic()
        next_watch = start + WATCH_INTERVAL_NS  # the first check after 20 ms: this loop is timed
        while not self.decoder.complete:
            if time.monotonic_ns() >= next_watch:
                self._watch_workers(state)
                next_watch = time.monotonic_ns() + WATCH_INTERVAL_NS
            received = self.link.receive(50)
            if received is None:
                if time.monotonic() - last_progress > self.settings.stall_timeout_s:
                    raise RunError(
                        f"{self.scheme}, iteration {iteration}: no usable message for "
                        f"{self.settings.stall_timeout_s:g} s; workers may have died"
                    )
                continue
            replacement = bool(self.awaiting) and self._on_replacement_reply(received, state)
            if replacement or self._on_block(received, state):
                last_progress = time.monotonic()
        measured = (time.monotonic_ns() - start) / 1e9
        # after the clock stopped: book-keeping and recording are not part of the runtime
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

    def _on_block(self, received: Received, state: _Iteration) -> bool:
        """Feed a BLOCK to the decoder; True if it was used. The rest of the book-keeping waits
        for _tally, after the iteration: this runs inside the measured runtime."""
        message = received.message
        if message.kind is not _BLOCK or message.array is None:
            return False
        h = message.header
        try:
            check(h, BLOCK_HEADER)
        except ProtocolError:
            self.link.rejected["malformed"] += 1
            return False
        if h["run"] != self.run_id or h["iteration"] != state.number:
            state.seen.append((received, None))
            return False
        # the sender's identity gives the worker, never the header's claim
        outcome = self.decoder.offer(received.rank, h["slot"], message.array)
        state.seen.append((received, outcome))
        return outcome is _USED

    def _tally(self, state: _Iteration) -> None:
        """Counts, overruns and slot decode times of the finished iteration, from state.seen: a
        slot was decoded by the last message it used."""
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
        """Notice dead ranks; end the run or start replacements when a slot can no longer decode."""
        newly = notice_dead(
            self.link, self.dead_ranks() - set(self.awaiting), self.settings, self.scheme,
            state.number, self.events,
        )  # fmt: skip
        for rank, pending in list(self.awaiting.items()):
            if (
                rank not in self.link.dead and not pending["setup_sent"]
            ):  # its replacement said READY
                self.link.send(rank, MessageType.SETUP, self.setup_header(rank))
                pending["setup_sent"] = True
            elif time.monotonic() > pending["deadline"]:
                raise RunError(
                    f"{self.scheme}, iteration {state.number}: no replacement for worker {rank} within "
                    f"{self.settings.replace_timeout_s:g} s (cluster.replace_timeout)"
                )
        if not newly:
            return
        blocked = self._undecodable(state)
        if blocked is None:
            return
        index, have, coming = blocked
        if self.settings.on_failure != "replace":
            dead = ", ".join(str(r) for r in sorted(self.link.dead))
            raise RunError(
                f"{self.scheme}, iteration {state.number}: worker(s) {dead} died and block {index} "
                f"(s = {self.layout.slots[index].stragglers}) can no longer be decoded ({have} of the "
                f"{self.decoder.needed(index)} messages it needs arrived, {coming} live workers still to answer); "
                f"set cluster.on_failure = 'replace' to wait for replacement workers"
            )
        for rank in sorted(self.link.dead - set(self.awaiting)):
            log.warning("%s: waiting for a replacement of worker %d", self.scheme, rank)
            self.awaiting[rank] = {
                "deadline": time.monotonic() + self.settings.replace_timeout_s,
                "setup_sent": False,
            }
            self.replace(rank)

    def _undecodable(self, state: _Iteration) -> tuple[int, int, int] | None:
        """(slot, arrived, still coming) of the first slot that cannot reach N - s, else None."""
        answering = {
            r for r in range(self.model.n_workers)
            if (r not in self.link.dead or r in self.awaiting)
            and (self.settings.natural or math.isfinite(state.cycle_times[r]))
        }  # fmt: skip
        for index in range(len(self.layout.slots)):
            if self.decoder.decoded[index]:
                continue
            arrived = self.decoder.arrived[index]
            coming = len(answering - set(arrived))
            if len(arrived) + coming < self.decoder.needed(index):
                return index, len(arrived), coming
        return None

    def _on_replacement_reply(self, received: Received, state: _Iteration) -> bool:
        """SETUP_OK of a replacement: give it the current theta. True if it was one."""
        if received.rank not in self.awaiting:
            return False
        ok, cores = setup_reply(received, self.run_id, self.scheme)
        if not ok:
            return False
        self.affinity[received.rank] = cores
        del self.awaiting[received.rank]
        self.events.append({"iteration": state.number, "rank": received.rank, "event": "replaced"})
        log.warning(
            "%s, iteration %d: worker %d replaced", self.scheme, state.number, received.rank
        )
        self.link.send(received.rank, MessageType.ITERATE, state.header, state.theta)
        return True

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
