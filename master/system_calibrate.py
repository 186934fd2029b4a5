"""Measure the system model's costs on this machine (the `bcgc calibrate` steps behind
bcgc_sim/model/costs.py). Every figure is measured, none fitted to runtimes:

1. Kernels: the worker's own numpy calls (forward pass z = X theta with the loss derivative,
   and a slot's X[rows, block]^T r) timed on one BLAS thread at the configured M x L: the
   cost per call from calls on two rows, the cost per row x coordinate from calls on several
   row counts and widths (data larger than the last-level cache timed cold).
2. The decoder (master/decoder.py): its weighted sum per coordinate x message, and the fixed
   cost of decoding a slot with s > 0 once its decoding vector is cached.
3. The transport: a ping-pong of messages of several sizes with an echo process, on the
   transport the run uses (cluster.transport resolved as the cluster resolves it: ZeroMQ over
   TCP loopback, the bulk bytes in frames or copied through shared memory), both ends idle
   between messages:
   the CPU per byte (the slope of both processes' CPU per round trip over the size, per end;
   both on one core) and the wake-up of an idle core by how long it was idle (from the round
   trips with the echo on another core and on the same one after idle times of 0 to 3 ms).
4. Messages, master and cores: three plans (uncoded; one block per level; full replication)
   run in natural mode on an instrumented cluster (master/instrumented.py) that reads every
   thread's CPU per iteration; least squares over the three plans give the worker's CPU to
   take theta and per message sent (its process and I/O thread, and the master's I/O thread
   that the kernel wakes on the sender's core), the master's CPU per theta sent, per message
   taken and per coded decode during an iteration, and per message and per iteration after
   the last decode. The cores are the CPUs this process may run on; the scheduler's tick is
   the kernel's HZ and its base slice the kernel default (0.7 ms x (1 + log2 cores)).
5. Per-worker speed: each worker's CPU per iteration relative to the others' in the uncoded
   run gives its compute multiplier (heterogeneity the config does not explain).
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcgc_sim.config import Config
from bcgc_sim.errors import UserError
from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.costs import FLOAT_BYTES, SystemCosts
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.plans import BlockPlan, Plan
from bcgc_sim.model.work import plan_work
from bcgc_sim.problems import loss_derivative

from .rounds import Measured, run_rounds

CACHE_BYTES = 16 << 20  # data above this is timed cold (measured: the per-element cost triples)
BASE_SLICE_S = 0.0007  # EEVDF's sysctl_sched_base_slice before scaling by 1 + log2(cores)
DEFAULT_HZ = 250
PROBE_UNCODED = "probe-uncoded"
WAKE_ROUNDS = 2  # refits of the message costs with the idle wake-ups taken off
MASTER_LAGS_S = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3)  # the master's lag: candidate values
LAG_ITERATIONS = 40  # simulated iterations per probe plan and candidate


def probe_plans(n_workers: int, coordinates: int) -> dict[str, Plan]:
    """Uncoded (one message, 1/N of the rows); one block per level (N messages, every row);
    full replication (one message, every row): they separate per-message from per-row costs."""
    x = [coordinates // n_workers] * n_workers
    x[0] += coordinates - sum(x)
    uncoded = (coordinates,) + (0,) * (n_workers - 1)
    full = (0,) * (n_workers - 1) + (coordinates,)
    plans = {
        PROBE_UNCODED: BlockPlan(PROBE_UNCODED, uncoded),
        "probe-levels": BlockPlan("probe-levels", tuple(x)),
    }
    if n_workers > 1:
        plans["probe-full"] = BlockPlan("probe-full", full)
    return plans


# -- 1, 2: kernels and the decoder's sum ------------------------------------------------------
def _median_time(call, reps: int, flush: np.ndarray | None) -> float:
    times = []
    for _ in range(reps):
        if flush is not None:
            flush += 1.0  # stream a buffer larger than the cache
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept >= 0) of a least-squares line through (x, seconds) points."""
    p = np.array(points)
    (a, c), *_ = np.linalg.lstsq(np.column_stack([p[:, 0], np.ones(len(p))]), p[:, 1], rcond=None)
    return max(float(a), 0.0), max(float(c), 0.0)


def _slope(points: list[tuple[float, float]], intercept: float) -> float:
    """Least-squares slope (>= 0) through (x, seconds) points of a line with a known intercept."""
    p = np.array(points)
    x, y = p[:, 0], p[:, 1] - intercept
    return max(float(x @ y / (x @ x)), 0.0)


def measure_kernels(rows: int, coordinates: int, n_workers: int, seed: int = 0) -> dict[str, float]:
    """Per-element and per-call seconds of the forward pass and of a slot's derivatives.

    The cost per call is a call on a couple of rows with warm data (numpy's dispatch and the
    loss derivative: the same on every call of the worker); the cost per element is the slope
    through the calls on `rows` / N to all rows, less that, timed cold when the data are
    larger than the cache. (A free intercept fitted to cold calls held the cold start of
    each, up to 0.3 ms on the development VM, against 3 us of real per-call cost: with one
    forward call per part and slot, that charged coded plans milliseconds they never spent.)"""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, coordinates))
    y = rng.standard_normal(rows)
    theta = rng.standard_normal(coordinates)
    flush = np.zeros(2 * CACHE_BYTES // 8) if x.nbytes > CACHE_BYTES else None
    counts = sorted({max(1, rows // n_workers), max(1, rows // 2), rows})
    widths = sorted({max(1, coordinates // n_workers), max(1, coordinates // 2), coordinates})
    forward, derivative = [], []
    few, narrow = min(2, rows), min(8, coordinates)
    with threadpool_limits(limits=1, user_api="blas"):
        c_f = _median_time(
            lambda: loss_derivative("least-squares", x[:few] @ theta, y[:few]), 31, None
        )
        small = x[:few] @ theta - y[:few]
        c_d = _median_time(lambda: x[:few, :narrow].T @ small, 31, None)
        for r in counts:
            t = _median_time(
                lambda r=r: loss_derivative("least-squares", x[:r] @ theta, y[:r]), 15, flush
            )
            forward.append((r * coordinates, t))
            residual = x[:r] @ theta - y[:r]
            for w in widths:
                t = _median_time(lambda r=r, w=w, res=residual: x[:r, :w].T @ res, 15, flush)
                derivative.append((r * w, t))
    return {
        "forward_element_s": _slope(forward, c_f),
        "forward_call_s": c_f,
        "derivative_element_s": _slope(derivative, c_d),
        "derivative_call_s": c_d,
    }


def measure_decode_element(n_workers: int, coordinates: int, seed: int = 1) -> float:
    """Seconds per coordinate x message of the decoder's weighted sum (weights @ rows)."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n_workers, coordinates))
    weights = rng.standard_normal(n_workers)
    return _median_time(lambda: weights @ rows, 30, None) / (n_workers * coordinates)


def measure_decode_fixed(n_workers: int, coordinates: int, seed: int = 1) -> float:
    """Seconds of the fixed part of decoding a slot with s > 0 (its a_F cached, as in the
    steady state): the completing offer minus a plain one, minus the weighted sum."""
    from .decoder import IterationDecoder

    if n_workers < 2:
        return 0.0
    plan = probe_plans(n_workers, coordinates)["probe-levels"]
    slots = layout_for(plan, n_workers).slots
    decoder = IterationDecoder(slots, n_workers, coordinates, CodeBook(n_workers, seed))
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s.stop - s.start) for s in slots]
    extra = []
    for _ in range(20):
        decoder.reset()
        for k, slot in enumerate(slots):
            if slot.stragglers == 0:
                continue
            needed = n_workers - slot.stragglers
            for w in range(needed - 1):
                decoder.offer(w, k, values[k])
            start = time.perf_counter()
            decoder.offer(needed - 1, k, values[k])
            last = time.perf_counter() - start
            plain = _median_time(lambda k=k: decoder.offer(n_workers - 1, k, values[k]), 1, None)
            extra.append(last - plain)
    return max(float(np.median(extra[len(slots) :])), 0.0)


# -- 3: the transport -------------------------------------------------------------------------
# Both ends of the ping-pong move each message as the testbed does on `transport`: "zmq" in
# frames; "shm" copied into the sender's shared segment (bcgc_sim/wire/shm.py) and named by a
# small frame that the receiver resolves to a view of the peer's segment (no copy). The echo
# sends back what it received, so under "shm" it copies from the peer's segment into its own.
SHM_ENDPOINT = """
import json
import numpy as np
from bcgc_sim.wire.protocol import clock_id
from bcgc_sim.wire.shm import OwnSegment, SegmentInfo, SegmentTable, record_bytes

class Endpoint:
    def __init__(self, socket, route, name, largest):
        self.socket, self.route = socket, route
        self.own = OwnSegment(name, record_bytes(largest), clock_id())
        self.table = SegmentTable()
        self.count = 0

    def hello(self):
        self.socket.send_multipart([*self.route, json.dumps(self.own.info.to_header()).encode()])

    def meet(self, frame):
        self.table.attach(SegmentInfo.from_header(json.loads(bytes(frame))))

    def send(self, array):
        self.count += 1
        ref = self.own.put(self.count, array)
        self.socket.send_multipart([*self.route, json.dumps([ref, array.nbytes]).encode()])

    def receive(self, frame):
        ref, nbytes = json.loads(bytes(frame))
        return self.table.resolve(ref, np.dtype(np.uint8), nbytes, ref[3])
"""

ECHO = """
import os, sys, zmq
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {int(sys.argv[2])})
socket = zmq.Context().socket(zmq.DEALER)
socket.connect(sys.argv[1])
shared = sys.argv[3] == "shm"
if shared:
    exec(sys.argv[4])
    end = Endpoint(socket, [], f"bcgc-echo-{os.getpid()}", int(sys.argv[5]))
    end.hello()
else:
    socket.send(b"ready")
while True:
    frame = socket.recv(copy=False)
    if len(frame) == 0:
        break
    if shared:
        if frame.bytes.startswith(b"{"):
            end.meet(frame)
            continue
        end.send(end.receive(frame))
    else:
        socket.send(frame, copy=False)
"""

PING = """
import json, os, subprocess, sys, time
core, other, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})  # before ZeroMQ starts its I/O thread
import numpy as np
import zmq

def cpu(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (OSError, ValueError):
            pass
    return total

mode, sizes, endpoint_code, gap = sys.argv[6], json.loads(sys.argv[5]), sys.argv[7], float(sys.argv[8])
socket = zmq.Context().socket(zmq.ROUTER)
port = socket.bind_to_random_port("tcp://127.0.0.1")
echo = subprocess.Popen([sys.executable, "-c", sys.argv[4], f"tcp://127.0.0.1:{port}", str(other),
                         mode, endpoint_code, str(max(sizes))])
try:
    if not socket.poll(20_000):
        raise SystemExit("the echo process did not connect")
    peer, hello = socket.recv_multipart()
    if mode == "shm":
        exec(endpoint_code)
        end = Endpoint(socket, [peer], f"bcgc-ping-{os.getpid()}", max(sizes))
        end.meet(hello)
        end.hello()
    out = []
    for size in sizes:
        payload = np.zeros(size, dtype=np.uint8)
        trips = []
        before = cpu(os.getpid()) + cpu(echo.pid)
        for _ in range(rounds):
            if gap > 0:
                time.sleep(gap)  # both ends go idle, as between the testbed's messages
            start = time.monotonic_ns()
            if mode == "shm":
                end.send(payload)
                end.receive(socket.recv_multipart()[1])
            else:
                socket.send_multipart([peer, payload])
                socket.recv_multipart()
            trips.append(time.monotonic_ns() - start)
        used = (cpu(os.getpid()) + cpu(echo.pid) - before) / rounds
        trips.sort()
        out.append([size, trips[len(trips) // 2] / 1e9, used / 1e9])
    socket.send_multipart([peer, b""])
    echo.wait(timeout=10)
finally:
    if echo.poll() is None:
        echo.kill()
print(json.dumps(out))
"""

TRANSPORT_SIZES = (16, 8 << 10, 64 << 10, 256 << 10)  # bytes per message of the ping-pong
TRANSPORT_GAP_S = 0.0003  # idle time before each round trip of the byte-cost ping-pong
WAKE_GAPS_S = (0.0, 1e-4, 3e-4, 1e-3, 3e-3)  # idle times before the wake-up ping-pongs
WAKE_SCALES_S = tuple(3e-5 * 10 ** (k / 4) for k in range(9))  # 30 us .. 3 ms
TRANSPORT_REPEATS = 3  # ping-pongs per configuration (their medians are kept)


def resolved_transport(mode: str) -> str:
    """What cluster.transport = `mode` moves bulk arrays by on this host, as the cluster
    resolves it (bcgc_sim/wire/shm.py): "zmq" (frames) or "shm" ("auto" is shared memory
    when this host can make a segment, frames otherwise)."""
    from bcgc_sim.wire.protocol import clock_id
    from bcgc_sim.wire.shm import OwnSegment, Unavailable, run_prefix

    if mode == "zmq":
        return "zmq"
    try:
        if not clock_id():
            raise Unavailable("no boot id: segments are never shared")
        OwnSegment(f"{run_prefix()}-probe", 64, clock_id()).close()
    except Unavailable as exc:
        if mode == "shm":
            raise UserError(f"cluster.transport = 'shm' but {exc}") from None
        return "zmq"
    return "shm"


def _ping_pong(
    core: int,
    other: int,
    rounds: int,
    transport: str,
    sizes: tuple[int, ...] = TRANSPORT_SIZES,
    gap_s: float = TRANSPORT_GAP_S,
) -> list[tuple]:
    """(bytes, median round trip s, CPU s per round trip of both processes) per size between
    a process on `core` and an echo on `other`, over ZeroMQ on TCP loopback, the bulk bytes in
    frames ("zmq") or through shared segments ("shm"), both idle for gap_s before each trip."""
    import json

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PING,
            str(core),
            str(other),
            str(rounds),
            ECHO,
            json.dumps(list(sizes)),
            transport,
            SHM_ENDPOINT,
            repr(gap_s),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [tuple(row) for row in json.loads(result.stdout)]


def fit_wake_curve(gaps_s: tuple[float, ...], wake_s: list[float]) -> dict[str, float]:
    """wake_s, wake_deep_s, wake_scale_s (SystemCosts) of wake-ups measured after each idle
    time: for every scale of WAKE_SCALES_S the best non-negative pair by least squares, the
    scale with the smallest residual kept."""
    from scipy.optimize import nnls

    g, w = np.asarray(gaps_s, dtype=float), np.asarray(wake_s, dtype=float)
    best = None
    for scale in WAKE_SCALES_S:
        decay = np.exp(-g / scale)
        (brief, deep), residual = nnls(np.column_stack([decay, 1 - decay]), w)
        if best is None or residual < best[0]:
            best = (residual, brief, deep, scale)
    _, brief, deep, scale = best
    return {"wake_s": float(brief), "wake_deep_s": float(deep), "wake_scale_s": float(scale)}


def measure_wake(cores: list[int], transport: str, rounds: int) -> dict[str, float]:
    """How long an idle core takes to run a woken thread, by how long it was idle: the
    smallest message's round trip to an echo on another core minus that to one on the same
    core, after each idle time of WAKE_GAPS_S (medians of TRANSPORT_REPEATS). The round trip
    wakes the echo's core after the gap and the pinger's after a brief wait: twice the half
    difference less the briefest one is the wake-up after the gap."""
    half = []
    for gap in WAKE_GAPS_S:
        trips = {
            other: np.median(
                [
                    _ping_pong(cores[0], other, rounds, transport, (16,), gap)[0][1]
                    for _ in range(TRANSPORT_REPEATS)
                ]
            )
            for other in (cores[0], cores[-1])
        }
        half.append(max((trips[cores[-1]] - trips[cores[0]]) / 2, 0.0))
    wakes = [2 * h - half[0] for h in half]
    wakes[0] = half[0]
    return fit_wake_curve(WAKE_GAPS_S, [max(w, 0.0) for w in wakes])


def measure_transport(transport: str, rounds: int = 300) -> dict[str, float]:
    """The cost per byte of `transport` ("zmq" or "shm", resolved) and the wake-up of an idle
    core (measure_wake). The slope of both processes' CPU per round trip over the message
    size, both on one core: "zmq" handles every byte at both ends of both messages
    (byte_s = slope / 4); "shm" copies them once per message, at the sender
    (copy_byte_s = slope / 2)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    same = [_ping_pong(cores[0], cores[0], rounds, transport) for _ in range(TRANSPORT_REPEATS)]
    slope = float(np.median([_line([(b, cpu) for b, _, cpu in run])[0] for run in same]))
    wake = {"wake_s": 0.0}
    if len(cores) > 1:
        wake = measure_wake(cores, transport, rounds // 2)
    if transport == "shm":
        per_byte = {"byte_s": 0.0, "copy_byte_s": slope / 2}
    else:
        per_byte = {"byte_s": slope / 4, "copy_byte_s": 0.0}
    return {**per_byte, **wake, "latency_s": 0.0}


# -- 4: messages, master, cores from instrumented natural runs -------------------------------
@dataclass(frozen=True)
class PlanCosts:
    """One probe plan's measured CPU seconds per iteration (means over its iterations)."""

    plan: Plan
    worker: np.ndarray  # (N,): each worker's main + I/O threads
    master_io: float
    broadcast: float  # the master loop's CPU inside the broadcast
    taking: float  # ... from the broadcast to the last message taken
    after: float  # ... after the last decode, until the next broadcast
    messages: float  # messages the master took per iteration
    waits: float  # ... for which its receive slept first (it woke for them)
    foreign: float  # other processes' CPU per wall second meanwhile
    runtime: float  # measured mean runtime (s) of the kept iterations


def plan_costs(measured: Measured) -> PlanCosts:
    """A probe plan's CPU per iteration, averaged over its kept rounds; each round's window is
    its iterations 0 .. k - 2, between the two load readings (master/rounds.py)."""
    plan = measured.plan
    n = plan.n_workers
    keep = [k for k, kept in enumerate(measured.kept) if kept and measured.cpu[k]]

    def mean(values) -> float:
        return float(np.mean(values)) if len(values) else 0.0

    worker = np.array(
        [
            mean(
                [
                    measured.cpu[k].get(("worker", r), 0.0)
                    + measured.cpu[k].get(("worker-io", r), 0.0)
                    for k in keep
                ]
            )
            for r in range(n)
        ]
    )
    io = mean([measured.cpu[k].get(("master-io", -1), 0.0) for k in keep])
    loops = [measured.loops[k] for k in keep]
    window = [slice(0, len(loop.after)) for loop in loops]

    def loop_mean(field: str) -> float:
        return mean(
            np.concatenate(
                [np.asarray(getattr(lp, field))[w] for lp, w in zip(loops, window, strict=True)]
            )
        )

    return PlanCosts(
        plan,
        worker,
        io,
        loop_mean("broadcast") / 1e9,
        loop_mean("taking") / 1e9,
        loop_mean("after") / 1e9,
        loop_mean("messages"),
        loop_mean("waits"),
        float(measured.foreign[keep].mean()) if keep else 0.0,
        measured.mean,
    )


def measure_plans(
    config: Config, folder: Path, plans: dict[str, Plan], rounds: int, per_round: int
) -> dict[str, PlanCosts]:
    """Run `plans` in alternating natural-mode rounds on an instrumented cluster; their CPU
    per iteration."""
    measured = run_rounds(config, folder, plans, rounds, per_round)
    return {name: plan_costs(m) for name, m in measured.items()}


def _lsq(columns: list[np.ndarray], target: np.ndarray) -> np.ndarray:
    """Non-negative least squares of target on the columns."""
    from scipy.optimize import nnls

    solution, _ = nnls(np.column_stack(columns), np.asarray(target, dtype=float))
    return solution


def fit_messages(
    measured: dict[str, PlanCosts],
    base: SystemCosts,
    rows: int,
    coordinates: int,
    check: bool,
) -> SystemCosts:
    """Per-message, per-theta and master costs from the probe plans' CPU per iteration
    (base holds the kernel, byte and decode costs already measured). The workers' compute is
    the kernels' times a factor fitted with the message costs: on cores shared by several
    processes the data are colder in the caches than in the kernels' timing."""
    names = list(measured)
    n = measured[names[0]].plan.n_workers
    theta_bytes = FLOAT_BYTES * coordinates
    worker_target, computes, sends, master_io = [], [], [], []
    taken, wakes, after = [], [], []
    for name in names:
        m = measured[name]
        work = plan_work(m.plan, rows, coordinates, base)
        slots = layout_for(m.plan, rows).slots
        sent = m.messages / n  # messages each worker sent per iteration (abandoned ones not)
        compute = float(np.mean(work.forward_s + work.derivative_s.sum(axis=1)))
        widths = np.array([s.stop - s.start for s in slots])
        width_bytes = FLOAT_BYTES * float(widths.mean())
        byte_cost = base.byte_s * width_bytes  # each end of a framed message
        sender_bytes = (base.byte_s + base.copy_byte_s) * width_bytes  # ... and the copy
        worker_target.append(
            float(m.worker.mean()) - base.byte_s * theta_bytes - sent * sender_bytes
        )
        computes.append(compute)
        sends.append(sent)
        master_io.append(m.master_io)
        decode = sum(
            base.decode_s + base.decode_element_s * (n - s.stragglers) * (s.stop - s.start)
            for s in slots
            if s.stragglers > 0
        ) + sum(base.decode_element_s * n * (s.stop - s.start) for s in slots if not s.stragglers)
        taken.append(m.taking - decode - m.messages * byte_cost)
        wakes.append(m.waits)
        after.append(m.after)
    ones = np.ones(len(names))
    theta_receive, send, factor = _lsq(
        [ones, np.array(sends), np.array(computes)], np.array(worker_target)
    )
    factor = factor if factor > 0 else 1.0
    scaled = base.with_updates(
        forward_element_s=factor * base.forward_element_s,
        forward_row_s=factor * base.forward_row_s,
        forward_call_s=factor * base.forward_call_s,
        derivative_element_s=factor * base.derivative_element_s,
        derivative_call_s=factor * base.derivative_call_s,
    )
    # the master's loss (or check gradient) after the last decode, at the workers' speed
    gradient = (
        scaled.gradient_s(rows, coordinates) if check else scaled.forward_s(rows, coordinates, 1)
    )
    io_theta, io_message = _lsq([ones * n, np.array(sends) * n], np.array(master_io))
    message, master_wake = _lsq([np.array(sends) * n, np.array(wakes)], np.array(taken))
    iteration, after_message = _lsq([ones, np.array(sends) * n], np.array(after) - gradient)
    broadcast = float(np.mean([measured[k].broadcast for k in names]))
    broadcast = max(broadcast - base.copy_byte_s * theta_bytes, 0.0)  # theta's one copy
    return scaled.with_updates(
        theta_receive_s=theta_receive,
        send_s=send,
        relay_s=io_message,
        theta_send_s=io_theta,
        broadcast_s=broadcast / n,
        master_message_s=message,
        master_wake_s=master_wake,
        master_after_message_s=after_message,
        iteration_s=iteration,
    )


def write_measurements(measured: dict[str, PlanCosts], path: Path) -> None:
    """The probe plans' CPU per iteration (microseconds), for the record."""
    import json

    out = {
        name: {
            "plan": m.plan.describe(),
            "worker_cpu_us": [round(1e6 * v, 1) for v in m.worker],
            "master_io_cpu_us": round(1e6 * m.master_io, 1),
            "master_broadcast_cpu_us": round(1e6 * m.broadcast, 1),
            "master_taking_cpu_us": round(1e6 * m.taking, 1),
            "master_after_cpu_us": round(1e6 * m.after, 1),
            "messages_per_iteration": round(m.messages, 2),
            "foreign_load_cores": round(m.foreign, 4),
            "runtime_ms": round(1e3 * m.runtime, 4),
        }
        for name, m in measured.items()
    }
    path.write_text(json.dumps(out, indent=1))


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def scheduler_tick_s() -> float:
    """1 / CONFIG_HZ of the running kernel (its config file), else 1 / 250."""
    for path in (f"/boot/config-{os.uname().release}",):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith("CONFIG_HZ="):
                    return 1.0 / int(line.split("=", 1)[1])
        except (OSError, ValueError):
            continue
    return 1.0 / DEFAULT_HZ


def base_slice_s(cores: int) -> float:
    """EEVDF's default slice on `cores` CPUs: 0.7 ms x (1 + log2 min(cores, 8))."""
    return BASE_SLICE_S * (1 + int(math.log2(max(1, min(cores, 8)))))


def machine_costs(config: Config) -> SystemCosts:
    """What is timed without the testbed: kernels, the decoder's sum, the transport, cores."""
    rows, coordinates, n = config.model.samples, config.model.coordinates, config.cluster.workers
    cores = machine_cores()
    return SystemCosts(
        **measure_kernels(rows, coordinates, n, config.seed),
        decode_element_s=measure_decode_element(n, coordinates, config.seed),
        decode_s=measure_decode_fixed(n, coordinates, config.seed),
        **measure_transport(resolved_transport(config.cluster.transport)),
        cores=cores,
        slice_s=base_slice_s(cores),
        tick_s=scheduler_tick_s(),
    )


def fit_costs(base: SystemCosts, measured: dict[str, PlanCosts], config: Config) -> SystemCosts:
    """Every cost: `base` (machine_costs) and the probe plans' CPU per iteration.

    The CPU a thread is charged includes its wake-ups on idle cores (wake_after_s each); how many
    there are depends on the costs, so the fit is repeated: simulate the probe plans, take
    their idle wake-ups off the measured CPU, fit again."""
    m = config.model
    costs = fit_messages(measured, base, m.samples, m.coordinates, config.run.check)
    for _ in range(WAKE_ROUNDS):
        costs = _fit_master_lag(measured, costs, config)
        adjusted = {
            name: _without(p, _simulated_wake_cpu(p, costs, config)) for name, p in measured.items()
        }
        lag = costs.master_lag_s
        costs = fit_messages(adjusted, base, m.samples, m.coordinates, config.run.check)
        costs = costs.with_updates(master_lag_s=lag)
    return _fit_master_lag(measured, costs, config)


def _fit_master_lag(
    measured: dict[str, PlanCosts], costs: SystemCosts, config: Config
) -> SystemCosts:
    """The scheduler's one free parameter: the master's lag (model/costs.py), the value of
    MASTER_LAGS_S under which the probe plans' simulated mean runtimes are closest (squared
    log error) to their measured ones. The schemes being validated play no part."""
    from bcgc_sim.model.machine import simulate

    def error(lag: float) -> float:
        trial = costs.with_updates(master_lag_s=lag)
        total = 0.0
        for p in measured.values():
            n = p.plan.n_workers
            work = plan_work(p.plan, config.model.samples, config.model.coordinates, trial)
            trace = simulate(work, trial, config.machine(trial), np.ones((LAG_ITERATIONS, n)))
            total += math.log(np.mean(trace.runtime[5:]) / p.runtime) ** 2
        return total

    return costs.with_updates(master_lag_s=min(MASTER_LAGS_S, key=error))


def _simulated_wake_cpu(measured: PlanCosts, costs: SystemCosts, config: Config) -> np.ndarray:
    """Per iteration of `measured`'s plan under `costs`: the seconds every thread's idle-core
    wake-ups took (workers, burners, master, I/O thread)."""
    from bcgc_sim.model.machine import simulate

    n = measured.plan.n_workers
    work = plan_work(measured.plan, config.model.samples, config.model.coordinates, costs)
    iterations = 40
    trace = simulate(work, costs, config.machine(costs), np.ones((iterations, n)))
    return trace.wake_cpu / iterations


def _without(measured: PlanCosts, wake_cpu: np.ndarray) -> PlanCosts:
    """`measured` less the CPU its idle-core wake-ups took (`wake_cpu` per thread), per
    iteration."""
    n = measured.plan.n_workers
    return dataclasses.replace(
        measured,
        worker=np.maximum(measured.worker - wake_cpu[:n], 0.0),
        taking=max(measured.taking - wake_cpu[-2], 0.0),
        master_io=max(measured.master_io - wake_cpu[-1], 0.0),
    )


def measure_system(
    config: Config, folder: Path, rounds: int, per_round: int, log=print
) -> tuple[SystemCosts, dict[str, PlanCosts]]:
    """Every cost of this machine at config's M x L and N; the probe plans' measurements."""
    log("timing the numpy kernels, the decoder's sum and the transport")
    base = machine_costs(config)
    log("running the probe plans on an instrumented cluster")
    plans = probe_plans(config.cluster.workers, config.model.coordinates)
    measured = measure_plans(config, folder, plans, rounds, per_round)
    write_measurements(measured, folder / "cpu.json")
    return fit_costs(base, measured, config), measured
