"""A local cluster: the master's socket plus N worker processes on this machine.

Start-up refuses an N the machine cannot hold (memory, processes, file descriptors) before
spawning anything, and fails within seconds, naming the worker and its last error line, when
a worker dies at start-up (or a replacement does before it registered). `close()` (also on
Ctrl-C and on errors: use `with`) stops every worker: STOP, then SIGTERM, then SIGKILL; no
process outlives it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bcgc_sim.errors import UserError
from bcgc_sim.wire.protocol import DEFAULT_HEARTBEAT_S, DEFAULT_LIVENESS, MessageType

from .transport import PeerState, WorkerLink

WORKER_MEMORY_BYTES = 150 * 2**20  # resident size of one idle worker process, with margin
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
QUIET_MS = 100  # at the end of a remote run: no message for this long, the workers are gone


def check_capacity(n_workers: int) -> None:
    """Refuse, before starting anything, an N this machine cannot run."""
    available = psutil.virtual_memory().available
    need = n_workers * WORKER_MEMORY_BYTES
    if need > 0.8 * available:
        raise UserError(
            f"cluster.workers = {n_workers} needs about {need / 2**30:.1f} GiB for worker processes "
            f"but {available / 2**30:.1f} GiB is available; lower cluster.workers"
        )
    soft_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_files != resource.RLIM_INFINITY and 4 * n_workers + 64 > soft_files:
        raise UserError(
            f"cluster.workers = {n_workers} needs about {4 * n_workers + 64} open files but the limit "
            f"is {soft_files}; raise it with 'ulimit -n' or lower cluster.workers"
        )
    soft_procs, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft_procs != resource.RLIM_INFINITY and n_workers + len(psutil.pids()) > soft_procs:
        raise UserError(f"cluster.workers = {n_workers} exceeds the process limit {soft_procs}")


class LocalCluster:
    """Context manager: `with LocalCluster(n) as cluster: cluster.link.send(...)`."""

    def __init__(
        self,
        n_workers: int,
        startup_timeout_s: float = 60.0,
        log_dir: str | Path | None = None,
        burners: tuple[int, ...] = (),
        max_message_bytes: int = -1,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        liveness: int = DEFAULT_LIVENESS,
        transport: str = "auto",
    ) -> None:
        self.n_workers = n_workers
        self.heartbeat_s, self.liveness = heartbeat_s, liveness  # the workers' from the start
        self.transport = transport  # cluster.transport: bulk arrays by shared memory or frames
        self.startup_timeout_s = startup_timeout_s
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="bcgc-workers-"))
        self.processes: list[subprocess.Popen] = []
        self.burner_cores = burners
        self.burners: list[subprocess.Popen] = []
        self.link: WorkerLink | None = None
        self.max_message_bytes = max_message_bytes

    def start(self) -> None:
        """Bind and start the worker processes without waiting for them: they load while the
        caller prepares the run (data set, plans); `with` then waits for all to register.
        On an error the started processes are stopped."""
        check_capacity(self.n_workers)
        try:
            self.link = WorkerLink(
                "tcp://127.0.0.1", self.max_message_bytes, transport=self.transport
            )
            self._spawn()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LocalCluster:
        if self.link is None:
            self.start()
        try:
            self.link.wait_for_workers(self.n_workers, self.startup_timeout_s, self._check_alive)
            self.burners = [self._start_burner(core) for core in self.burner_cores]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def worker_command(self, rank: int) -> list[str]:
        """The command line that starts worker `rank`."""
        return [
            sys.executable,
            "-m",
            "workers",
            "--connect",
            self.link.endpoint,
            "--rank",
            str(rank),
            "--parent-pid",
            str(os.getpid()),
            "--heartbeat",
            repr(self.heartbeat_s),
            "--liveness",
            str(self.liveness),
        ]

    def _spawn(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes = [self._start_worker(rank) for rank in range(self.n_workers)]

    def _start_worker(self, rank: int) -> subprocess.Popen:
        env = {**os.environ, **SINGLE_THREADED}
        with open(self.log_dir / f"worker-{rank}.log", "ab") as log:
            return subprocess.Popen(
                self.worker_command(rank),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )

    def dead_ranks(self) -> set[int]:
        """Ranks whose process has exited; a UserError if a replacement exited before it
        registered (starting another one would fail alike)."""
        exited = {rank for rank, process in enumerate(self.processes) if process.poll() is not None}
        peers = self.link.peers.by_rank if self.link is not None else {}
        for rank in sorted(exited):
            if rank in peers and peers[rank].state is PeerState.AWAITING:
                raise UserError(
                    f"the replacement for worker {rank} exited at start-up with status "
                    f"{self.processes[rank].returncode}: {self.last_error(rank)}"
                )
        return exited

    def respawn(self, rank: int) -> None:
        """Start a replacement process for `rank` (the old one is killed if still there)."""
        old = self.processes[rank]
        if old.poll() is None:
            old.kill()
        old.wait()
        self.processes[rank] = self._start_worker(rank)

    @staticmethod
    def _start_burner(core: int) -> subprocess.Popen:
        """A process that keeps `core` busy: natural stragglers for the workers pinned there."""
        code = (
            f"import os\nif hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, {{{core}}})\n"
            "while True: pass"
        )
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)

    def _check_alive(self) -> None:
        for rank, process in enumerate(self.processes):
            status = process.poll()
            if status is not None:
                raise UserError(
                    f"worker {rank} exited at start-up with status {status}: {self.last_error(rank)}"
                )

    def last_error(self, rank: int) -> str:
        """The last non-empty line worker `rank` wrote to stderr."""
        try:
            lines = (
                (self.log_dir / f"worker-{rank}.log")
                .read_text(errors="replace")
                .strip()
                .splitlines()
            )
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(no output)"

    def close(self, grace_s: float = 0.5) -> None:
        """Stop every worker within about grace_s + 0.5 s (STOP, then SIGTERM, then SIGKILL)."""
        if self.link is not None:
            # every rank, live or not: one declared dead may still be alive
            for rank in list(self.link.identities):
                self.link.send(rank, MessageType.STOP, {})
        for burner in self.burners:
            burner.kill()
            burner.wait()
        self.burners = []
        end = time.monotonic() + grace_s
        for process in self.processes:
            try:
                process.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.terminate()
        end = time.monotonic() + 0.5
        for process in self.processes:
            try:
                process.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.link is not None:
            self.link.close()
            self.link = None


class RemoteCluster:
    """The master's side of a multi-host run: bind, then wait for N workers started elsewhere
    (`bcgc worker --connect ...` by ssh, srun, mpirun, ...). Dead workers are noticed by silence;
    a replacement is whatever worker connects next."""

    def __init__(
        self,
        n_workers: int,
        bind: str,
        startup_timeout_s: float,
        max_message_bytes: int = -1,
        curve=None,
        log=print,
        transport: str = "auto",
    ) -> None:
        self.n_workers = n_workers
        self.transport = transport
        self.bind = bind
        self.startup_timeout_s = startup_timeout_s
        self.max_message_bytes = max_message_bytes
        self.curve = curve
        self.log = log
        self.link: WorkerLink | None = None

    def __enter__(self) -> RemoteCluster:
        self.link = WorkerLink(self.bind, self.max_message_bytes, self.curve, self.transport)
        try:
            self.log(
                f"master listening on {self.link.endpoint}: start {self.n_workers} workers with "
                f"'bcgc worker --connect {self.link.endpoint}'"
                + (" --key WORKER.key_secret --server-key MASTER.key" if self.curve else "")
            )
            self.link.wait_for_workers(
                self.n_workers, self.startup_timeout_s, report=self.startup_report
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def startup_report(self) -> str:
        """Who connected (rank, host, pid), which ranks are missing and who was refused (how
        often, why, from where): the end of the error line when the start-up timed out."""
        peers = self.link.peers.by_rank
        live = {r: p for r, p in sorted(peers.items()) if p.state is PeerState.LIVE}
        connected = [f"rank {r} ({p.host or 'unknown host'}, pid {p.pid})" for r, p in live.items()]
        missing = [str(r) for r in range(self.n_workers) if r not in live]
        refused = [
            f"{count} x {reason} from {host or 'an unknown host'}"
            for (reason, host), count in sorted(self.link.refused.items())
        ]
        if self.link.allow is not None:  # counted by the authenticator's thread
            refused += [
                f"{count} x CURVE key {key.decode(errors='replace')[:10]}... not in --allow"
                for key, count in sorted(dict(self.link.allow.refused).items())
            ]
        return (
            f"connected: {', '.join(connected) or 'none'}; missing: rank "
            f"{', '.join(missing)} (start them or raise --timeout); refused: {', '.join(refused) or 'none'}"
        )

    def dead_ranks(self) -> set[int]:
        return set()  # remote processes are judged by their silence (heartbeats)

    def respawn(self, rank: int) -> None:
        self.log(
            f"worker {rank} is gone: start a replacement with 'bcgc worker --connect {self.link.endpoint}'"
        )

    def close(self, grace_s: float = 0.5) -> None:
        """STOP every worker, then read until they fell quiet (at most grace_s): a socket
        closed with unread bytes resets its connections, and a reset can discard the STOP
        before the worker read it."""
        if self.link is not None:
            # every rank, live or not: one declared dead may still be alive
            for rank in list(self.link.identities):
                self.link.send(rank, MessageType.STOP, {})
            end = time.monotonic() + grace_s
            while time.monotonic() < end and self.link.drain(QUIET_MS):
                pass
            self.link.close(linger_ms=500)
            self.link = None
