"""The one unit loop of a worker, for every protocol: receive theta, compute each unit of work,
hold it until its deadline, send it; liveness is the port's (workers/worker.py ticks while it
waits).

A unit is a slot of the BCGC plan (workers/slots.py) or a chunk of the partial-gc plan
(workers/partial.py); the job built from SETUP says what a unit computes, its raw load from the
start of the iteration and the fields of its message. Its deadline is
    t_start + ns_per_load * T_n * load     (ns; ns_per_load = time_scale * M C / N * 1e9)
or the moment it was computed in natural mode. A message from the master while waiting goes to
the job (`during`): it interrupts the iteration (BCGC: any message), is answered, or is stale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bcgc_sim.wire.protocol import Message, MessageType

DEADLINE = object()  # hold()'s result when the deadline passed with no master message
STALE = object()  # a job's verdict on a message that changes nothing: keep waiting


@dataclass(frozen=True)
class Pace:
    """How SETUP says the worker keeps time: ns per raw load unit at T_n = 1, natural mode (no
    injected delay: each unit goes once computed), and the repetitions of the work (slowdown)."""

    ns_per_load: float
    natural: bool = False
    repeat: int = 1


@dataclass(slots=True)
class Stamp:
    """One iteration as this worker began it (times: monotonic ns). `fields` are the iteration
    fields every answer's header carries (bcgc_sim.wire.protocol.ITERATION_FIELDS + worker)."""

    iteration: int
    start_ns: int  # the master's broadcast on a shared clock, else this worker's receipt
    received_ns: int
    cycle_time: float  # T_n (0.0 in natural mode, inf: a full straggler)
    theta: np.ndarray
    fields: dict[str, Any]


class Port(Protocol):
    """What the loop needs of the worker's connection."""

    def begin(self, message: Message | None) -> Stamp | None: ...

    def wait_until(self, deadline_ns: int | None) -> Message | None: ...

    def send(self, kind: MessageType, header: dict, array: np.ndarray | None = None) -> None: ...


class Job(Protocol):
    """One protocol's work per iteration, built from SETUP."""

    kind: MessageType  # what one unit's message is
    waits_after: bool  # after the last unit, wait for the master (partial-gc: COMBINE)

    def begin(self, stamp: Stamp, theta: np.ndarray, repeat: int) -> None: ...

    def units(self) -> Iterable[Any]: ...

    def load(self, unit: Any) -> float: ...

    def compute(self, unit: Any) -> np.ndarray: ...

    def message(self, unit: Any, values: np.ndarray) -> tuple[dict, np.ndarray | None]: ...

    def during(self, port: Port, message: Message) -> Any: ...

    def between(self, port: Port, message: Message) -> None: ...


def run_iteration(port: Port, job: Job, pace: Pace, message: Message | None) -> Message | None:
    """Run one iteration of `job`; return the master's message that interrupted it, if any."""
    stamp = port.begin(message)
    if stamp is None:
        return None  # stale or malformed: ignore
    job.begin(stamp, np.asarray(stamp.theta, dtype=float), pace.repeat)
    if math.isfinite(stamp.cycle_time):  # (a full straggler computes and sends nothing)
        per_load = pace.ns_per_load * stamp.cycle_time
        for unit in job.units():
            for _ in range(pace.repeat):  # a per-worker slowdown is real extra work
                values = job.compute(unit)
            computed = time.monotonic_ns()
            deadline = (
                computed if pace.natural else stamp.start_ns + round(per_load * job.load(unit))
            )
            outcome = hold(port, job, deadline)
            if outcome is not DEADLINE:
                return outcome
            fields, array = job.message(unit, values)
            header = {
                **stamp.fields,
                **fields,
                "deadline_ns": deadline,
                "overrun_ns": max(0, computed - deadline),
                "send_ns": time.monotonic_ns(),
            }
            port.send(job.kind, header, array)
        if not job.waits_after:
            return None
    outcome = hold(port, job, None)  # until the master speaks
    return None if outcome is DEADLINE else outcome


def hold(port: Port, job: Job, deadline_ns: int | None) -> Any:
    """Wait until deadline_ns (None: until the iteration ends). DEADLINE when it passed, None
    when the job ended the iteration (partial-gc: COMBINE answered, ABANDON), or the master's
    message that interrupts it."""
    while True:
        message = port.wait_until(deadline_ns)
        if message is None:
            return DEADLINE
        verdict = job.during(port, message)
        if verdict is not STALE:
            return verdict
