"""Worker process: `bcgc worker --connect tcp://HOST:PORT` (or `python -m workers ...`).

Loop: READY -> SETUP (plan, code rows, data, straggler law) -> SETUP_OK, then per ITERATE:
draw T_n from the seeded stream (seed, iteration, rank); for each slot in order compute the
real coded partial derivatives, hold them until the deadline
    t_start + time_scale * (M C / N) * T_n * load
and send them. Any message from the master while waiting (a newer theta, a new plan, STOP),
heartbeats excepted, abandons the iteration at once. A failed worker (T_n = inf) stays silent for
the iteration. Compute slower than the deadline is sent at once and its overrun is reported.
A SETUP with protocol "partial-r1" runs the partial-straggler protocol instead (workers/partial.py:
chunk gradients, NOTICE after each, one UPLOAD on COMBINE).

Liveness: the worker sends a HEARTBEAT whenever it has sent nothing for one heartbeat interval,
from its own loop (idle, while waiting for a deadline, between blocks), so a killed worker goes
silent. It watches its connection to the master: ZeroMQ heartbeats (ZMQ_HEARTBEAT_IVL) close
a connection whose peer stopped answering, a dead master process resets it, and the worker
exits when the connection has been down for `liveness` intervals, or at once when its local
parent (--parent-pid) is gone.
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
from zmq.utils.monitor import recv_monitor_message

from bcgc_sim.model.layout import Slot
from bcgc_sim.model.stragglers import distribution_from_spec, worker_rng
from bcgc_sim.problems import ProblemData
from bcgc_sim.wire import framing
from bcgc_sim.wire.protocol import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_LIVENESS,
    PARTIAL_PROTOCOL,
    PROTOCOL_VERSION,
    Message,
    MessageType,
    ProtocolError,
    clock_id,
    encode,
    parse,
    require,
)

from .compute import SlotComputer

RANK_VARIABLES = ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")  # set by srun, mpirun, ...


class MasterGone(Exception):
    """The master stopped talking; the worker exits."""


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


def rank_from_environment() -> int:
    """The rank a launcher gave this process (Slurm, Open MPI, MPICH/PMI), or -1."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return -1


class Worker:
    def __init__(
        self,
        endpoint: str,
        rank: int,
        parent_pid: int | None,
        timeout_s: float,
        curve: tuple[bytes, bytes, bytes] | None = None,
    ) -> None:
        """`curve` = (worker public key, worker secret key, master public key), Z85."""
        self.endpoint = endpoint
        self.requested_rank = rank
        self.parent_pid = parent_pid
        self.timeout_s = timeout_s
        framing.keep_freed_memory()  # this process moves large arrays every iteration
        self.context = zmq.Context.instance()
        self.socket = framing.configure(self.context.socket(zmq.DEALER))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.down_since: int | None = None  # when the connection to the master was lost
        if curve is not None:
            (
                self.socket.curve_publickey,
                self.socket.curve_secretkey,
                self.socket.curve_serverkey,
            ) = curve
        self.socket.connect(endpoint)
        self.run_id: str | None = None
        self.partial = None  # workers.partial.ChunkComputer under a partial-gc plan
        self.rank = rank
        self.affinity: list[int] | None = None
        self.malformed = 0
        self.clock = clock_id()
        self.heartbeat_ns = int(DEFAULT_HEARTBEAT_S * 1e9)
        self.liveness = DEFAULT_LIVENESS
        self.last_sent = time.monotonic_ns()
        self.next_check = 0  # the next time tick() looks at liveness
        self._connection_heartbeats()

    def _connection_heartbeats(self) -> None:
        """ZeroMQ-level pings on the connection: a silent master host gets disconnected. A
        receive waits at most one interval, so that liveness is checked while idle."""
        interval_ms = max(1, self.heartbeat_ns // 1_000_000)
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, interval_ms * self.liveness)
        self.socket.setsockopt(zmq.RCVTIMEO, interval_ms)

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)

    def send(self, kind: MessageType, header: dict, array: np.ndarray | None = None) -> None:
        """Send without ever blocking: with no connection to the master (not yet up, a refused
        CURVE handshake, gone) the message is dropped and the liveness rules decide."""
        try:
            framing.send(self.socket, encode(kind, header, array), framing.NOBLOCK)
        except zmq.Again:
            return
        self.last_sent = time.monotonic_ns()

    def receive(self) -> Message | None:
        """The next message from the master, waiting at most one heartbeat interval; None after
        that, or if it was malformed (counted) or a heartbeat.

        A blocking receive with a timeout (ZMQ_RCVTIMEO) rather than a poll and then a receive:
        with N workers sharing few cores, every wake-up path costs (scripts/bench_overhead.py).
        """
        try:
            frames = framing.receive(self.socket)
        except zmq.Again:
            frames = None
        self.tick()
        if frames is None:
            return None
        try:
            message = parse(frames)
        except ProtocolError as exc:
            self.malformed += 1
            print(f"bcgc worker {self.rank}: dropped a malformed message: {exc}", file=sys.stderr)
            return None
        return None if message.kind is MessageType.HEARTBEAT else message

    def tick(self) -> None:
        """Send a heartbeat if due; raise MasterGone if the master is gone. The checks run at
        most four times per heartbeat interval: this sits on the path of every message."""
        now = time.monotonic_ns()
        if now < self.next_check:
            return
        self.next_check = now + self.heartbeat_ns // 4
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            raise MasterGone("the local master process is gone")
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            self.down_since = (self.down_since or now) if event == zmq.EVENT_DISCONNECTED else None
        if self.run_id is not None and self.down_since is not None:
            if now - self.down_since > self.liveness * self.heartbeat_ns:
                raise MasterGone(
                    f"lost the connection to the master at {self.endpoint} "
                    f"{(now - self.down_since) / 1e9:.1f} s ago"
                )
        if now - self.last_sent >= self.heartbeat_ns:
            self.send(MessageType.HEARTBEAT, {"rank": self.rank, "run": self.run_id or ""})

    def poll(self, timeout_ns: int) -> bool:
        """Wait up to timeout_ns for a message, ticking at least every heartbeat interval. (The
        serve loop waits in `receive` alone; waits that end at a deadline poll first.)"""
        timeout_ms = max(0, min(timeout_ns, self.heartbeat_ns) // 1_000_000)
        ready = framing.readable(self.socket, timeout_ms)
        self.tick()
        return ready

    def serve(self) -> int:
        self.send(
            MessageType.READY,
            {"rank": self.requested_rank, "pid": os.getpid(), "protocol": PROTOCOL_VERSION},
        )
        started = time.monotonic()
        pending: Message | None = None
        try:
            while True:
                message, pending = pending, None
                if message is None:
                    message = self.receive()
                    if message is None:
                        if self.run_id is None and time.monotonic() - started > self.timeout_s:
                            print(
                                f"bcgc worker: error: no answer from the master at {self.endpoint} "
                                f"within {self.timeout_s:g} s; check the address, the keys and that the master runs this version",
                                file=sys.stderr,
                            )
                            return 1
                        continue
                if message.kind is MessageType.STOP:
                    return 0
                if message.kind is MessageType.SETUP:
                    self.setup(message)
                elif message.kind is MessageType.ITERATE:
                    pending = self.iterate(message)
        except MasterGone as gone:
            print(f"bcgc worker {self.rank}: {gone}; exiting", file=sys.stderr)
            return 3

    def setup(self, message: Message) -> None:
        h = message.header
        self.partial = None  # a BCGC plan unless the SETUP names the partial-gc protocol
        try:
            if h.get("protocol") == PARTIAL_PROTOCOL:
                from .partial import ChunkComputer  # partial-gc plans only

                require(
                    h, run=str, rank=int, n_workers=int, seed=int, ns_per_load=float,
                    data=dict, straggler=dict,
                )  # fmt: skip
                self.rank = h["rank"]
                self.distribution = distribution_from_spec(h["straggler"])
                self.partial = ChunkComputer.from_header(ProblemData(**h["data"]), h)
            else:
                require(
                    h, run=str, rank=int, n_workers=int, seed=int, ns_per_load=float, slots=list,
                    partitions=dict, code_rows=dict, data=dict, straggler=dict,
                )  # fmt: skip
                self.rank = h["rank"]
                self.slots = [
                    Slot(int(a), int(b), int(s), float(load), str(p))
                    for a, b, s, load, p in h["slots"]
                ]
                self.distribution = distribution_from_spec(h["straggler"])
                data = ProblemData(**h["data"])
                code_rows = {
                    int(s): np.asarray(row, dtype=float) for s, row in h["code_rows"].items()
                }
                partitions = {str(k): tuple(int(v) for v in b) for k, b in h["partitions"].items()}
                self.computer = SlotComputer(
                    data, partitions, self.slots, self.rank, h["n_workers"], code_rows
                )
            self.seed, self.ns_per_load = h["seed"], h["ns_per_load"]
            if not (math.isfinite(self.ns_per_load) and self.ns_per_load >= 0):
                raise ValueError(f"ns_per_load must be finite and >= 0, got {self.ns_per_load}")
            self.natural = bool(h.get("natural", False))
            self.repeat = max(1, int(h.get("repeat", 1)))
            self.heartbeat_ns = int(float(h.get("heartbeat_s", DEFAULT_HEARTBEAT_S)) * 1e9)
            self.liveness = int(h.get("liveness", DEFAULT_LIVENESS))
            self._connection_heartbeats()
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
        if self.partial is not None:
            from .partial import iterate  # the partial-gc protocol (R1)

            return iterate(self, message)
        begun = self.begin(message)
        if begun is None:
            return None  # stale or malformed: ignore
        iteration, start, received, cycle_time, theta = begun
        if not math.isfinite(cycle_time):
            return self.wait_until(None)  # a full straggler this iteration: never answers
        for _ in range(self.repeat):  # a per-worker slowdown is real extra work
            self.computer.begin(np.asarray(theta, dtype=float))
        for index, slot in enumerate(self.slots):
            for _ in range(self.repeat):
                values = self.computer.compute(slot)
            computed = time.monotonic_ns()
            deadline = (
                computed
                if self.natural
                else start + round(self.ns_per_load * cycle_time * slot.load)
            )
            interrupt = self.wait_until(deadline)
            if interrupt is not None:
                return interrupt
            header = {
                "run": self.run_id, "iteration": iteration, "worker": self.rank, "slot": index,
                "cycle_time": cycle_time, "start_ns": start, "received_ns": received,
                "deadline_ns": deadline, "overrun_ns": max(0, computed - deadline),
                "send_ns": time.monotonic_ns(),
            }  # fmt: skip
            self.send(MessageType.BLOCK, header, values)
        return None

    def begin(self, message: Message) -> tuple[int, int, int, float, np.ndarray] | None:
        """(iteration, t_start, receipt, T_n, theta) of an ITERATE, or None if stale/malformed.

        t_start is the master's broadcast on a shared monotonic clock, else this receipt.
        """
        received = time.monotonic_ns()
        h, theta = message.header, message.array
        if h.get("run") != self.run_id or not isinstance(h.get("iteration"), int) or theta is None:
            return None
        iteration = h["iteration"]
        shared_clock = (
            self.clock and h.get("clock") == self.clock and isinstance(h.get("sent_ns"), int)
        )
        start = h["sent_ns"] if shared_clock else received
        cycle_time = 0.0  # natural mode: no injected delay, messages go when computed
        if not self.natural:
            cycle_time = float(
                self.distribution.sample(worker_rng(self.seed, iteration, self.rank), 1)[0]
            )
        return iteration, start, received, cycle_time, theta

    def wait_until(self, deadline_ns: int | None) -> Message | None:
        """Sleep until deadline_ns (monotonic; None: until the master speaks); return early with
        any message from the master but a heartbeat.

        zmq polls in whole milliseconds, so the last sub-millisecond is slept.
        """
        while True:
            remaining = 2**62 if deadline_ns is None else deadline_ns - time.monotonic_ns()
            if self.poll(remaining):
                message = self.receive()
                if message is not None:
                    return message
                continue
            remaining = 2**62 if deadline_ns is None else deadline_ns - time.monotonic_ns()
            if remaining <= 0:
                return None
            if remaining < 1_000_000:
                time.sleep(remaining / 1e9)
                return None


def load_curve_keys(
    key_file: str | None, server_key_file: str | None
) -> tuple[bytes, bytes, bytes] | None:
    """(public, secret, server public) from `bcgc keygen` files; None without keys."""
    if not key_file and not server_key_file:
        return None
    if not (key_file and server_key_file):
        raise SystemExit(
            "bcgc worker: error: CURVE needs both --key (this worker's .key_secret) and --server-key (the master's .key)"
        )
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(key_file)
        server, _ = zmq.auth.load_certificate(server_key_file)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"bcgc worker: error: cannot read CURVE keys: {exc}") from None
    if secret is None:
        raise SystemExit(
            f"bcgc worker: error: {key_file} holds no secret key (use the .key_secret file)"
        )
    return public, secret, server


def build_parser(prog: str = "python -m workers") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="bcgc-sim worker process")
    parser.add_argument(
        "--connect", required=True, help="master endpoint, e.g. tcp://127.0.0.1:5555"
    )
    parser.add_argument(
        "--rank", type=int, default=None,
        help=f"requested rank (default: from {', '.join(RANK_VARIABLES)}, else the master assigns)",
    )  # fmt: skip
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is gone"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the master"
    )
    parser.add_argument("--key", help="this worker's CURVE secret key file (bcgc keygen)")
    parser.add_argument("--server-key", help="the master's CURVE public key file")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m workers") -> int:
    args = build_parser(prog).parse_args(argv)
    rank = args.rank if args.rank is not None else rank_from_environment()
    curve = load_curve_keys(args.key, args.server_key)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master tears workers down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    worker = Worker(args.connect, rank, args.parent_pid, args.timeout, curve)
    try:
        return worker.serve()
    finally:
        worker.close()
