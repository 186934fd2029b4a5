"""Worker process: `bcgc worker --connect tcp://HOST:PORT` (or `python -m workers ...`).

Loop: READY -> SETUP (plan, code rows, data, straggler law) -> SETUP_OK, then per ITERATE:
draw T_n from the seeded stream (seed, iteration, rank); for each slot in order compute the
real coded partial derivatives, hold them until the deadline
    t_start + time_scale * (M C / N) * T_n * load
and send them. Any message from the master while waiting (a newer theta, a new plan, STOP),
heartbeats excepted, abandons the iteration at once. A failed worker (T_n = inf) stays silent for
the iteration. Compute slower than the deadline is sent at once and its overrun is reported.
The unit loop is workers/loop.py's, run with the job the SETUP built: SlotJob (workers/slots.py)
for a slot plan, ChunkJob (workers/partial.py: chunk gradients, NOTICE after each, one UPLOAD on
COMBINE) for a SETUP with protocol "partial-r1". This module keeps the connection, liveness and
set-up.

Liveness: the worker sends a HEARTBEAT whenever it has sent nothing for one heartbeat interval,
from its own loop (idle, while waiting for a deadline, between blocks), so a killed worker goes
silent. It says READY (its rank, a random token, the run it is set up for) each time a
connection to the master completes its handshake: after a dropped TCP connection the master
finds the same worker under a new routing id and re-sends what was lost. A local worker
(--parent-pid) exits at once when that process is gone. A remote one watches the connection:
ZeroMQ heartbeats (set before connect(), where ZeroMQ reads them) close a connection whose peer
stopped answering, and the worker exits once the master has been unreachable for
`liveness` x `heartbeat` seconds in all (DownTimes), whether the host went silent, the process
died or the connection stays half-open. The master's values come with SETUP; a worker started
with others reconnects once to take them (--heartbeat and --liveness set them from the start).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zmq

from bcgc_sim.model.stragglers import distribution_from_spec, worker_rng
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
)
from bcgc_sim.wire.shm import Unavailable, WorkerSegments

from .loop import Job, Pace, Stamp, run_iteration
from .slots import SlotJob

# The launchers' rank variables, most specific first: mpirun inside a Slurm allocation starts
# its daemons with srun, so its ranks inherit the daemon's SLURM_PROCID (a node index) as well.
RANK_VARIABLES = (
    "OMPI_COMM_WORLD_RANK",  # Open MPI's mpirun
    "PMIX_RANK",  # PMIx launchers (Open MPI 4 and 5, srun --mpi=pmix)
    "PMI_RANK",  # MPICH and Intel MPI (Hydra)
    "SLURM_PROCID",  # srun
)


class MasterGone(Exception):
    """The master stopped talking; the worker exits."""


def pin_to_core(rank: int) -> list[int] | None:
    """Pin every thread of this process (ZeroMQ's I/O thread too) to one allowed core,
    round-robin by rank; None where unsupported. Linux needs only os (a worker starts faster
    without psutil); elsewhere psutil pins the process where it can."""
    if hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task"):
        try:
            allowed = sorted(os.sched_getaffinity(0))
            core = allowed[rank % len(allowed)]
            for thread in os.listdir("/proc/self/task"):
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    os.sched_setaffinity(int(thread), {core})
            return [core]
        except OSError:
            return None
    import psutil

    try:
        process = psutil.Process()
        allowed = sorted(process.cpu_affinity())
        core = allowed[rank % len(allowed)]
        process.cpu_affinity([core])
        return [core]
    except (AttributeError, NotImplementedError, psutil.Error, OSError):
        return None


def rank_from_environment(environ: Mapping[str, str] = os.environ) -> int:
    """The rank a launcher gave this process (Open MPI, PMIx, MPICH/PMI, Slurm), or -1.

    The first of RANK_VARIABLES that is set decides; a value that is not a whole number >= 0
    (after surrounding blanks) is a launcher problem worth stopping for (RankError)."""
    for name in RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if not value:
            continue
        if not value.isascii() or not value.isdigit():
            raise RankError(f"{name}={environ[name]!r} is not a rank (a whole number >= 0)")
        return int(value)
    return -1


class RankError(ValueError):
    """A launcher's rank variable holds something that is not a rank."""


@dataclass(frozen=True)
class DownTimes:
    """How a remote worker splits the liveness window W = liveness x heartbeat (h), so that it
    exits within W of a master that went silent: the master's I/O thread must answer a ZeroMQ
    heartbeat within `timeout_ns`, and a connection that is down (closed, timed out, or a
    handshake that never completes) may take `grace_ns` to come back. The rest of W, 1.75 h, is
    one interval to the next ping, noticing the closed connection (two waits of h / 4) and the
    check's own h / 4. At liveness 2 and 3 each part is at least h / 2, and W runs over by up
    to 0.75 h."""

    interval_ns: int
    timeout_ns: int
    grace_ns: int

    @classmethod
    def of(cls, heartbeat_ns: int, liveness: int) -> DownTimes:
        budget = max(0, 4 * liveness - 7) * heartbeat_ns // 4  # W - 1.75 h
        least = heartbeat_ns // 2
        timeout = max(least, budget // 3)
        return cls(heartbeat_ns, timeout, max(least, budget - timeout))


class Worker:
    def __init__(
        self,
        endpoint: str,
        rank: int,
        parent_pid: int | None,
        timeout_s: float,
        curve: tuple[bytes, bytes, bytes] | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        liveness: int = DEFAULT_LIVENESS,
    ) -> None:
        """`curve` = (worker public key, worker secret key, master public key), Z85."""
        self.endpoint = endpoint
        self.requested_rank = rank
        self.parent_pid = parent_pid
        self.timeout_s = timeout_s
        self.curve = curve
        framing.keep_freed_memory()  # this process moves large arrays every iteration
        self.context = zmq.Context.instance()
        self.token = os.urandom(16).hex()  # names this process to the master across reconnects
        self.run_id: str | None = None
        self.job: Job | None = None  # built from SETUP: slots (BCGC) or chunks (partial-gc)
        self.pace = Pace(0.0)  # ns per load, natural mode, repetitions: from SETUP
        self.seed = 0
        self.distribution = None  # the straggler law T_n is drawn from (SETUP)
        self.rank = rank
        self.affinity: list[int] | None = None
        self.malformed = 0
        self.clock = clock_id()
        self.shared = WorkerSegments(self.clock)  # bulk arrays by shared memory (same host)
        self.heartbeat_ns = int(heartbeat_s * 1e9)
        self.liveness = liveness
        self.last_sent = time.monotonic_ns()
        self.next_check = 0  # the next time tick() looks at liveness
        self.reopened = False  # the connection was renewed on purpose (_take_liveness)
        self._open()

    def _open(self) -> None:
        """A new DEALER socket to the master. Every liveness option is set before connect():
        ZeroMQ copies them into the connection there, and ignores later changes."""
        self.times = DownTimes.of(self.heartbeat_ns, self.liveness)
        interval_ms = max(1, self.heartbeat_ns // 1_000_000)
        socket = framing.configure(self.context.socket(zmq.DEALER))
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.IMMEDIATE, 1)  # nothing queues for a connection that is down
        socket.setsockopt(zmq.RCVTIMEO, max(1, interval_ms // 4))  # receive() ticks this often
        socket.setsockopt(zmq.RECONNECT_IVL, max(10, min(100, interval_ms // 2)))
        if self.parent_pid is None:  # a local master is watched through its process instead
            socket.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
            socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, self.times.timeout_ns // 1_000_000))
            socket.setsockopt(zmq.HANDSHAKE_IVL, interval_ms * self.liveness)
        if self.curve is not None:
            socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = self.curve
        self.monitor = socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        self.connected = False
        self.down_since: int | None = time.monotonic_ns()  # down until the handshake succeeds
        self.socket = socket
        socket.connect(self.endpoint)

    def _take_liveness(self, heartbeat_ns: int, liveness: int) -> None:
        """Use the master's heartbeat and liveness. A remote worker needs a new connection for
        ZeroMQ's heartbeats to follow; its READY there names the run just set up."""
        self.heartbeat_ns, self.liveness = heartbeat_ns, liveness
        if self.parent_pid is not None:
            self.times = DownTimes.of(heartbeat_ns, liveness)
            self.socket.setsockopt(zmq.RCVTIMEO, max(1, heartbeat_ns // 4_000_000))
            return
        self.close()
        self._open()
        self.reopened = True
        if not self._wait_connected(self.liveness * self.heartbeat_ns / 1e9):
            raise MasterGone(f"no connection to the master at {self.endpoint} after a reconnect")

    def close(self) -> None:
        self.shared.close()
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)

    def send(self, kind: MessageType, header: dict, array: np.ndarray | None = None) -> None:
        """Send without ever blocking: with no connection to the master (not yet up, a refused
        CURVE handshake, gone) the message is dropped and the liveness rules decide."""
        if not self.connected:  # a connection that came back says READY before anything else
            self._connection_events(time.monotonic_ns())
        frames = None if array is None else self.shared.frames(kind, header, array)
        try:
            framing.send(self.socket, frames or encode(kind, header, array), framing.NOBLOCK)
        except zmq.Again:
            return
        self.last_sent = time.monotonic_ns()

    def _ready(self) -> None:
        header = {
            "rank": self.rank,
            "pid": os.getpid(),
            "protocol": PROTOCOL_VERSION,
            "token": self.token,
            "run": self.run_id or "",
            "heartbeat_s": self.heartbeat_ns / 1e9,
            "settings": self.reopened,  # a new connection for new liveness settings: nothing lost
        }
        self.reopened = False
        self.send(MessageType.READY, header)

    def _connection_events(self, now: int) -> None:
        """Follow the connection: up once a handshake succeeded (then say READY), down from
        the moment it closed."""
        while framing.readable(self.monitor, 0):
            event = framing.monitor_event(self.monitor)
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected, self.down_since = True, None
                self._ready()
            elif event == zmq.EVENT_DISCONNECTED and self.connected:
                self.connected, self.down_since = False, now

    def _wait_connected(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for a connection to the master; True once there is one."""
        end = time.monotonic() + timeout_s
        while not self.connected:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                raise MasterGone("the local master process is gone")
            framing.readable(self.monitor, max(1, min(100, int(remaining * 1000))))
            self._connection_events(time.monotonic_ns())
        return True

    def receive(self) -> Message | None:
        """The next message from the master, waiting at most a quarter heartbeat interval; None
        after that, or if it was malformed (counted) or a heartbeat.

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
            message = parse(frames, self.shared.table)  # the master's segment, once mapped
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
        self._connection_events(now)
        if self.parent_pid is None and self.down_since is not None:
            if now - self.down_since > self.times.grace_ns:
                raise MasterGone(
                    f"lost the connection to the master at {self.endpoint} "
                    f"{(now - self.down_since) / 1e9:.1f} s ago (it stopped answering or is gone)"
                )
        if self.connected and now - self.last_sent >= self.heartbeat_ns:
            self.send(MessageType.HEARTBEAT, {"rank": self.rank, "run": self.run_id or ""})

    def poll(self, timeout_ns: int) -> bool:
        """Wait up to timeout_ns for a message, ticking at least every quarter heartbeat
        interval. (The serve loop waits in `receive` alone; waits that end at a deadline poll
        first.)"""
        timeout_ms = max(0, min(timeout_ns, self.heartbeat_ns // 4) // 1_000_000)
        ready = framing.readable(self.socket, timeout_ms)
        self.tick()
        return ready

    def serve(self) -> int:
        try:
            if not self._wait_connected(self.timeout_s):
                print(
                    f"bcgc worker: error: no answer from the master at {self.endpoint} "
                    f"within {self.timeout_s:g} s: {handshake_problem(self.endpoint, self.curve)}",
                    file=sys.stderr,
                )
                return 1
            pending: Message | None = None
            while True:
                message, pending = pending, None
                if message is None:
                    message = self.receive()
                    if message is None:
                        continue
                if message.kind is MessageType.STOP:
                    reason = message.header.get("reason")
                    if reason:
                        print(
                            f"bcgc worker {self.rank}: error: the master stopped this worker: {reason}",
                            file=sys.stderr,
                        )
                        return 1
                    return 0
                if message.kind is MessageType.SETUP:
                    self.setup(message)
                elif message.kind is MessageType.ITERATE:
                    pending = self.iterate(message)
                elif self.job is not None:  # a COMBINE whose UPLOAD may have been lost
                    self.job.between(self, message)
        except MasterGone as gone:
            print(f"bcgc worker {self.rank}: {gone}; exiting", file=sys.stderr)
            return 3

    def setup(self, message: Message) -> None:
        h = message.header
        try:
            heartbeat_ns, liveness, shared = self._while_ticking(lambda: self._load(h))
        except (ProtocolError, ValueError, TypeError, KeyError, OSError, Unavailable) as exc:
            self.run_id = None
            self.send(
                MessageType.FAILED, {"rank": self.requested_rank, "reason": f"set-up failed: {exc}"}
            )
            return
        self.run_id = h["run"]
        if (heartbeat_ns, liveness) != (self.heartbeat_ns, self.liveness):
            self._take_liveness(heartbeat_ns, liveness)
        if self.affinity is None and h.get("pin", True):
            self.affinity = pin_to_core(self.rank)
        self.send(
            MessageType.SETUP_OK,
            {
                "run": self.run_id,
                "rank": self.rank,
                "affinity": self.affinity,
                "heartbeat_s": self.heartbeat_ns / 1e9,
                **shared,
            },
        )

    def _while_ticking(self, work):
        """work() in a helper thread while this one keeps ticking (heartbeats, liveness): a
        set-up that imports modules or maps data for longer than the liveness window must not
        look like a dead worker. Its result, or its exception raised here."""
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - raised again in this thread
                outcome["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(self.heartbeat_ns / 4e9)
            self.tick()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _load(self, h: dict) -> tuple[int, int, dict]:
        """Take a SETUP's plan, data, straggler law and shared-memory offer (no messages: it
        runs beside tick()); returns the master's heartbeat (ns), liveness and the SETUP_OK
        fields that announce this worker's segment (none without an offer it could take)."""
        if h.get("protocol") == PARTIAL_PROTOCOL:
            from .partial import ChunkJob  # partial-gc plans only

            job: Job = ChunkJob.from_setup(h)
        else:
            job = SlotJob.from_setup(h)
        self.job, self.rank = job, h["rank"]
        self.distribution = distribution_from_spec(h["straggler"])
        self.seed, ns_per_load = h["seed"], h["ns_per_load"]
        if not (math.isfinite(ns_per_load) and ns_per_load >= 0):
            raise ValueError(f"ns_per_load must be finite and >= 0, got {ns_per_load}")
        natural, repeat = bool(h.get("natural", False)), max(1, int(h.get("repeat", 1)))
        self.pace = Pace(ns_per_load, natural, repeat)
        heartbeat_ns = int(float(h.get("heartbeat_s", DEFAULT_HEARTBEAT_S)) * 1e9)
        liveness = int(h.get("liveness", DEFAULT_LIVENESS))
        if not (heartbeat_ns > 0 and liveness >= 2):
            raise ValueError(f"bad heartbeat_s {heartbeat_ns / 1e9} or liveness {liveness}")
        # room for one iteration's arrays (job.sent_bytes) in each half of this worker's segment
        shared = self.shared.setup(h.get("shm_offer"), self.rank, job.sent_bytes)
        return heartbeat_ns, liveness, shared

    def iterate(self, message: Message) -> Message | None:
        """Run one iteration (workers/loop.py); return the master's message that interrupted
        it, if any."""
        if self.job is None:
            return None  # no plan yet: nothing to compute
        return run_iteration(self, self.job, self.pace, message)

    def begin(self, message: Message) -> Stamp | None:
        """The iteration an ITERATE starts, or None if stale/malformed.

        Deadlines count from the master's broadcast when both share a monotonic clock (same
        host), so that N workers time-sharing fewer cores all start together as N machines
        would; across hosts they count from this worker's receipt of theta.
        """
        received = time.monotonic_ns()
        h, theta = message.header, message.array
        if h.get("run") != self.run_id or not isinstance(h.get("iteration"), int) or theta is None:
            return None
        iteration = h["iteration"]
        self.shared.replying = "shm" in h  # answer by reference iff theta came by reference
        shared_clock = (
            self.clock and h.get("clock") == self.clock and isinstance(h.get("sent_ns"), int)
        )
        start = h["sent_ns"] if shared_clock else received
        cycle_time = 0.0  # natural mode: no injected delay, messages go when computed
        if not self.pace.natural:
            rng = worker_rng(self.seed, iteration, self.rank)
            cycle_time = float(self.distribution.sample(rng, 1)[0])
        fields = {
            "run": self.run_id,
            "iteration": iteration,
            "worker": self.rank,
            "cycle_time": cycle_time,
            "start_ns": start,
            "received_ns": received,
        }
        return Stamp(iteration, start, received, cycle_time, theta, fields)

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


HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def handshake_problem(
    endpoint: str, curve: tuple[bytes, bytes, bytes] | None, wait_s: float = 1.0
) -> str:
    """What is likely wrong when no master answered: judged from the handshake of one more
    connection to `endpoint` with the same keys (ZeroMQ's monitor events), within wait_s."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        socket.curve_publickey, socket.curve_secretkey, socket.curve_serverkey = curve
    monitor = socket.get_monitor_socket(HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        socket.connect(endpoint)
        end = time.monotonic() + wait_s
        while (remaining := end - time.monotonic()) > 0:
            if not monitor.poll(max(1, int(remaining * 1000))):
                break
            event = framing.monitor_event(monitor)
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return (
                    "the master refused this worker's CURVE key: its public key (the .key file "
                    "made with --key's .key_secret) is not in the master's --allow folder"
                )
            if event & HANDSHAKE_FAILED and curve is not None:
                return (
                    "the CURVE handshake failed: --server-key is likely not the master's public "
                    "key (its .key file), or the master runs without CURVE"
                )
            if event & HANDSHAKE_FAILED:
                return (
                    "the handshake failed: the master likely needs CURVE keys (--key, --server-key)"
                )
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return "a connection works now, but no master answered; check that it runs this version"
    finally:
        socket.disable_monitor()
        monitor.close(0)
        socket.close(0)
    return "nothing answered there; check the address and that the master is running"


def endpoint_problem(endpoint: str) -> str | None:
    """Why `endpoint` is no ZeroMQ endpoint a worker can connect to, or None if it is one."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc"):
        return f"--connect needs an endpoint like tcp://HOST:PORT, got '{endpoint}'"
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not (host and colon and port.isdigit() and 0 < int(port) < 65536):
            return f"--connect needs a host and a port 1..65535, e.g. tcp://HOST:5555, got '{endpoint}'"
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


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(prog: str = "python -m workers") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="bcgc-sim worker process")
    parser.add_argument(
        "--connect", required=True, help="master endpoint, e.g. tcp://127.0.0.1:5555"
    )
    parser.add_argument(
        "--rank",
        type=int,
        default=None,
        help=f"requested rank (default: from {', '.join(RANK_VARIABLES)}, else the master assigns)",
    )
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is gone"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for a connection to the master"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT_S,
        help="seconds between heartbeats until the master's set-up says otherwise",
    )
    parser.add_argument(
        "--liveness",
        type=int,
        default=DEFAULT_LIVENESS,
        help="heartbeat intervals without the master before exiting (until the set-up says)",
    )
    parser.add_argument("--key", help="this worker's CURVE secret key file (bcgc keygen)")
    parser.add_argument("--server-key", help="the master's CURVE public key file")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m workers") -> int:
    args = build_parser(prog).parse_args(argv)
    problem = endpoint_problem(args.connect)
    if problem is None and not args.timeout > 0:
        problem = f"--timeout must be a positive number of seconds, got {args.timeout}"
    if problem is not None:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return 2
    try:
        rank = args.rank if args.rank is not None else rank_from_environment()
    except RankError as exc:
        print(f"{prog}: error: {exc}; give --rank or fix the launcher", file=sys.stderr)
        return 2
    curve = load_curve_keys(args.key, args.server_key)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master tears workers down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if not (args.heartbeat > 0 and args.liveness >= 2):
        raise SystemExit("bcgc worker: error: --heartbeat must be > 0 and --liveness >= 2")
    worker = Worker(
        args.connect, rank, args.parent_pid, args.timeout, curve, args.heartbeat, args.liveness
    )
    try:
        return worker.serve()
    finally:
        worker.close()
