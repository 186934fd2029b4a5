"""The system runtime model: every block's arrival at the master on real, shared cores.

Named `machine` beside `runtime` (the papers' tau) and `system` (the papers' N, L, M, C record):
it runs a plan on a machine, cores, messages and the master's CPU included. This is the
reference event simulation of the testbed's loop (spec/system-model.md), iteration after
iteration, priced by SystemCosts (model/costs.py):

* the master (one thread) broadcasts theta: one send after the other, worker n's theta leaves
  when the n-th send is done and wakes the worker latency_s later; it then takes the
  messages in arrival order, each costing CPU; slot k is decoded at its first N - s messages
  of the iteration; when every slot is, the runtime (broadcast to last decode) is recorded
  and the master does its between-iteration work before the next broadcast;
* worker n takes theta and then, slot by slot, runs the forward pass over the parts the slot
  first needs (model/work.py) and the coded partial derivatives (times its random T_n and its
  slowdown), optionally holds the message until an injected deadline (no CPU), and sends it
  (CPU on its core). After each slot's compute it
  looks for a newer theta and abandons the old iteration if there is one: stale work keeps
  its core busy until then, and stale messages still cost the master;
* cores: worker n is pinned to core n mod P; burners are threads that are always runnable;
  the master runs on its last core, or on an idle one if its own is busy when it wakes.
  Each core picks its runnable threads as Linux's EEVDF scheduler does, with equal weights:
  a thread that wakes is placed at the core's average virtual time V with a virtual deadline
  slice_s later; at every wake-up on the core and at every send (a send wakes I/O threads,
  which preempt) the eligible thread (virtual time <= V) with the earliest deadline runs; a
  thread that runs past its deadline gets a new one and is preempted at the next tick.
  In effect: short bursts run to completion in wake-up order, and a worker that has run more
  than its share yields at its next send.

With cores = 0 every worker and the master get their own core (N machines). With every cost
zero and deadlines T_n (M C / N) S_k, block arrival times are the papers' (spec/bcgc.md §3).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .costs import FLOAT_BYTES, SystemCosts
from .plans import Plan
from .streams import ROOT_SYSTEM, generator
from .work import PlanWork, plan_work

_CORE, _THETA, _MESSAGE, _HOLD_END = 0, 1, 2, 3  # event kinds
_RECEIVE, _FORWARD, _DERIVATIVE, _HOLD, _SEND = 0, 1, 2, 3, 4  # worker pieces
_BROADCAST, _TAKE, _BETWEEN = 0, 1, 2  # master pieces and phases
_EPS = 1e-13  # seconds of work below which a piece counts as finished (rounding)
WARMUP_ITERATIONS = 2  # simulated before the recorded ones: stale work needs a past


@dataclass(frozen=True)
class Machine:
    """Where the plan runs: cores (0 = one per worker and one for the master), burners (cores
    with a busy process), per-worker slowdown repetitions, and whether the master checks
    the gradient between iterations (run.check)."""

    cores: int = 0
    burners: tuple[int, ...] = ()
    repeat: tuple[int, ...] = ()
    check: bool = False


@dataclass(frozen=True)
class Trace:
    """The simulated iterations. Times in seconds from each iteration's broadcast; NaN for a
    message never sent (abandoned) or never taken by the master in its iteration."""

    runtime: np.ndarray  # (I,)
    broadcast: np.ndarray  # (I,): when each iteration's broadcast began (seconds from 0)
    idle_wakes: np.ndarray  # (threads,): wake-ups on an idle core (workers, burners, master, I/O)
    wake_cpu: np.ndarray  # (threads,): seconds those wake-ups took (SystemCosts.wake_after_s)
    wakes: np.ndarray  # (threads,): wake-ups from sleep
    decoded: np.ndarray  # (I, slots)
    sent: np.ndarray  # (I, N, slots): the worker's send
    taken: np.ndarray  # (I, N, slots): the master finished taking it


def simulate(
    work: PlanWork,
    costs: SystemCosts,
    machine: Machine,
    multipliers: np.ndarray,
    deadlines: np.ndarray | None = None,
) -> Trace:
    """Simulate len(multipliers) consecutive iterations of one plan.

    multipliers: (I, N) compute multipliers T_n per iteration (inf: the worker never answers);
    deadlines: (I, N, slots) seconds after the broadcast before which slot k is not sent
    (injected mode), or None (natural mode: sent when computed).
    """
    return _Simulation(work, costs, machine, multipliers, deadlines).run()


class _Cores:
    """The cores' EEVDF state (Linux's fair scheduler since 6.6, equal weights).

    Per thread a virtual time v (CPU seconds it received) and a virtual deadline; per core
    the queued threads, whose mean virtual time is V. A thread with v <= V is eligible; the
    eligible runnable thread with the earliest deadline runs. A waking thread is placed at
    V - lag, lag being V - v when it last left the queue (clamped to `limit`), with a deadline
    one slice later. A thread that sleeps having run more than its share (lag < 0) stays
    queued, delayed, until V reaches its v (Linux's DELAY_DEQUEUE, lag then 0): the CPU it
    took ahead is paid back by waiting after it wakes, however briefly it slept.
    """

    def __init__(self, cores: int, threads: int, slice_s: float, tick_s: float) -> None:
        self.slice, self.tick = slice_s, tick_s
        self.limit = max(2 * slice_s, tick_s)
        self.queued: list[list[int]] = [[] for _ in range(cores)]
        self.total = [0.0] * cores  # sum of the queued threads' virtual times
        self.awake = [0] * cores  # queued threads that are not delayed
        self.current = [-1] * cores
        self.since = [0.0] * cores  # when the running thread's work was last accounted
        self.version = [0] * cores  # invalidates scheduled core events
        self.vtime = [0.0] * threads
        self.deadline = [0.0] * threads
        self.lag = [0.0] * threads
        self.core = [-1] * threads  # the core a queued thread is on (-1: not queued)
        self.delayed = [False] * threads
        self.average = [0.0] * cores  # V of each core when it was last computed
        self.debt = [0.0] * threads  # a fixed negative lag at every wake-up (the master's)

    def mean_vtime(self, core: int) -> float:
        count = len(self.queued[core])
        if count:
            self.average[core] = self.total[core] / count
        return self.average[core]

    def runnable(self, core: int) -> int:
        return self.awake[core]

    def charge(self, thread: int, core: int, seconds: float) -> None:
        """The running `thread` received `seconds` of CPU."""
        self.vtime[thread] += seconds
        self.total[core] += seconds

    def wake(self, thread: int, core: int) -> None:
        if self.core[thread] == core and self.delayed[thread]:
            self.delayed[thread] = False  # still queued: it keeps its virtual time
            self.awake[core] += 1
            return
        if self.core[thread] >= 0:  # delayed on another core: leave it first
            self.leave(thread)
        if self.debt[thread] > 0:
            v = self.mean_vtime(core) + self.debt[thread]
        else:
            v = self.mean_vtime(core) - self.lag[thread]
        self.vtime[thread] = v
        self.deadline[thread] = v + self.slice
        self.core[thread] = core
        self.queued[core].append(thread)
        self.total[core] += v
        self.awake[core] += 1

    def sleep(self, thread: int) -> None:
        core = self.core[thread]
        if self.current[core] == thread:
            self.current[core] = -1
        if self.vtime[thread] > self.mean_vtime(core) + _EPS and not self.debt[thread]:
            self.delayed[thread] = True  # negative lag: stays queued until it is paid back
            self.awake[core] -= 1
        else:
            self.leave(thread)

    def leave(self, thread: int) -> None:
        """Take `thread` off its core's queue, keeping its lag."""
        core = self.core[thread]
        lag = self.mean_vtime(core) - self.vtime[thread]
        self.lag[thread] = min(max(lag, -self.limit), self.limit)
        self.queued[core].remove(thread)
        self.total[core] -= self.vtime[thread]
        if not self.queued[core]:
            self.total[core] = 0.0  # no rounding drift on an empty core
        if not self.delayed[thread]:
            self.awake[core] -= 1
        self.core[thread] = -1
        self.delayed[thread] = False
        if self.current[core] == thread:
            self.current[core] = -1

    def settle(self, core: int) -> None:
        """Dequeue the delayed threads whose lag is paid back (Linux's DELAY_ZERO: lag 0)."""
        if self.awake[core] == len(self.queued[core]):
            return
        while True:
            average = self.mean_vtime(core) + _EPS
            done = [t for t in self.queued[core] if self.delayed[t] and self.vtime[t] <= average]
            if not done:
                return
            for t in done:
                self.leave(t)
                self.lag[t] = 0.0

    def pick(self, core: int) -> int:
        """The eligible runnable thread with the earliest virtual deadline (-1: idle)."""
        self.settle(core)
        if not self.awake[core]:
            self.current[core] = -1
            return -1
        average = self.mean_vtime(core) + _EPS
        vtime, deadline, delayed = self.vtime, self.deadline, self.delayed
        best, key = -1, None
        for t in self.queued[core]:
            if delayed[t] or vtime[t] > average:
                continue
            k = (deadline[t], vtime[t])
            if key is None or k < key:
                best, key = t, k
        if best < 0:  # none eligible (rounding): the earliest deadline of the runnable
            best = min(
                (t for t in self.queued[core] if not delayed[t]),
                key=lambda t: (deadline[t], vtime[t]),
            )
        self.current[core] = best
        return best


class _Simulation:
    def __init__(self, work, costs, machine, multipliers, deadlines) -> None:
        self.work, self.costs = work, costs
        n = self.n = work.n_workers
        self.multipliers = np.asarray(multipliers, dtype=float)
        self.iterations = self.multipliers.shape[0]
        self.deadlines = None if deadlines is None else np.asarray(deadlines, dtype=float)
        dedicated = machine.cores <= 0
        n_cores = n + 1 if dedicated else machine.cores
        burners = () if dedicated else tuple(c % n_cores for c in machine.burners)
        self.master = n + len(burners)  # the master's main thread
        self.relay = self.master + 1  # the master's I/O thread: it sends theta to each worker
        threads = self.relay + 1
        master_core = n if dedicated else 0
        self.home = [w % n_cores for w in range(n)] + list(burners) + [master_core] * 2
        self.floating = not dedicated  # the master's threads go where a core is free
        self.cpu = _Cores(n_cores, threads, costs.slice_s, costs.tick_s)
        if not dedicated:
            self.cpu.debt[self.master] = self.cpu.debt[self.relay] = costs.master_lag_s
        self.remaining = [0.0] * threads
        self.repeat = np.ones(n) if not machine.repeat else np.asarray(machine.repeat, float)
        self.events: list[tuple] = []
        self.sequence = 0
        self.time = 0.0
        self._worker_pieces()
        self._master_costs(machine)
        slots = len(work.slots)
        self.runtime = np.full(self.iterations, math.inf)
        self.decoded = np.full((self.iterations, slots), math.nan)
        self.sent = np.full((self.iterations, n, slots), math.nan)
        self.taken = np.full((self.iterations, n, slots), math.nan)
        # workers
        self.chain = [-1] * n  # iteration of the chain in progress (-1: idle)
        self.position = [0] * n
        self.newest = [-1] * n  # the newest theta received
        self.holding = [False] * n
        self.hold_version = [0] * n
        # master
        self.current = 0  # the master's iteration
        self.broadcast_at = np.zeros(self.iterations)
        self.inbox: deque = deque()  # (worker, slot, iteration) in arrival order
        self.count = np.zeros(slots, dtype=int)
        self.seen = 0  # messages taken in this iteration (priced after the last decode)
        self.master_piece: tuple[int, int] | None = None
        self.phase: int | None = None
        self.next_worker = -1
        self.left = 0
        # the I/O thread's work in order: (True, worker, iteration) a theta to send, or
        # (False, worker, code) a message to pass to the master
        self.outbox: deque = deque()
        self.segments: list | None = None  # (core, thread, start, end) when recording
        self.idle_wakes = [0] * threads  # wake-ups on an idle core, per thread
        self.wake_cpu = [0.0] * threads  # ... their seconds
        self.idle_since = [0.0] * n_cores  # when each core last went idle
        self.busy = [False] * n_cores
        self.wakes = [0] * threads  # wake-ups from sleep, per thread
        for b in range(n, self.master):
            self.remaining[b] = math.inf  # a burner never finishes
            self._wake(b, self.home[b])
        self._open_iteration()
        self._master_continue(on_core=False)

    # -- set-up -------------------------------------------------------------------------------
    def _worker_pieces(self) -> None:
        """Per worker the pieces of one chain: (kind, CPU seconds at T = 1, slot)."""
        c, w = self.costs, self.work
        receive = c.theta_receive_s + c.byte_s * w.theta_bytes
        self.pieces = []
        for n in range(self.n):
            pieces = [(_RECEIVE, receive, -1)]
            for k, slot in enumerate(w.slots):
                pieces.append((_FORWARD, float(w.slot_forward_s[n, k]), k))
                pieces.append((_DERIVATIVE, float(w.derivative_s[n, k]), k))
                if self.deadlines is not None:
                    pieces.append((_HOLD, 0.0, k))
                pieces.append((_SEND, c.message_s(slot.width), k))
            self.pieces.append(pieces)

    def _master_costs(self, machine: Machine) -> None:
        c, w = self.costs, self.work
        self.theta_cost = c.theta_send_s + c.byte_s * w.theta_bytes
        self.take_cost = [c.master_message_s + c.byte_s * s.bytes for s in w.slots]
        self.relay_cost = [c.relay_s + c.byte_s * s.bytes for s in w.slots]
        self.add_cost = [
            c.decode_element_s * s.width if s.stragglers == 0 else 0.0 for s in w.slots
        ]
        self.decode_cost = [
            c.decode_s + c.decode_element_s * (self.n - s.stragglers) * s.width
            if s.stragglers > 0
            else 0.0
            for s in w.slots
        ]
        work = c.gradient_s if machine.check else c.forward_s
        self.between_cost = c.iteration_s + (
            work(w.rows, w.coordinates) if machine.check else work(w.rows, w.coordinates, 1)
        )
        self.needed = [self.n - s.stragglers for s in w.slots]

    # -- the event loop -----------------------------------------------------------------------
    def _push(self, time: float, kind: int, a: int, b: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, self.sequence, kind, a, b))

    def run(self, until: int | None = None) -> Trace:
        """Simulate until `until` iterations are done (all by default); may be resumed."""
        stop = self.iterations if until is None else min(until, self.iterations)
        while self.events and self.current < stop:
            time, _, kind, a, b = heapq.heappop(self.events)
            if not math.isfinite(time):
                break
            self.time = time
            if kind == _CORE:
                if b == self.cpu.version[a]:
                    self._core_event(a)
            elif kind == _THETA:
                self._theta(a, b)
            elif kind == _MESSAGE:
                self._message(a, b)
            elif b == self.hold_version[a]:  # _HOLD_END
                self._hold_end(a)
        return Trace(
            self.runtime,
            self.broadcast_at.copy(),
            np.array(self.idle_wakes),
            np.array(self.wake_cpu),
            np.array(self.wakes),
            self.decoded,
            self.sent,
            self.taken,
        )

    # -- cores --------------------------------------------------------------------------------
    def _account(self, core: int) -> None:
        """Charge the running thread for the time since the core was last looked at."""
        cpu = self.cpu
        thread = cpu.current[core]
        elapsed = self.time - cpu.since[core]
        cpu.since[core] = self.time
        if thread >= 0 and elapsed > 0:
            if self.segments is not None:
                self.segments.append((core, thread, self.time - elapsed, self.time))
            self.remaining[thread] -= elapsed
            cpu.charge(thread, core, elapsed)
            if cpu.vtime[thread] >= cpu.deadline[thread] - _EPS:  # its slice is used up
                cpu.deadline[thread] = cpu.vtime[thread] + cpu.slice

    def _schedule(self, core: int, repick: bool = True) -> None:
        """(Re)pick the core's thread and schedule its next event: the end of its piece, or
        the tick at which it is preempted for having run past its deadline. (A core that
        goes idle does not pull a waiting thread from a busy one: traced on the development
        VM, Linux's idle balancing left the master waiting behind workers while the other
        core idled for hundreds of microseconds.)"""
        cpu = self.cpu
        cpu.version[core] += 1
        thread = cpu.pick(core) if repick or cpu.current[core] < 0 else cpu.current[core]
        if thread < 0:
            if self.busy[core]:
                self.idle_since[core] = self.time
                self.busy[core] = False
            return
        self.busy[core] = True
        end = self.time + self.remaining[thread]
        if cpu.runnable(core) > 1:
            over = self.time + max(cpu.deadline[thread] - cpu.vtime[thread], 0.0)
            tick = math.ceil(over / cpu.tick) * cpu.tick
            end = min(end, tick if tick > self.time else self.time + cpu.tick)
        self._push(end, _CORE, core, cpu.version[core])

    def _core_event(self, core: int) -> None:
        cpu = self.cpu
        self._account(core)
        thread = cpu.current[core]
        if self.remaining[thread] <= _EPS:
            self.remaining[thread] = 0.0
            repick = self._piece_done(thread)
            if cpu.current[core] == thread:  # it goes on (else it slept and the core picked)
                self._schedule(core, repick)
            return
        self._schedule(core)  # a tick after its deadline: pick again

    def _wake(self, thread: int, core: int) -> None:
        """`thread` becomes runnable on `core`: a wake-up, so the core picks again. An idle
        core first has to come back (the longer the longer it was idle: wake_after_s, spent
        before the thread's work)."""
        self._account(core)
        if not self.cpu.runnable(core):
            wake = self.costs.wake_after_s(self.time - self.idle_since[core])
            self.remaining[thread] += wake
            self.wake_cpu[thread] += wake
            self.idle_wakes[thread] += 1
        self.wakes[thread] += 1
        if thread == self.master:
            self.remaining[thread] += self.costs.master_wake_s
        if self.cpu.core[thread] >= 0 and self.cpu.core[thread] != core:
            self._account(self.cpu.core[thread])
        self.cpu.wake(thread, core)
        self._schedule(core)

    def _block(self, thread: int) -> None:
        """`thread` sleeps: its core picks another."""
        core = self.cpu.core[thread]
        self._account(core)
        self.cpu.sleep(thread)
        self._schedule(core)

    def _preempt_point(self, core: int) -> None:
        """A wake-up of a thread the model folds into another (an I/O thread): pick again."""
        self._account(core)
        self._schedule(core)

    def _floating_core(self, thread: int) -> int:
        """Where a waking master thread runs: its last core if idle, else an idle core, else
        its last core."""
        home = self.home[thread]
        if not self.floating or not self.cpu.runnable(home):
            return home
        for core in range(len(self.cpu.queued)):
            if not self.cpu.runnable(core):
                self.home[thread] = core
                return core
        return home

    def _piece_done(self, thread: int) -> bool:
        """A piece of the running `thread` finished: its effect, then its next piece (or it
        sleeps). True if the core should pick again (a send wakes I/O threads)."""
        if thread == self.master:
            self._master_effect(self.master_piece)
            self._master_continue(on_core=True)
            return False
        if thread == self.relay:
            self._relay_effect(self.outbox.popleft())
            self._relay_continue(on_core=True)
            return False
        kind, _, slot = self.pieces[thread][self.position[thread]]
        if kind == _DERIVATIVE and self.newest[thread] >= 0:  # the check after a slot
            self.chain[thread] = -1  # a newer theta: abandon this iteration
        else:
            if kind == _SEND:
                self._send(thread, slot, self.chain[thread])
            self.position[thread] += 1
        self._continue(thread, on_core=True)
        return kind == _SEND

    # -- workers ------------------------------------------------------------------------------
    def _theta(self, worker: int, iteration: int) -> None:
        self.newest[worker] = iteration
        if self.holding[worker]:  # a newer theta ends a hold at once
            self.holding[worker] = False
            self.hold_version[worker] += 1
            self.chain[worker] = -1
            self._continue(worker, on_core=False)
        elif self.chain[worker] < 0:  # idle: wake up
            self._continue(worker, on_core=False)
        else:  # busy: it looks for the new theta after its slot; its I/O thread wakes now
            self._preempt_point(self.home[worker])

    def _begin(self, worker: int) -> bool:
        """Start the chain of the newest theta; False if there is none, or for a failed
        worker (T = inf this iteration), which stays silent until the next theta."""
        iteration = self.newest[worker]
        self.newest[worker] = -1
        if iteration < 0 or not math.isfinite(self.multipliers[iteration, worker]):
            self.chain[worker] = -1
            return False
        self.chain[worker] = iteration
        self.position[worker] = 0
        return True

    def _continue(self, worker: int, on_core: bool) -> None:
        """Go on with the worker's pieces from its position: set up the next piece with work
        (waking the worker if it was off-core), or sleep (a hold; the chain is done and no
        newer theta waits). Zero-cost pieces take effect at once."""
        while True:
            if self.chain[worker] < 0 and not self._begin(worker):
                if on_core:
                    self._block(worker)
                return
            pieces, iteration = self.pieces[worker], self.chain[worker]
            if self.position[worker] >= len(pieces):
                self.chain[worker] = -1  # chain done
                continue
            kind, base, slot = pieces[self.position[worker]]
            if kind == _HOLD:
                due = self.broadcast_at[iteration] + self.deadlines[iteration, worker, slot]
                if due > self.time:
                    self.holding[worker] = True
                    self.hold_version[worker] += 1
                    self._push(due, _HOLD_END, worker, self.hold_version[worker])
                    if on_core:
                        self._block(worker)
                    return
                self.position[worker] += 1
                continue
            load = base
            if kind in (_FORWARD, _DERIVATIVE):
                load = base * self.multipliers[iteration, worker] * self.repeat[worker]
            if load > 0:
                self.remaining[worker] = load
                if not on_core:
                    self._wake(worker, self.home[worker])
                return
            if kind == _DERIVATIVE and self.newest[worker] >= 0:
                self.chain[worker] = -1
                continue
            if kind == _SEND:
                self._send(worker, slot, iteration)
            self.position[worker] += 1

    def _hold_end(self, worker: int) -> None:
        self.holding[worker] = False
        self.position[worker] += 1
        self._continue(worker, on_core=False)

    def _send(self, worker: int, slot: int, iteration: int) -> None:
        self.sent[iteration, worker, slot] = self.time - self.broadcast_at[iteration]
        self._push(
            self.time + self.costs.latency_s, _MESSAGE, worker, slot * self.iterations + iteration
        )

    # -- the master's I/O thread ------------------------------------------------------------
    def _relay_continue(self, on_core: bool) -> None:
        """The I/O thread takes on its next item (free items take effect at once), or sleeps."""
        while self.outbox:
            cost = self._relay_cost(self.outbox[0])
            if cost > 0:
                self.remaining[self.relay] = cost
                if not on_core:
                    self._wake(self.relay, self._floating_core(self.relay))
                return
            self._relay_effect(self.outbox.popleft())
        if on_core:
            self._block(self.relay)

    def _relay_cost(self, item: tuple[bool, int, int]) -> float:
        theta, _, code = item
        if theta:
            return self.theta_cost
        return self.relay_cost[code // self.iterations]

    def _relay_effect(self, item: tuple[bool, int, int]) -> None:
        theta, worker, code = item
        if theta:
            self._push(self.time + self.costs.latency_s, _THETA, worker, code)
            return
        self.inbox.append((worker, code // self.iterations, code % self.iterations))
        if self.master_piece is None:  # the master was waiting: wake it
            self._master_continue(on_core=False)

    def _relay_add(self, item: tuple[bool, int, int]) -> None:
        """Queue an item for the I/O thread, waking it if it has nothing to do."""
        idle = not self.outbox  # else it is busy with outbox[0]
        self.outbox.append(item)
        if idle:
            self._relay_continue(on_core=False)

    # -- the master ---------------------------------------------------------------------------
    def _message(self, worker: int, code: int) -> None:
        self._relay_add((False, worker, code))

    def _master_continue(self, on_core: bool) -> None:
        """Set up the master's next piece with work (waking it if it slept), or sleep."""
        while True:
            piece = self._master_choose()
            self.master_piece = piece
            if piece is None:
                if on_core:
                    self._block(self.master)
                return
            cost = self._master_cost(piece)
            if cost > 0:
                self.remaining[self.master] = cost
                if not on_core:
                    self._wake(self.master, self._floating_core(self.master))
                return
            self._master_effect(piece)

    def _master_choose(self) -> tuple[int, int] | None:
        if self.phase == _BROADCAST:
            return (_BROADCAST, self.next_worker)
        if self.phase == _BETWEEN:
            return (_BETWEEN, 0)
        if self.phase == _TAKE and self.inbox:
            return (_TAKE, 0)
        return None

    def _master_cost(self, piece: tuple[int, int]) -> float:
        kind = piece[0]
        if kind == _BROADCAST:  # theta is copied into the shared segment once, for all
            first = self.costs.copy_byte_s * self.work.theta_bytes if piece[1] == 0 else 0.0
            return self.costs.broadcast_s + first
        if kind == _BETWEEN:
            return self.between_cost + self.costs.master_after_message_s * self.seen
        worker, slot, iteration = self.inbox[0]
        cost = self.take_cost[slot]
        if iteration == self.current and self.count[slot] < self.needed[slot]:
            cost += self.add_cost[slot]
            if self.count[slot] + 1 == self.needed[slot]:
                cost += self.decode_cost[slot]
        return cost

    def _master_effect(self, piece: tuple[int, int]) -> None:
        kind, worker = piece
        if kind == _BROADCAST:
            self._relay_add((True, worker, self.current))
            self.next_worker += 1
            if self.next_worker >= self.n:
                self.phase = _TAKE
            return
        if kind == _BETWEEN:
            self.current += 1
            if self.current < self.iterations:
                self._open_iteration()
            else:
                self.phase = None
            return
        worker, slot, iteration = self.inbox.popleft()
        self.seen += 1
        self.taken[iteration, worker, slot] = self.time - self.broadcast_at[iteration]
        if iteration != self.current or self.count[slot] >= self.needed[slot]:
            return
        self.count[slot] += 1
        if self.count[slot] < self.needed[slot]:
            return
        self.decoded[iteration, slot] = self.time - self.broadcast_at[iteration]
        self.left -= 1
        if self.left == 0:
            self.runtime[iteration] = self.time - self.broadcast_at[iteration]
            self.phase = _BETWEEN

    def _open_iteration(self) -> None:
        """Start iteration self.current (its broadcast); an iteration that full stragglers
        make undecodable gets runtime inf and is skipped."""
        while self.current < self.iterations:
            answering = int(np.isfinite(self.multipliers[self.current]).sum())
            self.broadcast_at[self.current] = self.time
            if answering >= max(self.needed, default=0):
                break
            self.current += 1
        if self.current >= self.iterations:
            self.phase = None
            return
        self.phase = _BROADCAST
        self.next_worker = 0
        self.count[:] = 0
        self.seen = 0
        self.left = len(self.work.slots)


SYSTEM_SAMPLES = 400  # most simulated iterations per prediction
SYSTEM_MIN_SAMPLES = 20  # fewest, before the precision is looked at
SYSTEM_PRECISION = 0.02  # stop once the standard error is this fraction of the mean


def system_runtimes(
    plan: Plan,
    rows: int,
    coordinates: int,
    costs: SystemCosts,
    machine: Machine,
    samples: int | None,
    seed: int,
    precision: float = SYSTEM_PRECISION,
) -> np.ndarray:
    """Runtimes (seconds) of consecutive natural-mode iterations of `plan`, after
    WARMUP_ITERATIONS; the same seed gives every scheme the same compute multipliers.

    `samples` iterations; None: at least SYSTEM_MIN_SAMPLES, then in steps of as many until
    the standard error of their mean is at most `precision` of it (or SYSTEM_SAMPLES)."""
    most = SYSTEM_SAMPLES if samples is None else samples
    multipliers = costs.cycle_times(
        generator(seed, ROOT_SYSTEM, 0), (most + WARMUP_ITERATIONS, plan.n_workers)
    )
    work = plan_work(plan, rows, coordinates, costs)
    simulation = _Simulation(work, costs, machine, multipliers, None)
    if samples is not None:
        return simulation.run().runtime[WARMUP_ITERATIONS:]
    done = min(SYSTEM_MIN_SAMPLES, most)
    while True:
        runtime = simulation.run(WARMUP_ITERATIONS + done).runtime[WARMUP_ITERATIONS:][:done]
        finite = runtime[np.isfinite(runtime)]
        if done >= most or not finite.size or finite.size < runtime.size:
            return runtime
        error = finite.std(ddof=1) / math.sqrt(finite.size)
        if error <= precision * finite.mean():
            return runtime
        done = min(most, done + SYSTEM_MIN_SAMPLES)


__all__ = [
    "FLOAT_BYTES",
    "SYSTEM_SAMPLES",
    "Machine",
    "Trace",
    "simulate",
    "system_runtimes",
]
