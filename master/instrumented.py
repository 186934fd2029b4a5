"""A local cluster that measures where the CPU goes: the probe behind `bcgc calibrate`.

It wraps LocalCluster (nothing of the testbed changes) and records, per scheme run (run id):
- every thread's CPU and run-queue wait (Linux /proc/<pid>/task/<tid>/schedstat, ns) at the
  broadcast of two chosen iterations: the master's main thread, its I/O thread, each worker's
  main and I/O threads; divided by the iterations between them, CPU seconds per iteration;
- the CPU every other process on the machine used meanwhile (the neighbours' load), so that
  a round measured under foreign load can be told apart and repeated;
- the master loop's own CPU (CLOCK_THREAD_CPUTIME_ID) around each receive and broadcast of
  the link: per iteration the CPU of the broadcast, of taking messages until the last decode,
  and of the work after the clock stopped (book-keeping, records, loss, the next theta).
Where /proc has no schedstat (not Linux) the thread figures are absent (None).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bcgc_sim.wire.protocol import MessageType

PROC = Path("/proc")
WAIT_NS = 20_000  # a receive this much longer than its own CPU slept until a message came


def thread_times(pid: int) -> dict[int, tuple[str, int, int]]:
    """{tid: (name, CPU ns, run-queue wait ns)} of every thread of process `pid`."""
    out = {}
    try:
        tids = os.listdir(PROC / str(pid) / "task")
    except OSError:
        return out
    for tid in tids:
        base = PROC / str(pid) / "task" / tid
        try:
            name = (base / "comm").read_text().strip()
            run, wait, _ = (base / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (name, int(run), int(wait))
    return out


def foreign_cpu_ns(own: set[int]) -> int:
    """CPU ns used so far by every user process not in `own` (kernel threads excluded)."""
    total = 0
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            if not (PROC / entry / "cmdline").read_bytes():
                continue  # a kernel thread
            total += int((PROC / entry / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Snapshot:
    wall_ns: int
    threads: dict[tuple[str, int], tuple[int, int]]  # (role, rank) -> (CPU ns, wait ns), summed
    foreign_ns: int


@dataclass
class LoopTiming:
    """The master loop's thread CPU (ns) per iteration of one run."""

    broadcast: list[int] = field(default_factory=list)
    taking: list[int] = field(default_factory=list)  # broadcast end to the last receive's end
    after: list[int] = field(default_factory=list)  # last receive's end to the next broadcast
    messages: list[int] = field(default_factory=list)  # receives that returned a message
    waits: list[int] = field(default_factory=list)  # ... of which the master slept first


class InstrumentedCluster:
    """Context manager around a cluster (LocalCluster-like: .link, .processes, .burners)."""

    def __init__(self, inner, marks: tuple[int, int]) -> None:
        self.inner = inner
        self.marks = marks  # the two iterations whose broadcasts are snapshot
        self.snapshots: dict[str, dict[int, Snapshot]] = {}
        self.loops: dict[str, LoopTiming] = {}
        self._main = threading.main_thread().native_id

    def __enter__(self) -> InstrumentedCluster:
        self.cluster = self.inner.__enter__()
        self._wrap(self.cluster.link)
        return self

    def __exit__(self, *exc) -> None:
        self.inner.__exit__(*exc)

    @property
    def link(self):
        return self.cluster.link

    def dead_ranks(self) -> set[int]:
        return self.cluster.dead_ranks()

    def respawn(self, rank: int) -> None:
        self.cluster.respawn(rank)

    def _own_pids(self) -> set[int]:
        pids = {os.getpid()}
        pids |= {p.pid for p in self.cluster.processes}
        pids |= {p.pid for p in getattr(self.cluster, "burners", [])}
        return pids

    def snapshot(self) -> Snapshot:
        threads: dict[tuple[str, int], list[int]] = {}

        def add(key, run, wait):
            total = threads.setdefault(key, [0, 0])
            total[0] += run
            total[1] += wait

        for tid, (name, run, wait) in thread_times(os.getpid()).items():
            role = "master" if tid == self._main else "master-io" if "IO" in name else "other"
            add((role, -1), run, wait)
        for rank, process in enumerate(self.cluster.processes):
            for tid, (name, run, wait) in thread_times(process.pid).items():
                role = "worker" if tid == process.pid else "worker-io" if "IO" in name else "other"
                add((role, rank), run, wait)
        frozen = {k: (v[0], v[1]) for k, v in threads.items()}
        return Snapshot(time.monotonic_ns(), frozen, foreign_cpu_ns(self._own_pids()))

    def _wrap(self, link) -> None:
        broadcast, receive = link.broadcast, link.receive
        clock = time.thread_time_ns
        state = {"run": None, "mark": 0, "messages": 0}

        def timed_broadcast(kind, header, array, ranks):
            if kind is not MessageType.ITERATE:
                return broadcast(kind, header, array, ranks)
            run, iteration = header.get("run"), header.get("iteration")
            loop = self.loops.setdefault(run, LoopTiming())
            now = clock()
            if state["run"] == run:
                loop.after.append(now - state["mark"])
            if iteration in self.marks:
                self.snapshots.setdefault(run, {})[iteration] = self.snapshot()
                now = clock()
            broadcast(kind, header, array, ranks)
            end = clock()
            loop.broadcast.append(end - now)
            loop.taking.append(0)
            loop.messages.append(0)
            loop.waits.append(0)
            state.update(run=run, mark=end, start=end)
            return None

        def timed_receive(timeout_ms):
            wall, cpu = time.monotonic_ns(), clock()
            received = receive(timeout_ms)
            if received is not None and state["run"] is not None:
                loop = self.loops[state["run"]]
                now = clock()
                loop.taking[-1] = now - state["start"]
                loop.messages[-1] += 1
                # a receive that took far longer than its CPU waited for the message
                loop.waits[-1] += time.monotonic_ns() - wall - (now - cpu) > WAIT_NS
                state["mark"] = now
            return received

        link.broadcast = timed_broadcast
        link.receive = timed_receive


def per_iteration(first: Snapshot, last: Snapshot, iterations: int) -> dict:
    """CPU seconds per iteration by (role, rank), and the foreign CPU seconds per wall second."""
    cpu = {
        key: (run - first.threads[key][0]) / iterations / 1e9
        for key, (run, _) in last.threads.items()
        if key in first.threads
    }
    wall = (last.wall_ns - first.wall_ns) / 1e9
    return {"cpu": cpu, "foreign": (last.foreign_ns - first.foreign_ns) / 1e9 / wall}
