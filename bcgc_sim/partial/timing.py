"""Partial-straggler GC: when workers finish their chunks, the time to the exact gradient and the
NMSE against time (spec/partial-gc.md §3). The fair comparison with BCGC and the original GC
(§5.3) is `bcgc_sim.comparison`.

Units. Work is counted in *chunk gradients* (one chunk = one data partition, its full gradient).
A cycle time T_j is model time per cycle and `chunk_cycles` the cycles of one chunk gradient, so
under the per-worker speed model (BCGC's, spec §5.3.2) worker j finishes its k-th chunk at
    k * chunk_cycles * T_j        (model time units).
With chunk_cycles = 1 (the default) times are "chunk-gradient units at unit cycle time"; with
T = 1 + Exp(1) one unit is t0 times the cost of one chunk gradient. Every time-returning function
takes `finish`, shape (K, N, P) (P = max load): finish[k, j, p] = the model time at which worker j
has completed its first p + 1 chunks in realisation k (+inf for failed workers or p >= delta_j),
built with `speed_finish_times` (constant speed within an iteration). The original GC baseline
is in `bcgc_sim.partial.original_gc`.
"""

from __future__ import annotations

import numpy as np

from ..model.stragglers import CycleTimeDistribution
from .assignment import Assignment


def speed_finish_times(
    cycle_times: np.ndarray, loads: np.ndarray, chunk_cycles: float = 1.0
) -> np.ndarray:
    """Per-worker speed model: finish[k, j, p] = (p + 1) chunk_cycles T[k, j]; shape (K, N, P)."""
    t = np.atleast_2d(np.asarray(cycle_times, dtype=float))
    loads = np.asarray(loads, dtype=int)
    steps = np.arange(1, loads.max() + 1, dtype=float)
    out = chunk_cycles * t[:, :, None] * steps[None, None, :]
    return np.where(steps[None, None, :] <= loads[None, :, None], out, np.inf)


def random_positions(assignment: Assignment, rng: np.random.Generator, samples: int) -> np.ndarray:
    """A fresh uniformly random ordering per realisation, as positions (K, m, N) (0 = not held)."""
    pos = np.zeros((samples, *assignment.matrix.shape), dtype=int)
    for j in range(assignment.n_workers):
        chunks = assignment.chunks(j)
        pos[:, chunks, j] = np.argsort(rng.random((samples, chunks.size)), axis=1) + 1
    return pos


def copy_times(assignment: Assignment, pos: np.ndarray, finish: np.ndarray) -> np.ndarray:
    """When worker j has processed chunk i, shape (K, m, N); +inf where j does not hold i.

    `pos` (m, N) from `positions(assignment, ordering)` or (K, m, N) from `random_positions`.
    """
    k = finish.shape[0]
    shape = (k, *assignment.matrix.shape)
    index = np.broadcast_to(np.maximum(np.asarray(pos) - 1, 0), shape)
    times = np.take_along_axis(np.swapaxes(finish, 1, 2), index, axis=1)  # (K, m, N)
    return np.where(np.broadcast_to(np.asarray(pos) > 0, shape), times, np.inf)


def ready_times(copies: np.ndarray, parts: int) -> np.ndarray:
    """When chunk i has l processed copies (spec §1.3): the l-th smallest copy time, (K, m)."""
    if parts > copies.shape[2]:
        return np.full(copies.shape[:2], np.inf)
    return np.partition(copies, parts - 1, axis=2)[:, :, parts - 1]


def exact_times(
    assignment: Assignment, pos: np.ndarray, finish: np.ndarray, parts: int = 1, overhead=0.0
) -> np.ndarray:
    """Time to the exact gradient (R1 and R2 alike), shape (K,), model time units.

    max_i ready_i + `overhead` (the R1 round trip COMBINE/UPLOAD, or R2's last REQUEST/BLOCK).
    """
    return ready_times(copy_times(assignment, pos, finish), parts).max(axis=1) + overhead


def nmse_at(
    assignment: Assignment, pos: np.ndarray, finish: np.ndarray, parts: int, deadlines
) -> np.ndarray:
    """Coefficient-level NMSE sum_i (l - kappa_i(t))^+ / (m l) at each deadline t, (K, D) (§1.4)."""
    copies = copy_times(assignment, pos, finish)
    out = np.empty((finish.shape[0], len(deadlines)))
    for col, t in enumerate(deadlines):
        kappa = (copies <= t).sum(axis=2)
        out[:, col] = np.maximum(parts - kappa, 0).sum(axis=1) / (assignment.n_chunks * parts)
    return out


def expected_nmse(
    assignment: Assignment,
    pos: np.ndarray,
    distribution: CycleTimeDistribution,
    parts: int,
    deadlines,
    chunk_cycles: float = 1.0,
) -> np.ndarray:
    """E[NMSE(t)] exactly under the per-worker model with i.i.d. cycle times, shape (D,).

    The holders of a chunk are distinct independent workers, so kappa_i(t) is Poisson-binomial
    with P(copy at position p done by t) = F(t / (p chunk_cycles)); no Monte-Carlo error.
    """
    out = np.zeros(len(deadlines))
    for col, t in enumerate(deadlines):
        total = 0.0
        for i in range(assignment.n_chunks):
            p = np.asarray(distribution.cdf(t / (pos[i, assignment.holders(i)] * chunk_cycles)))
            law = np.array([1.0])  # P(kappa = k), k = 0..
            for q in np.atleast_1d(p):
                law = np.concatenate([law * (1 - q), [0.0]]) + np.concatenate([[0.0], law * q])
            shortfall = np.maximum(parts - np.arange(law.size), 0)
            total += float(law @ shortfall)
        out[col] = total / (assignment.n_chunks * parts)
    return out
