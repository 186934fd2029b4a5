"""Reference code the partial-straggler tests check the product against (spec/partial-gc.md).

Nothing here is used by the product: brute-force and closed-form oracles for Q_max (spec §2),
other ways to build assignments, the R1 protocol played as a whole, variant R2 (spec §1.6,
which the wire does not carry) as an independent decoder, the per-chunk timing model of
spec §3.3 (b), and Ye-Abbe decoding by interpolation (spec §1.5).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from bcgc_sim.model.stragglers import CycleTimeDistribution, monte_carlo_cycle_times
from bcgc_sim.model.streams import ROOT_COMBINER, STREAM_EVALUATION, generator
from bcgc_sim.partial.assignment import Assignment, check_ordering, positions
from bcgc_sim.partial.coding import block_length, estimated_nmse, r1_upload, split_blocks
from bcgc_sim.partial.decoder import Outcome, R1Decoder, _Progress
from bcgc_sim.partial.original_gc import OriginalCode


# ------------------------------------------------------------------------------------------------
# Assignments
# ------------------------------------------------------------------------------------------------
def assignment_from_matrix(matrix: np.ndarray | Sequence[Sequence[int]]) -> Assignment:
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
    return Assignment(a, order)


def random_regular(n: int, load: int, rng: np.random.Generator) -> Assignment:
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
    return assignment_from_matrix(a)


# ------------------------------------------------------------------------------------------------
# Q_max (spec §2)
# ------------------------------------------------------------------------------------------------
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
# R1 played as a whole, and the error of its frozen coefficients
# ------------------------------------------------------------------------------------------------
def coefficient_error(decoder: R1Decoder) -> float:
    """sum_i ||Phi[:, S_i] B_i - I_l||_F^2 of the frozen coefficients (= error_count, generic)."""
    if not decoder.stopped:
        raise RuntimeError("call stop() first")
    eye = np.eye(decoder.parts)
    total = 0.0
    for chunk, workers in enumerate(decoder.processed_by):
        if chunk not in decoder.coefficient_blocks:
            total += decoder.parts
            continue
        residual = decoder.combiner[:, workers] @ decoder.coefficient_blocks[chunk] - eye
        total += float(np.sum(residual**2))
    return total


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


# ------------------------------------------------------------------------------------------------
# Variant R2 (spec §1.6): per-chunk coded blocks, an independent decoder
# ------------------------------------------------------------------------------------------------
def r2_block(phi: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The coded block sum_u phi_u g_i^(u), shape (ceil(d/l),) (spec §1.6)."""
    phi = np.asarray(phi, dtype=float)
    return phi @ split_blocks(gradient, phi.size)


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
        rng = generator(seed, ROOT_COMBINER, 2)
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


# ------------------------------------------------------------------------------------------------
# Decoding by interpolation (spec §1.5), the per-chunk timing model (spec §3.3 (b)), notices
# ------------------------------------------------------------------------------------------------
def interpolation_decoder(code: OriginalCode, finished) -> tuple[np.ndarray, float]:
    """Ye-Abbe decoding by Vandermonde solve from N - s workers: (D, cond(V_F)) (spec §1.5).

    p has degree N - s - 1; its coefficients of x^{N-delta} .. x^{N-s-1} are the targets.
    """
    if code.nodes is None:
        raise ValueError("interpolation decoding is for Ye-Abbe codes")
    f = np.asarray(finished, dtype=int)
    k = code.n_workers - code.stragglers
    if f.size != k:
        raise ValueError(f"interpolation needs exactly N - s = {k} workers")
    v = np.vander(code.nodes[f], k, increasing=True)
    inverse = np.linalg.solve(v, np.eye(k))
    load = code.stragglers + code.parts
    top = code.n_workers - load
    return inverse[top : top + code.parts], float(np.linalg.cond(v))


def chunk_finish_times(durations: np.ndarray, loads: np.ndarray) -> np.ndarray:
    """Per-chunk model: finish = cumulative sum of i.i.d. chunk durations (K, N, P), model time."""
    d = np.asarray(durations, dtype=float)
    loads = np.asarray(loads, dtype=int)
    out = np.cumsum(d[:, :, : loads.max()], axis=2)
    return np.where(
        np.arange(1, loads.max() + 1)[None, None, :] <= loads[None, :, None], out, np.inf
    )


def chunk_durations(
    distribution: CycleTimeDistribution,
    seed: int,
    samples: int,
    n_workers: int,
    max_load: int,
    stream: int = STREAM_EVALUATION,
    chunk_cycles: float = 1.0,
) -> np.ndarray:
    """i.i.d. chunk durations chunk_cycles * T, shape (K, N, P), from the seeded MC stream."""
    t = monte_carlo_cycle_times(distribution, seed, samples, n_workers * max_load, stream)
    return chunk_cycles * t.reshape(samples, n_workers, max_load)


def notice_events(
    assignment: Assignment, ordering, finish_row: np.ndarray
) -> list[tuple[float, int, int]]:
    """The NOTICEs of one realisation in time order: (time, worker, chunk), finite times only.

    `finish_row` (N, P) is one realisation of `finish`; feed the events to R1Decoder/R2Decoder.
    """
    order = check_ordering(assignment, ordering)
    events = [
        (float(finish_row[j, k]), j, chunk)
        for j in range(assignment.n_workers)
        for k, chunk in enumerate(order[j])
        if np.isfinite(finish_row[j, k])
    ]
    return sorted(events)
