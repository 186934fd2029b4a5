"""The system runtime model: every block's arrival at the master on real, shared cores.

Named `machine` beside `runtime` (the papers' tau) and `system` (the papers' N, L, M, C record):
it runs a plan on a machine, cores, burners, messages and the master's CPU included.

An event simulation of the testbed's own loop (spec/system-model.md), iteration after iteration:

* the master broadcasts theta (one send per worker), then takes the messages in arrival order,
  each costing CPU (receive, bytes, decode); block k is decoded at its first N - s messages of
  the iteration; when every block is, the runtime (broadcast to last decode) is recorded, the
  master does its between-iteration work (iteration_s, loss or check gradient) and broadcasts
  the next theta;
* worker n receives theta (CPU), runs its forward pass and then, slot by slot, the coded partial
  derivatives (CPU, times its random T_n and its slowdown factor), optionally holds the message
  until an injected deadline (no CPU), and sends it (CPU); a message reaches the master
  latency_s (+ an exponential spread) later. A newer theta abandons the iteration at the next
  check (after a slot's compute, or during a hold); a worker still computing the last one
  keeps its core busy until then, and stale messages still cost the master;
* cores are shared round-robin with a time slice `quantum_s`: worker n is pinned to core
  n mod P, burners keep their core busy forever, the master runs wherever a core is idle (else
  on the least crowded one) whenever it has work.

With cores = 0 every worker and the master get their own core (N machines). With every cost
zero and deadlines T_n (M C / N) S_k, block arrival times are the papers' (spec/bcgc.md §3).
Randomness: the compute multipliers / deadlines given by the caller (common random numbers
across schemes) and the latency spread (a stream of the caller's generator).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .costs import SystemCosts
from .plans import Plan
from .streams import ROOT_SYSTEM, generator
from .work import PlanWork, plan_work

_SEGMENT, _THETA, _MESSAGE, _HOLD_END = 0, 1, 2, 3  # event kinds
_RECEIVE, _FORWARD, _DERIVATIVE, _HOLD, _SEND = 0, 1, 2, 3, 4  # worker task kinds
_BROADCAST, _COLLECT, _BETWEEN = 0, 1, 2  # master phases
_DONE = 1e-13  # seconds of work below which a task counts as finished (rounding)


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
    message never sent in time (abandoned) or never taken by the master."""

    runtime: np.ndarray  # (I,)
    decoded: np.ndarray  # (I, slots)
    sent: np.ndarray  # (I, N, slots): the worker's send
    taken: np.ndarray  # (I, N, slots): the master finished taking it


def simulate(
    work: PlanWork,
    costs: SystemCosts,
    machine: Machine,
    multipliers: np.ndarray,
    deadlines: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> Trace:
    """Simulate len(multipliers) consecutive iterations of one plan.

    multipliers: (I, N) compute multipliers T_n per iteration (inf: the worker never finishes);
    deadlines: (I, N, slots) seconds after the broadcast before which slot k is not sent
    (injected mode), or None (natural mode: sent when computed).
    """
    return _Simulation(work, costs, machine, multipliers, deadlines, rng).run()


class _Simulation:
    def __init__(self, work, costs, machine, multipliers, deadlines, rng) -> None:
        self.work, self.costs = work, costs
        n = self.n = work.n_workers
        self.multipliers = np.asarray(multipliers, dtype=float)
        self.iterations = self.multipliers.shape[0]
        self.deadlines = None if deadlines is None else np.asarray(deadlines, dtype=float)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        dedicated = machine.cores <= 0
        self.cores = n + 1 if dedicated else machine.cores
        burners = () if dedicated else tuple(c % self.cores for c in machine.burners)
        self.master = n + len(burners)
        jobs = self.master + 1
        self.home = [w % self.cores for w in range(n)] + list(burners) + [n if dedicated else -1]
        self.repeat = np.ones(n) if not machine.repeat else np.asarray(machine.repeat, float)
        self.remaining = [0.0] * jobs
        for b in range(n, self.master):
            self.remaining[b] = math.inf  # a burner never finishes
        self.on_core = list(self.home)
        self.queues = [deque() for _ in range(self.cores)]
        self.running = [-1] * self.cores
        self.segment_start = [0.0] * self.cores
        self.slice_end = [0.0] * self.cores
        self.version = [0] * self.cores
        self.events: list[tuple] = []
        self.sequence = 0
        self._worker_templates(machine)
        self._master_costs(machine)
        slots = len(work.slots)
        self.runtime = np.full(self.iterations, math.inf)
        self.decoded = np.full((self.iterations, slots), math.nan)
        self.sent = np.full((self.iterations, n, slots), math.nan)
        self.taken = np.full((self.iterations, n, slots), math.nan)
        # worker state
        self.chain = [-1] * n  # iteration of the chain in progress (-1: none)
        self.position = [0] * n
        self.pending: list[deque] = [deque() for _ in range(n)]
        self.hold_version = [0] * n
        self.holding = [False] * n
        # master state
        self.current = 0  # the master's iteration
        self.broadcast_at = np.zeros(self.iterations)
        self.inbox: deque = deque()  # (worker, slot, iteration) in arrival order
        self.count = np.zeros(slots, dtype=int)
        self._open_iteration(0.0)
        for b in range(n, self.master):
            self._runnable(b, 0.0)

    # -- set-up -------------------------------------------------------------------------------
    def _worker_templates(self, machine: Machine) -> None:
        """Per worker the task list of one chain: (kind, CPU seconds at T = 1, slot)."""
        c, w = self.costs, self.work
        receive = c.receive_s + c.byte_s * w.theta_bytes
        self.templates = []
        for n in range(self.n):
            tasks = [(_RECEIVE, receive, -1), (_FORWARD, float(w.forward_s[n]), -1)]
            for k, slot in enumerate(w.slots):
                tasks.append((_DERIVATIVE, float(w.derivative_s[n, k]), k))
                if self.deadlines is not None:
                    tasks.append((_HOLD, 0.0, k))
                tasks.append((_SEND, c.send_s + c.byte_s * slot.bytes, k))
            self.templates.append(tasks)

    def _master_costs(self, machine: Machine) -> None:
        c, w = self.costs, self.work
        self.broadcast_cost = c.send_s + c.byte_s * w.theta_bytes
        self.take_cost = [c.master_receive_s + c.byte_s * s.bytes for s in w.slots]
        self.decode_cost = [c.decode_element_s * s.width for s in w.slots]
        self.decode_once = [c.decode_s if s.stragglers > 0 else 0.0 for s in w.slots]
        between = c.iteration_s
        if machine.check:
            between += c.gradient_s(w.rows, w.coordinates)
        else:
            between += c.forward_s(w.rows, w.coordinates, 1)
        self.between_cost = between
        self.needed = [self.n - s.stragglers for s in w.slots]

    # -- events -------------------------------------------------------------------------------
    def _push(self, time: float, kind: int, a: int, b: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, self.sequence, kind, a, b))

    def _latency(self) -> float:
        spread = self.costs.latency_spread_s
        return self.costs.latency_s + (spread * self.rng.standard_exponential() if spread else 0.0)

    def run(self) -> Trace:
        self._master_work(0.0)
        while self.events and self.current < self.iterations:
            time, _, kind, a, b = heapq.heappop(self.events)
            if not math.isfinite(time):
                break
            if kind == _SEGMENT:
                if b == self.version[a]:
                    self._segment_end(a, time)
            elif kind == _THETA:
                self._theta(a, b, time)
            elif kind == _MESSAGE:
                self._message(a, b, time)
            elif b == self.hold_version[a]:  # _HOLD_END
                self.holding[a] = False
                self.position[a] += 1
                self._worker_continue(a, time)
        return Trace(self.runtime, self.decoded, self.sent, self.taken)

    # -- cores --------------------------------------------------------------------------------
    def _runnable(self, job: int, time: float) -> None:
        core = self.home[job]
        if core < 0:  # the master: an idle core, else the least crowded
            core = min(
                range(self.cores),
                key=lambda c: (self.running[c] >= 0, len(self.queues[c]), c),
            )
        self.on_core[job] = core
        if self.running[core] < 0:
            self._start(core, job, time)
        else:
            self.queues[core].append(job)

    def _start(self, core: int, job: int, time: float) -> None:
        self.running[core] = job
        self.slice_end[core] = time + self.costs.quantum_s
        self._segment(core, time)

    def _segment(self, core: int, time: float) -> None:
        job = self.running[core]
        self.segment_start[core] = time
        self.version[core] += 1
        end = min(time + self.remaining[job], self.slice_end[core])
        self._push(end, _SEGMENT, core, self.version[core])

    def _segment_end(self, core: int, time: float) -> None:
        job = self.running[core]
        self.remaining[job] -= time - self.segment_start[core]
        if self.remaining[job] <= _DONE:
            self.remaining[job] = 0.0
            if not self._task_done(job, time):  # the job blocked or finished
                self._next(core, time)
                return
        if time >= self.slice_end[core] and self.queues[core]:
            self.queues[core].append(job)
            self._next(core, time)
        elif time >= self.slice_end[core]:
            self._start(core, job, time)
        else:
            self._segment(core, time)

    def _next(self, core: int, time: float) -> None:
        if self.queues[core]:
            self._start(core, self.queues[core].popleft(), time)
        else:
            self.running[core] = -1

    def _task_done(self, job: int, time: float) -> bool:
        """Side effects of a finished task; True if the job has more work now."""
        if job == self.master:
            return self._master_done(time)
        return self._worker_done(job, time)

    # -- workers ------------------------------------------------------------------------------
    def _theta(self, worker: int, iteration: int, time: float) -> None:
        self.pending[worker].append(iteration)
        if self.chain[worker] < 0 or self.holding[worker]:  # idle, or a hold: start at once
            self.holding[worker] = False
            self.hold_version[worker] += 1
            if self._begin(worker, time):
                self._runnable(worker, time)

    def _begin(self, worker: int, time: float) -> bool:
        """Start the chain of the oldest pending theta (its receive task first); False for a
        failed worker (T = inf), which stays silent and idle until the next theta."""
        while self.pending[worker]:
            iteration = self.pending[worker].popleft()
            if math.isfinite(self.multipliers[iteration, worker]):
                self.chain[worker] = iteration
                self.position[worker] = 0
                self.remaining[worker] = self.templates[worker][0][1]
                return True
        self.chain[worker] = -1
        return False

    def _worker_done(self, worker: int, time: float) -> bool:
        kind, _, slot = self.templates[worker][self.position[worker]]
        iteration = self.chain[worker]
        if kind == _SEND:
            self.sent[iteration, worker, slot] = time - self.broadcast_at[iteration]
            self._push(time + self._latency(), _MESSAGE, worker, slot * self.iterations + iteration)
        elif kind == _DERIVATIVE and self.pending[worker]:  # the check after a slot's compute
            return self._begin(worker, time)
        self.position[worker] += 1
        return self._worker_continue(worker, time, queued=False)

    def _worker_continue(self, worker: int, time: float, queued: bool = True) -> bool:
        """Set up the worker's next task with work; True if it has one. queued: it is not on a
        core now (after a hold) and must be made runnable."""
        tasks = self.templates[worker]
        iteration = self.chain[worker]
        while self.position[worker] < len(tasks):
            kind, base, slot = tasks[self.position[worker]]
            if kind == _HOLD:
                due = self.broadcast_at[iteration] + self.deadlines[iteration, worker, slot]
                if due > time:
                    self.holding[worker] = True
                    self.hold_version[worker] += 1
                    self._push(due, _HOLD_END, worker, self.hold_version[worker])
                    return False
                self.position[worker] += 1
                continue
            load = base
            if kind in (_FORWARD, _DERIVATIVE):
                load = base * self.multipliers[iteration, worker] * self.repeat[worker]
            if load > 0:
                self.remaining[worker] = load
                if queued:
                    self._runnable(worker, time)
                return True
            if kind == _SEND:
                self.sent[iteration, worker, slot] = time - self.broadcast_at[iteration]
                self._push(
                    time + self._latency(), _MESSAGE, worker, slot * self.iterations + iteration
                )
            elif kind == _DERIVATIVE and self.pending[worker]:
                return self._restart(worker, time, queued)
            self.position[worker] += 1
        self.chain[worker] = -1  # chain done: wait for the next theta
        return self._restart(worker, time, queued)

    def _restart(self, worker: int, time: float, queued: bool) -> bool:
        if not self._begin(worker, time):
            return False
        if queued:
            self._runnable(worker, time)
        return True

    # -- master -------------------------------------------------------------------------------
    def _message(self, worker: int, code: int, time: float) -> None:
        self.inbox.append((worker, code // self.iterations, code % self.iterations))
        if self.task is None and self.phase == _COLLECT:  # the master was waiting: wake it
            self.task = _COLLECT
            self._master_work(time)

    def _master_work(self, time: float) -> bool:
        """Set up the master's task: True if it needs CPU (made runnable if it is off-core);
        zero-cost tasks take effect at once."""
        while self.task is not None:
            cost = self._master_cost()
            if cost > 0:
                self.remaining[self.master] = cost
                if not self._on_core(self.master):
                    self._runnable(self.master, time)
                return True
            self._master_effect(time)
        return False

    def _on_core(self, job: int) -> bool:
        core = self.on_core[job]
        return self.running[core] == job or job in self.queues[core]

    def _master_cost(self) -> float:
        if self.task == _BROADCAST:
            return self.broadcast_cost
        if self.task == _BETWEEN:
            return self.between_cost
        worker, slot, iteration = self.inbox[0]
        cost = self.take_cost[slot]
        if iteration == self.current and self.count[slot] < self.needed[slot]:
            cost += self.decode_cost[slot]
            if self.count[slot] + 1 == self.needed[slot]:
                cost += self.decode_once[slot]
        return cost

    def _master_done(self, time: float) -> bool:
        """The master's task finished (its CPU spent): its effect, then the next task."""
        self._master_effect(time)
        if self.task is None:
            return False
        return self._master_work(time)

    def _master_effect(self, time: float) -> None:
        """Apply the finished task and choose the next one (None: wait for a message)."""
        if self.task == _BROADCAST:
            self._push(time + self._latency(), _THETA, self.next_worker, self.current)
            self.next_worker += 1
            if self.next_worker < self.n:
                return
            self.phase = _COLLECT
            self.task = _COLLECT if self.inbox else None
            return
        if self.task == _BETWEEN:
            self.current += 1
            if self.current >= self.iterations:
                self.task = None
                return
            self._open_iteration(time)
            return
        worker, slot, iteration = self.inbox.popleft()
        self.taken[iteration, worker, slot] = time - self.broadcast_at[iteration]
        if iteration == self.current and self.count[slot] < self.needed[slot]:
            self.count[slot] += 1
            if self.count[slot] == self.needed[slot]:
                self.decoded[iteration, slot] = time - self.broadcast_at[iteration]
                self.left -= 1
                if self.left == 0:
                    self.runtime[iteration] = time - self.broadcast_at[iteration]
                    self.phase = self.task = _BETWEEN
                    return
        self.task = _COLLECT if self.inbox else None

    def _open_iteration(self, time: float) -> None:
        answering = int(np.isfinite(self.multipliers[self.current]).sum())
        while answering < max(self.needed, default=0):  # never decoded: runtime inf, skip it
            self.broadcast_at[self.current] = time
            self.current += 1
            if self.current >= self.iterations:
                self.task = None
                return
            answering = int(np.isfinite(self.multipliers[self.current]).sum())
        self.broadcast_at[self.current] = time
        self.phase = self.task = _BROADCAST
        self.next_worker = 0
        self.count[:] = 0
        self.left = len(self.work.slots)


WARMUP_ITERATIONS = 2  # simulated before the recorded ones: stale work needs a past


def system_runtimes(
    plan: Plan,
    rows: int,
    coordinates: int,
    costs: SystemCosts,
    machine: Machine,
    samples: int,
    seed: int,
) -> np.ndarray:
    """Runtimes (seconds) of `samples` consecutive natural-mode iterations of `plan`, after
    WARMUP_ITERATIONS; the same seed gives every scheme the same compute multipliers."""
    n = plan.n_workers
    rng = generator(seed, ROOT_SYSTEM, 0)
    multipliers = costs.cycle_times(rng, (samples + WARMUP_ITERATIONS, n))
    latency = generator(seed, ROOT_SYSTEM, 1)
    trace = simulate(
        plan_work(plan, rows, coordinates, costs), costs, machine, multipliers, None, latency
    )
    return trace.runtime[WARMUP_ITERATIONS:]
