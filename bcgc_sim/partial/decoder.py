"""Partial-straggler gradient coding (spec/partial-gc.md): assignment, ordering, protocol.

The protocol of Ramamoorthy, Meng & Girimaji (NeurIPS 2024) as *reconstructed* in the spec: the
paper's body was not available, so everything below follows the spec's recommended
interpretations (§6: A1 = variant R1 by default, R2 as an option; A2 = a chunk needs >= l distinct
processed copies; A3 = Q_max counts the chunks that *guarantee* coverage; A4 = Latin/Konig
ordering; A5 = coefficient-level NMSE; A9 = the chunk in progress at STOP is discarded; A11 =
decode the sum). Timing, the original-GC baseline and the §5.3 comparison are in
`bcgc_sim.partial_gc_timing`.

Notation (spec §1.1): N workers, m chunks, A (m x N) 0/1 with A[i, j] = 1 iff worker j stores
chunk i; l ("parts") = the number of blocks the gradient is cut into; every data message carries
one block of ceil(d / l) floats. Workers and chunks are 0-based.

Design note: message pattern on the testbed
-------------------------------------------
Set-up, once per run (master -> worker): the worker's processing order pi_j (list of chunk ids =
the data partitions it stores), l and d. The combiner Phi never leaves the master. Every message
below carries run id and iteration (DESIGN.md); stale ones are counted and dropped. Unlike the
BCGC slots, a COMBINE or REQUEST arriving while a worker waits for a deadline is *not* an abandon
signal: the worker must keep its computed chunk gradients and answer it.

Per iteration, variant R1 ("notify, then one upload"; the default), with chunk k of worker j
being chunk pi_j(k), k = 1..delta_j:
 1. master -> all workers: ITERATE(theta).
 2. worker j computes g_{pi_j(1)}, g_{pi_j(2)}, ... (full gradients of one data partition each)
    and keeps them in memory (<= delta_j * d floats). After chunk k it sends, at the deadline
        t_start + time_scale * chunk_cycles * T_j * k
    (chunk_cycles = cycles of one chunk gradient; with the BCGC cost model and m = N chunks,
    chunk_cycles * T_j = (M C / N) * T_j * L, i.e. a slot of raw load k * L), a
    NOTICE(run, iteration, worker j, chunk i, position k): header only, no payload.
    The master feeds it to `R1Decoder.notice`.
 3. master decides "stop": exact mode when `decoder.exact_ready` (every chunk has >= l
    processed copies); approximate mode at its deadline or when `decoder.estimated_nmse` <= a
    target. `coefficients = decoder.stop()`; then
    master -> worker j in `coefficients`: COMBINE(iteration, chunks = coefficients[j].chunks,
        beta = coefficients[j].beta, shape (n_j, l) float64; at most delta_j * l floats);
    master -> every other worker: ABANDON(iteration) (implemented as its own message type: the
    testbed's STOP ends the worker process). A worker that gets COMBINE also abandons the chunk
    in progress. (Implemented: workers/partial.py, master/partial_session.py.)
 4. worker j -> master: UPLOAD(iteration, z_j), z_j = `r1_upload(coefficients[j], grads, l)`,
    one float vector of ceil(d / l) entries, sent immediately (no deadline). It uses exactly the
    chunks listed, which the worker has computed already (it announced them), so a NOTICE that
    crossed COMBINE on the wire is harmless: the master answers it with Outcome.LATE and the
    worker ignores the extra chunk.
 5. master: `decoder.offer(j, z_j)`; done when `decoder.complete` (every worker in
    `coefficients` has uploaded); `decoder.gradient()` is the exact sum (or the least-squares
    estimate in approximate mode). The time to the exact gradient is therefore
    "last needed NOTICE + one round trip (COMBINE down, UPLOAD up)"; the timing model reports the
    first part and takes the round trip as an explicit `overhead`. Per-iteration prediction, as
    for BCGC: the master regenerates T (stragglers.iteration_cycle_times) and evaluates
    partial_gc_timing.exact_times(A, positions(A, order), speed_finish_times(T[None], loads,
    chunk_cycles), l) next to the measured time.
 Bytes per worker per iteration (R1): uplink c_j header-only NOTICEs + ceil(d/l) floats; downlink
 ITERATE + COMBINE (n_j chunk ids + n_j * l floats) or STOP. A worker that crashes between its
 notices and its upload blocks step 5 under R1 (spec A10): the master needs a timeout, and
 recovering means a new stop() without that worker and fresh uploads from the workers sharing
 its chunks. Use R2 for crash experiments.

Variant R2 ("stream coded blocks", spec §1.6), same NOTICEs as above, then per notice:
    master -> worker j: REQUEST(iteration, chunk i, phi), phi = l floats, sent only while
        chunk i has fewer than l requested blocks (`R2Decoder.notice` returns phi or None);
    worker j -> master: BLOCK(iteration, chunk i, `r2_block(phi, g_i)`: ceil(d / l) floats),
        sent as soon as REQUEST arrives; the worker does not wait for it before computing on.
    Done when `R2Decoder.complete` (every chunk has l blocks). Uplink m * d floats in total.

The baseline "original GC" of spec §1.7 with l = 1 is the testbed's existing single-level plan
(BlockPlan with x = L e_s, s = delta - 1): one coded message after all delta chunks.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

Ordering = tuple[tuple[int, ...], ...]  # Ordering[j] = pi_j, the chunks of worker j in order
_COMBINER_STREAM = 7  # spawn key of the combiner's random stream


# ------------------------------------------------------------------------------------------------
# Assignment matrices (spec §1.1)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Assignment:
    """A 0/1 matrix A (m chunks x N workers); A[i, j] = 1 iff worker j stores chunk i.

    `natural` is the default processing order: cyclic order for `cyclic`, ascending chunk index
    otherwise. Build with `cyclic`, `from_matrix` (validated) or `random_regular`.
    """

    matrix: np.ndarray
    natural: Ordering

    @classmethod
    def cyclic(cls, n: int, load: int) -> Assignment:
        """N = m = n; worker j stores chunks j, j+1, ..., j+load-1 (mod n), in that order."""
        if not 1 <= load <= n:
            raise ValueError(f"load (delta) must be in 1..{n}, got {load}")
        order = tuple(tuple((j + k) % n for k in range(load)) for j in range(n))
        a = np.zeros((n, n), dtype=np.int8)
        for j, chunks in enumerate(order):
            a[list(chunks), j] = 1
        a.setflags(write=False)
        return cls(a, order)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray | Sequence[Sequence[int]]) -> Assignment:
        """An arbitrary assignment; every chunk must be stored by at least one worker."""
        a = np.asarray(matrix)
        if a.ndim != 2 or a.size == 0 or not np.isin(a, (0, 1)).all():
            raise ValueError("the assignment must be a non-empty 2-D 0/1 matrix (chunks x workers)")
        a = a.astype(np.int8)
        missing = np.flatnonzero(a.sum(axis=1) == 0)
        if missing.size:
            raise ValueError(f"chunks {missing.tolist()} are stored by no worker")
        a.setflags(write=False)
        order = tuple(tuple(int(i) for i in np.flatnonzero(a[:, j])) for j in range(a.shape[1]))
        return cls(a, order)

    @classmethod
    def random_regular(cls, n: int, load: int, rng: np.random.Generator) -> Assignment:
        """N = m = n, a union of `load` disjoint random permutation matrices (spec A8, "G1/G2")."""
        if not 1 <= load <= n:
            raise ValueError(f"load (delta) must be in 1..{n}, got {load}")
        a = np.zeros((n, n), dtype=np.int8)
        rows = np.arange(n)
        for _ in range(load):
            for _attempt in range(10_000):
                perm = rng.permutation(n)
                if not a[rows, perm].any():
                    break
            else:  # pragma: no cover - only for load close to n
                raise RuntimeError("could not draw a disjoint permutation; use a smaller load")
            a[rows, perm] = 1
        return cls.from_matrix(a)

    @property
    def n_chunks(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_workers(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def loads(self) -> np.ndarray:
        """delta_j: chunks stored by worker j, shape (N,)."""
        return self.matrix.sum(axis=0).astype(int)

    @property
    def replication(self) -> np.ndarray:
        """gamma_i: workers storing chunk i, shape (m,)."""
        return self.matrix.sum(axis=1).astype(int)

    def holders(self, chunk: int) -> np.ndarray:
        return np.flatnonzero(self.matrix[chunk])

    def chunks(self, worker: int) -> np.ndarray:
        return np.flatnonzero(self.matrix[:, worker])

    @property
    def is_regular(self) -> bool:
        """N = m and every load and replication equal (the class of spec §2.2)."""
        values = np.concatenate([self.loads, self.replication])
        return self.n_chunks == self.n_workers and bool(np.all(values == values[0]))


# ------------------------------------------------------------------------------------------------
# Orderings and Q_max (spec §2)
# ------------------------------------------------------------------------------------------------
def check_ordering(assignment: Assignment, ordering: Sequence[Sequence[int]]) -> Ordering:
    """`ordering` as a tuple of tuples; pi_j must be a permutation of the chunks worker j stores."""
    if len(ordering) != assignment.n_workers:
        raise ValueError(f"an ordering needs {assignment.n_workers} lists, got {len(ordering)}")
    out = tuple(tuple(int(i) for i in order) for order in ordering)
    for j, order in enumerate(out):
        if sorted(order) != assignment.chunks(j).tolist():
            raise ValueError(
                f"order of worker {j} {list(order)} is not a permutation of its chunks"
            )
    return out


def worker_chunks(assignment: Assignment, ordering: Sequence[Sequence[int]], rank: int) -> tuple:
    """pi_rank: the chunks worker `rank` computes, in order (what the testbed worker runs)."""
    return check_ordering(assignment, ordering)[rank]


def positions(assignment: Assignment, ordering: Sequence[Sequence[int]]) -> np.ndarray:
    """pos_j(i), shape (m, N): 1-based position of chunk i in pi_j; 0 where j does not store i."""
    pos = np.zeros(assignment.matrix.shape, dtype=int)
    for j, order in enumerate(check_ordering(assignment, ordering)):
        pos[list(order), j] = np.arange(1, len(order) + 1)
    return pos


def random_ordering(assignment: Assignment, rng: np.random.Generator) -> Ordering:
    """Each worker's chunks in an independent uniformly random order."""
    return tuple(
        tuple(int(i) for i in rng.permutation(assignment.chunks(j)))
        for j in range(assignment.n_workers)
    )


def latin_ordering(assignment: Assignment) -> Ordering:
    """The optimal ordering of a regular assignment (N = m, equal loads): spec §2.2, A4.

    Konig: the delta-regular bipartite graph is a union of delta perfect matchings M_1..M_delta
    (Hopcroft-Karp, scipy); chunk i goes to position k at worker j iff (i, j) is in M_k. Every chunk
    then occupies each position 1..delta exactly once across its holders, so R_i = delta(delta+1)/2
    for all i and Q_max meets the lower bound `qmax_lower_bound` (optimal for l = 1; also optimal
    for l >= 2 in the spec's exhaustive checks, §2.2). O(delta * E sqrt(V)).
    """
    if not assignment.is_regular:
        raise ValueError(
            "latin_ordering needs N = m and equal loads and replications (spec §2.2); "
            f"loads {sorted(set(assignment.loads.tolist()))}, "
            f"replications {sorted(set(assignment.replication.tolist()))}"
        )
    remaining = assignment.matrix.astype(np.int8).copy()
    n, load = assignment.n_workers, int(assignment.loads[0])
    order = [[0] * load for _ in range(n)]
    for k in range(load):
        match = csgraph.maximum_bipartite_matching(sparse.csr_matrix(remaining), perm_type="column")
        if np.any(match < 0):  # pragma: no cover - impossible for a regular graph (Hall)
            raise RuntimeError("no perfect matching; the assignment is not regular")
        for chunk, worker in enumerate(match):
            order[worker][k] = chunk
            remaining[chunk, worker] = 0
    return tuple(tuple(o) for o in order)


def _r_values(assignment: Assignment, ordering: Sequence[Sequence[int]]) -> np.ndarray:
    """r_j(i) = delta_j - pos_j(i) + 1 where j stores i, else 0; shape (m, N)."""
    pos = positions(assignment, ordering)
    return np.where(pos > 0, assignment.loads[None, :] - pos + 1, 0)


def qmax(assignment: Assignment, ordering: Sequence[Sequence[int]], parts: int = 1) -> int:
    """Q_max^(l): the smallest total Q such that *every* progress state with sum_j c_j >= Q has
    processed every chunk at least l times (spec §2.1, A3: the coverage-guaranteeing "+1" form).

    Q_max^(l) = 1 + W - min_i (sum of the gamma_i - l + 1 smallest r_j(i), j in H_i),
    W = sum_j delta_j. Raises ValueError when some chunk has fewer than l holders.
    """
    if parts > int(assignment.replication.min()):
        raise ValueError(f"l = {parts} exceeds the smallest replication; never exactly decodable")
    r = _r_values(assignment, ordering)
    worst = math.inf
    for i in range(assignment.n_chunks):
        values = np.sort(r[i, assignment.holders(i)])
        worst = min(worst, int(values[: values.size - parts + 1].sum()))
    return int(1 + assignment.loads.sum() - worst)


def qmax_minus1(assignment: Assignment, ordering: Sequence[Sequence[int]], parts: int = 1) -> int:
    """The other convention (spec A3): the largest total at which some chunk can still be short."""
    return qmax(assignment, ordering, parts) - 1


def qmax_bruteforce(
    assignment: Assignment, ordering: Sequence[Sequence[int]], parts: int = 1
) -> int:
    """Q_max^(l) by enumerating all prod_j (delta_j + 1) progress states (small cases only)."""
    pos = positions(assignment, ordering)
    states = np.array(list(itertools.product(*(range(d + 1) for d in assignment.loads))))
    done = (pos[None] > 0) & (pos[None] <= states[:, None, :])  # (S, m, N)
    short = (done.sum(axis=2) < parts).any(axis=1)
    return int(states[short].sum(axis=1).max()) + 1


def qmax_lower_bound(assignment: Assignment) -> int:
    """1 + W - floor(sum_j delta_j (delta_j + 1) / (2 m)): no ordering beats it (l = 1, §2.2)."""
    d = assignment.loads
    return int(1 + d.sum() - (d * (d + 1)).sum() // (2 * assignment.n_chunks))


# ------------------------------------------------------------------------------------------------
# Blocks, combiners and coefficients (spec §1.2-§1.5)
# ------------------------------------------------------------------------------------------------
def block_length(dimension: int, parts: int) -> int:
    """ceil(d / l): the length of every data message."""
    return -(-dimension // parts)


def split_blocks(gradient: np.ndarray, parts: int) -> np.ndarray:
    """g (d,) -> its l blocks, shape (l, ceil(d/l)); zero-padded at the end (spec §1.1)."""
    g = np.asarray(gradient, dtype=float)
    width = block_length(g.size, parts)
    padded = np.zeros(parts * width)
    padded[: g.size] = g
    return padded.reshape(parts, width)


def default_combiner(n_workers: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """Phi (l x N): all ones for l = 1 (exact in floating point), else Gaussian (spec §1.5)."""
    if parts == 1:
        return np.ones((1, n_workers))
    return rng.standard_normal((parts, n_workers))


def chunk_coefficients(
    combiner: np.ndarray, processed_by: Sequence[int], selection: str = "pinv"
) -> np.ndarray:
    """B_i (kappa_i x l) for one chunk processed by the workers `processed_by` (spec §1.2 step 4).

    selection "pinv": B_i = pinv(Phi[:, S_i]), the least-squares choice, optimal for a fixed Phi
    (§1.4) and best conditioned. "first": only the first min(l, kappa_i) copies get non-zero rows
    (pinv of those columns); for l = 1 this is "coefficient 1 on one copy", exact integers.
    """
    workers = list(processed_by)
    if not workers:
        return np.zeros((0, combiner.shape[0]))
    if selection == "pinv":
        if combiner.shape[0] == 1:  # l = 1: pinv of a row phi is phi^T / |phi|^2 (no SVD)
            row = combiner[0, workers]
            return (row / (row @ row))[:, None]
        return np.linalg.pinv(combiner[:, workers])
    if selection == "first":
        used = min(len(workers), combiner.shape[0])
        out = np.zeros((len(workers), combiner.shape[0]))
        out[:used] = np.linalg.pinv(combiner[:, workers[:used]])
        return out
    raise ValueError(f"unknown selection {selection!r}; use 'pinv' or 'first'")


def error_count(counts: np.ndarray, parts: int) -> float:
    """sum_i (l - kappa_i)^+ = sum_i ||E_i||_F^2 for a generic combiner (spec §1.4)."""
    return float(np.maximum(parts - np.asarray(counts), 0).sum())


def estimated_nmse(counts: np.ndarray, parts: int) -> float:
    """NMSE = sum_i (l - kappa_i)^+ / (m l) from the counts alone (spec §1.4).

    The expectation of ||g_hat - g||^2 / E||g||^2 when gradient blocks are zero-mean, independent,
    with equal per-coordinate variance; for real (correlated) gradients it is only an estimate.
    """
    counts = np.asarray(counts)
    return error_count(counts, parts) / (counts.size * parts)


@dataclass(frozen=True)
class Coefficients:
    """The COMBINE message for one worker: z_j = sum_k sum_u beta[k, u] g_{chunks[k]}^(u)."""

    worker: int
    chunks: tuple[int, ...]
    beta: np.ndarray  # (len(chunks), l)


# ------------------------------------------------------------------------------------------------
# Worker side: pure functions of the worker's own gradients
# ------------------------------------------------------------------------------------------------
def r1_upload(
    coefficients: Coefficients, gradients: Mapping[int, np.ndarray], parts: int
) -> np.ndarray:
    """z_j (ceil(d/l),) = sum over the listed chunks of beta[k] . blocks(g_chunk) (spec §1.2 step 5).

    `gradients` maps chunk id -> g_i (d,); it must hold every listed chunk.
    """
    missing = [i for i in coefficients.chunks if i not in gradients]
    if missing:
        raise KeyError(f"worker {coefficients.worker} has not computed chunks {missing}")
    out = None
    for chunk, beta in zip(coefficients.chunks, coefficients.beta, strict=True):
        term = beta @ split_blocks(gradients[chunk], parts)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("no chunks to combine")
    return out


def r2_block(phi: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The coded block sum_u phi_u g_i^(u), shape (ceil(d/l),) (spec §1.6)."""
    phi = np.asarray(phi, dtype=float)
    return phi @ split_blocks(gradient, phi.size)


# ------------------------------------------------------------------------------------------------
# Master side: pure decoder state machines (messages in, gradient out; no sockets)
# ------------------------------------------------------------------------------------------------
class Outcome(enum.Enum):
    USED = "used"
    LATE = "late"  # after STOP (R1) or after the chunk / gradient was complete
    DUPLICATE = "duplicate"
    REJECTED = "rejected"  # unknown worker or chunk, out of order, not expected, wrong shape


class _Progress:
    """Shared bookkeeping: in-order completion notices -> c_j, S_i, kappa_i."""

    def __init__(self, assignment: Assignment, ordering: Sequence[Sequence[int]], parts: int):
        if not 1 <= parts:
            raise ValueError(f"l must be >= 1, got {parts}")
        self.assignment = assignment
        self.ordering = check_ordering(assignment, ordering)
        self.parts = parts
        self.progress = np.zeros(assignment.n_workers, dtype=int)  # c_j
        self.processed_by: list[list[int]] = [[] for _ in range(assignment.n_chunks)]  # S_i

    def record(self, worker: int, chunk: int) -> Outcome:
        if not 0 <= worker < self.assignment.n_workers:
            return Outcome.REJECTED
        order, done = self.ordering[worker], int(self.progress[worker])
        if chunk in order[:done]:
            return Outcome.DUPLICATE
        if done >= len(order) or order[done] != chunk:
            return Outcome.REJECTED
        self.progress[worker] += 1
        self.processed_by[chunk].append(worker)
        return Outcome.USED

    @property
    def counts(self) -> np.ndarray:
        """kappa_i, shape (m,)."""
        return np.array([len(s) for s in self.processed_by])


class R1Decoder:
    """Variant R1 (spec §1.2, the recommended interpretation A1): notices, STOP, one upload each.

    Phases: `notice` (compute phase) -> `stop` (returns the COMBINE messages) -> `offer` (uploads)
    -> `gradient`. Phi (l x N) is `combiner` if given; else all ones for l = 1 and, for l >= 2,
    the best of `candidates` seeded Gaussian draws by min_i sigma_min(Phi[:, S_i]), chosen at stop
    time (only the PS uses Phi, spec §1.5). `worst_condition` = max_i cond(Phi[:, S_i]) is logged.
    """

    def __init__(
        self,
        assignment: Assignment,
        ordering: Sequence[Sequence[int]],
        dimension: int,
        parts: int = 1,
        combiner: np.ndarray | None = None,
        seed: int = 0,
        candidates: int = 4,
        selection: str = "pinv",
    ) -> None:
        self.assignment, self.dimension, self.parts = assignment, dimension, parts
        self.ordering = check_ordering(assignment, ordering)
        if combiner is not None and np.shape(combiner) != (parts, assignment.n_workers):
            raise ValueError(f"combiner must have shape ({parts}, {assignment.n_workers})")
        self.fixed_combiner = None if combiner is None else np.asarray(combiner, dtype=float)
        self.rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(_COMBINER_STREAM,))
        )
        self.candidates, self.selection = max(1, candidates), selection
        self.reset()

    def reset(self) -> None:
        """Forget everything: start a new iteration."""
        self._state = _Progress(self.assignment, self.ordering, self.parts)
        self.stopped = False
        self.combiner: np.ndarray | None = self.fixed_combiner
        self.coefficients: dict[int, Coefficients] = {}
        self.coefficient_blocks: dict[int, np.ndarray] = {}  # chunk -> B_i (kappa_i x l)
        self.uploads: dict[int, np.ndarray] = {}
        self.worst_condition = math.nan
        self._sum = np.zeros((self.parts, block_length(self.dimension, self.parts)))

    # -- compute phase --------------------------------------------------------------------------
    def notice(self, worker: int, chunk: int) -> Outcome:
        """Worker `worker` finished `chunk` (must be the next chunk of its order)."""
        if self.stopped:
            return Outcome.LATE
        return self._state.record(worker, chunk)

    @property
    def progress(self) -> np.ndarray:
        """c_j: chunks each worker has reported, shape (N,)."""
        return self._state.progress.copy()

    @property
    def counts(self) -> np.ndarray:
        """kappa_i: distinct workers that have processed chunk i, shape (m,)."""
        return self._state.counts

    @property
    def processed_by(self) -> list[list[int]]:
        """S_i: the workers that processed chunk i, in notice order."""
        return [list(s) for s in self._state.processed_by]

    @property
    def exact_ready(self) -> bool:
        """Every chunk has >= l processed copies: stopping now decodes exactly (spec §1.3)."""
        return bool(self.counts.min() >= self.parts)

    @property
    def estimated_nmse(self) -> float:
        """The NMSE of stopping now, from the counts alone (spec §1.4); 0 when exact_ready."""
        return estimated_nmse(self.counts, self.parts)

    # -- stop -----------------------------------------------------------------------------------
    def _choose_combiner(self) -> np.ndarray:
        n = self.assignment.n_workers
        if self.parts == 1:  # all ones: nothing to choose (and no SVD to score it)
            return default_combiner(n, 1, self.rng)
        sets = [s for s in self._state.processed_by if s]
        best, best_score = None, -math.inf
        for _ in range(1 if self.parts == 1 else self.candidates):
            phi = default_combiner(n, self.parts, self.rng)
            score = min((np.linalg.svd(phi[:, s], compute_uv=False)[-1] for s in sets), default=1)
            if score > best_score:
                best, best_score = phi, score
        return best

    def stop(self) -> dict[int, Coefficients]:
        """Freeze S_i and return the COMBINE message of every worker that must upload.

        Workers absent from the result upload nothing (no chunk, or only zero coefficients).
        """
        if not self.stopped:
            self.stopped = True
            if self.combiner is None:
                self.combiner = self._choose_combiner()
            per_worker: dict[int, list[tuple[int, np.ndarray]]] = {}
            conds = [1.0]
            for chunk, workers in enumerate(self._state.processed_by):
                if not workers:
                    continue
                b = chunk_coefficients(self.combiner, workers, self.selection)
                self.coefficient_blocks[chunk] = b
                if self.parts > 1:  # a non-zero 1 x kappa matrix has condition number 1
                    conds.append(float(np.linalg.cond(self.combiner[:, workers])))
                for row, worker in zip(b, workers, strict=True):
                    if row.any():
                        per_worker.setdefault(worker, []).append((chunk, row))
            self.worst_condition = max(conds)
            self.coefficients = {
                w: Coefficients(w, tuple(c for c, _ in items), np.array([r for _, r in items]))
                for w, items in sorted(per_worker.items())
            }
        return self.coefficients

    def coefficient_error(self) -> float:
        """sum_i ||Phi[:, S_i] B_i - I_l||_F^2 of the frozen coefficients (= error_count, generic)."""
        if not self.stopped:
            raise RuntimeError("call stop() first")
        eye = np.eye(self.parts)
        total = 0.0
        for chunk in range(self.assignment.n_chunks):
            workers = self._state.processed_by[chunk]
            if chunk not in self.coefficient_blocks:
                total += self.parts
                continue
            total += float(
                np.sum((self.combiner[:, workers] @ self.coefficient_blocks[chunk] - eye) ** 2)
            )
        return total

    # -- upload phase ---------------------------------------------------------------------------
    def offer(self, worker: int, values: np.ndarray) -> Outcome:
        """Take the UPLOAD z_j; adds Phi[:, j] z_j to the decoded blocks (spec §1.2 step 6)."""
        if not self.stopped or worker not in self.coefficients:
            return Outcome.REJECTED
        values = np.asarray(values)
        if values.shape != (self._sum.shape[1],):
            return Outcome.REJECTED
        if worker in self.uploads:
            return Outcome.DUPLICATE
        self.uploads[worker] = values
        self._sum += np.outer(self.combiner[:, worker], values)
        return Outcome.USED

    @property
    def complete(self) -> bool:
        """Every worker that was sent coefficients has uploaded."""
        return self.stopped and len(self.uploads) == len(self.coefficients)

    def gradient(self) -> np.ndarray:
        """g_hat (d,): exact when stopped with exact_ready and complete, else the LS estimate."""
        return self._sum.ravel()[: self.dimension].copy()


class R2Decoder:
    """Variant R2 (spec §1.6): per-chunk coded blocks, requested with rows of an orthogonal G.

    `notice` returns (outcome, phi): phi (l,) = the next unused row of G (l x l, seeded random
    orthogonal; [[1]] for l = 1) while chunk i has fewer than l requested blocks, else None.
    `offer(worker, chunk, block)` takes the worker's r2_block; a chunk is decoded with G_rows^T
    (exact, cond 1) once it has l blocks. Same exactness condition and NMSE as R1.
    """

    def __init__(
        self,
        assignment: Assignment,
        ordering: Sequence[Sequence[int]],
        dimension: int,
        parts: int = 1,
        seed: int = 0,
    ) -> None:
        self.assignment, self.dimension, self.parts = assignment, dimension, parts
        self.ordering = check_ordering(assignment, ordering)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_COMBINER_STREAM, 2)))
        q, r = np.linalg.qr(rng.standard_normal((parts, parts)))
        self.rows = q * np.sign(np.diag(r))  # Haar-random orthogonal
        self.reset()

    def reset(self) -> None:
        self._state = _Progress(self.assignment, self.ordering, self.parts)
        self.stopped = False
        self.requested: list[dict[int, int]] = [{} for _ in range(self.assignment.n_chunks)]
        self.received: list[dict[int, np.ndarray]] = [{} for _ in range(self.assignment.n_chunks)]
        self.decoded = np.zeros(self.assignment.n_chunks, dtype=bool)
        self._sum = np.zeros((self.parts, block_length(self.dimension, self.parts)))

    def notice(self, worker: int, chunk: int) -> tuple[Outcome, np.ndarray | None]:
        if self.stopped:
            return Outcome.LATE, None
        outcome = self._state.record(worker, chunk)
        if outcome is not Outcome.USED or len(self.requested[chunk]) >= self.parts:
            return outcome, None
        row = len(self.requested[chunk])
        self.requested[chunk][worker] = row
        return outcome, self.rows[row].copy()

    def offer(self, worker: int, chunk: int, values: np.ndarray) -> Outcome:
        if not 0 <= chunk < self.assignment.n_chunks or worker not in self.requested[chunk]:
            return Outcome.REJECTED
        values = np.asarray(values)
        if values.shape != (self._sum.shape[1],):
            return Outcome.REJECTED
        if worker in self.received[chunk]:
            return Outcome.DUPLICATE
        if self.stopped or self.decoded[chunk]:
            return Outcome.LATE
        self.received[chunk][worker] = values
        if len(self.received[chunk]) == self.parts:
            self._sum += self._chunk_estimate(chunk)
            self.decoded[chunk] = True
        return Outcome.USED

    def _chunk_estimate(self, chunk: int) -> np.ndarray:
        """LS estimate of chunk's blocks (l, width): G_rows^T y (exact with l rows)."""
        got = self.received[chunk]
        rows = self.rows[[self.requested[chunk][w] for w in got]]
        return rows.T @ np.stack(list(got.values()))

    def stop(self) -> None:
        """Approximate mode: freeze; later notices and blocks are LATE."""
        self.stopped = True

    @property
    def counts(self) -> np.ndarray:
        """kappa_i from the notices, shape (m,)."""
        return self._state.counts

    @property
    def received_counts(self) -> np.ndarray:
        return np.array([len(r) for r in self.received])

    @property
    def estimated_nmse(self) -> float:
        """NMSE of decoding from the blocks received so far (spec §1.4)."""
        return estimated_nmse(self.received_counts, self.parts)

    @property
    def complete(self) -> bool:
        return bool(self.decoded.all())

    def gradient(self) -> np.ndarray:
        """g_hat (d,): decoded chunks plus the LS estimate of chunks with < l blocks."""
        total = self._sum.copy()
        for chunk in np.flatnonzero(~self.decoded):
            if self.received[chunk]:
                total += self._chunk_estimate(chunk)
        return total.ravel()[: self.dimension]


# ------------------------------------------------------------------------------------------------
# Whole-protocol drivers (tests, the timing model's measured error, and a reference for the lead)
# ------------------------------------------------------------------------------------------------
def run_r1(
    assignment: Assignment,
    ordering: Sequence[Sequence[int]],
    progress: Sequence[int],
    gradients: np.ndarray,
    parts: int = 1,
    **decoder_options,
) -> tuple[np.ndarray, R1Decoder]:
    """Play R1 for a final progress state c (N,) with chunk gradients (m, d); (g_hat, decoder)."""
    order = check_ordering(assignment, ordering)
    decoder = R1Decoder(assignment, order, gradients.shape[1], parts, **decoder_options)
    for worker, done in enumerate(progress):
        for chunk in order[worker][:done]:
            decoder.notice(worker, chunk)
    for worker, coefficients in decoder.stop().items():
        own = {i: gradients[i] for i in order[worker][: progress[worker]]}
        decoder.offer(worker, r1_upload(coefficients, own, parts))
    return decoder.gradient(), decoder


def run_r2(
    assignment: Assignment,
    ordering: Sequence[Sequence[int]],
    events: Sequence[tuple[int, int]],
    gradients: np.ndarray,
    parts: int = 1,
    seed: int = 0,
) -> tuple[np.ndarray, R2Decoder]:
    """Play R2 for completion events (worker, chunk) in time order; uploads are immediate."""
    decoder = R2Decoder(assignment, ordering, gradients.shape[1], parts, seed)
    for worker, chunk in events:
        _, phi = decoder.notice(worker, chunk)
        if phi is not None:
            decoder.offer(worker, chunk, r2_block(phi, gradients[chunk]))
    return decoder.gradient(), decoder
