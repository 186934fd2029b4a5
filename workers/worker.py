"""Worker process: `python -m workers --connect tcp://HOST:PORT [--rank R]`.

Loop: READY -> SETUP (plan, code rows, data, straggler law) -> SETUP_OK, then per ITERATE:
draw T_n from the seeded stream (seed, iteration, rank); for each slot in order compute the
real coded partial derivatives, hold them until the deadline
    t_start + time_scale * (M C / N) * T_n * load
and send them. Any message from the master while waiting (a newer theta, a new plan, STOP)
abandons the iteration at once. A failed worker (T_n = inf) stays silent for the iteration.
Compute slower than the deadline is sent at once and its overrun is reported, never hidden.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time

import numpy as np
import psutil
import zmq

from bcgc_sim.layout import Slot
from bcgc_sim.problems import ProblemData
from bcgc_sim.protocol import (
    PROTOCOL_VERSION,
    Message,
    MessageType,
    ProtocolError,
    clock_id,
    encode,
    parse,
    require,
)
from bcgc_sim.stragglers import distribution_from_spec, worker_rng

from .compute import SlotComputer

IDLE_POLL_MS = 500


def pin_to_core(rank: int) -> list[int] | None:
    """Pin every thread of this process (ZeroMQ's I/O thread too) to one allowed core,
    round-robin by rank; None where unsupported."""
    try:
        process = psutil.Process()
        allowed = sorted(process.cpu_affinity())
        core = allowed[rank % len(allowed)]
        process.cpu_affinity([core])
        if hasattr(os, "sched_setaffinity"):
            for thread in process.threads():
                os.sched_setaffinity(thread.id, {core})
        return [core]
    except (AttributeError, NotImplementedError, psutil.Error, OSError):
        return None


class Worker:
    def __init__(self, endpoint: str, rank: int, parent_pid: int | None, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.requested_rank = rank
        self.parent_pid = parent_pid
        self.timeout_s = timeout_s
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.run_id: str | None = None
        self.rank = rank
        self.affinity: list[int] | None = None
        self.malformed = 0
        self.clock = clock_id()

    def close(self) -> None:
        self.socket.close(0)

    def send(self, kind: MessageType, header: dict, array: np.ndarray | None = None) -> None:
        self.socket.send_multipart(encode(kind, header, array), copy=False)

    def receive(self) -> Message | None:
        """One message from the master, or None if it was malformed (counted)."""
        frames = self.socket.recv_multipart(copy=False)
        try:
            return parse([f.buffer for f in frames])
        except ProtocolError as exc:
            self.malformed += 1
            print(f"bcgc worker {self.rank}: dropped a malformed message: {exc}", file=sys.stderr)
            return None

    def serve(self) -> int:
        self.send(
            MessageType.READY,
            {"rank": self.requested_rank, "pid": os.getpid(), "protocol": PROTOCOL_VERSION},
        )
        started = time.monotonic()
        pending: Message | None = None
        while True:
            message, pending = pending, None
            if message is None:
                if not self.socket.poll(IDLE_POLL_MS, zmq.POLLIN):
                    if self.parent_pid is not None and os.getppid() != self.parent_pid:
                        return 0  # the local master is gone
                    if self.run_id is None and time.monotonic() - started > self.timeout_s:
                        print(
                            f"bcgc worker: error: no answer from the master at {self.endpoint} "
                            f"within {self.timeout_s:g} s; check the address and that the master runs",
                            file=sys.stderr,
                        )
                        return 1
                    continue
                message = self.receive()
                if message is None:
                    continue
            if message.kind is MessageType.STOP:
                return 0
            if message.kind is MessageType.SETUP:
                self.setup(message)
            elif message.kind is MessageType.ITERATE:
                pending = self.iterate(message)

    def setup(self, message: Message) -> None:
        h = message.header
        try:
            require(
                h,
                run=str,
                rank=int,
                n_workers=int,
                seed=int,
                ns_per_load=float,
                slots=list,
                partitions=dict,
                code_rows=dict,
                data=dict,
                straggler=dict,
            )
            self.rank = h["rank"]
            self.slots = [
                Slot(int(a), int(b), int(s), float(load), str(p)) for a, b, s, load, p in h["slots"]
            ]
            self.distribution = distribution_from_spec(h["straggler"])
            data = ProblemData(**h["data"])
            code_rows = {int(s): np.asarray(row, dtype=float) for s, row in h["code_rows"].items()}
            partitions = {str(k): tuple(int(v) for v in b) for k, b in h["partitions"].items()}
            self.computer = SlotComputer(data, partitions, self.rank, h["n_workers"], code_rows)
            self.seed, self.ns_per_load = h["seed"], h["ns_per_load"]
        except (ProtocolError, ValueError, TypeError, KeyError, OSError) as exc:
            self.run_id = None
            self.send(
                MessageType.FAILED, {"rank": self.requested_rank, "reason": f"set-up failed: {exc}"}
            )
            return
        if self.affinity is None and h.get("pin", True):
            self.affinity = pin_to_core(self.rank)
        self.run_id = h["run"]
        self.send(
            MessageType.SETUP_OK, {"run": self.run_id, "rank": self.rank, "affinity": self.affinity}
        )

    def iterate(self, message: Message) -> Message | None:
        """Run one iteration; return the master's message that interrupted it, if any.

        Deadlines count from the master's broadcast when both share a monotonic clock (same
        host), so that N workers time-sharing fewer cores all start together as N machines
        would; across hosts they count from this worker's receipt of theta.
        """
        received = time.monotonic_ns()
        h, theta = message.header, message.array
        if h.get("run") != self.run_id or not isinstance(h.get("iteration"), int) or theta is None:
            return None  # stale or malformed: ignore
        iteration = h["iteration"]
        shared_clock = (
            self.clock and h.get("clock") == self.clock and isinstance(h.get("sent_ns"), int)
        )
        start = h["sent_ns"] if shared_clock else received
        cycle_time = float(
            self.distribution.sample(worker_rng(self.seed, iteration, self.rank), 1)[0]
        )
        if not math.isfinite(cycle_time):
            return None  # a full straggler this iteration: never answers
        self.computer.begin(np.asarray(theta, dtype=float))
        for index, slot in enumerate(self.slots):
            values = self.computer.compute(slot)
            computed = time.monotonic_ns()
            deadline = start + round(self.ns_per_load * cycle_time * slot.load)
            interrupt = self.wait_until(deadline)
            if interrupt is not None:
                return interrupt
            header = {
                "run": self.run_id,
                "iteration": iteration,
                "worker": self.rank,
                "slot": index,
                "cycle_time": cycle_time,
                "start_ns": start,
                "received_ns": received,
                "deadline_ns": deadline,
                "computed_ns": computed,
                "overrun_ns": max(0, computed - deadline),
                "send_ns": time.monotonic_ns(),
            }
            self.send(MessageType.BLOCK, header, values)
        return None

    def wait_until(self, deadline_ns: int) -> Message | None:
        """Sleep until deadline_ns (monotonic); return early with any message from the master.

        zmq polls in whole milliseconds, so the last sub-millisecond is slept.
        """
        while True:
            remaining = deadline_ns - time.monotonic_ns()
            if self.socket.poll(max(0, remaining // 1_000_000), zmq.POLLIN):
                message = self.receive()
                if message is not None:
                    return message
                continue
            remaining = deadline_ns - time.monotonic_ns()
            if remaining <= 0:
                return None
            if remaining < 1_000_000:
                time.sleep(remaining / 1e9)
                return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers", description="bcgc-sim worker process"
    )
    parser.add_argument(
        "--connect", required=True, help="master endpoint, e.g. tcp://127.0.0.1:5555"
    )
    parser.add_argument("--rank", type=int, default=-1, help="requested rank (-1: master assigns)")
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is gone"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the master"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master tears workers down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    worker = Worker(args.connect, args.rank, args.parent_pid, args.timeout)
    try:
        return worker.serve()
    finally:
        worker.close()
