"""The original GC protocol of spec/partial-gc.md §1.7, the partial-straggler baseline: fixed
codes, and one upload per worker after all its delta chunks.

Tandon's cyclic-repetition code for l = 1, Ye & Abbe's communication-efficient polynomial code
for l >= 2 (Chebyshev nodes). Any N - s uploads decode the l target blocks exactly; fewer give
the least-squares estimate. Times take `finish` (K, N, P) as in `bcgc_sim.partial.timing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.codes import well_conditioned_matrix
from .assignment import Assignment
from .coding import split_blocks


@dataclass(frozen=True, eq=False)
class OriginalCode:
    """B (N x m l): worker j uploads y_j = sum_(i,u) B[j, i l + u] g_i^(u) after all its chunks.

    Any N - s uploads decode the l target blocks exactly; fewer give the LS estimate (§1.7).
    `nodes` are the Ye-Abbe evaluation points (None for Tandon's code).
    """

    name: str
    matrix: np.ndarray
    parts: int
    stragglers: int
    nodes: np.ndarray | None = None

    @property
    def n_workers(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_chunks(self) -> int:
        return int(self.matrix.shape[1] // self.parts)

    def target(self) -> np.ndarray:
        """T = [I_l I_l ... I_l], shape (l, m l)."""
        return np.tile(np.eye(self.parts), (1, self.n_chunks))

    def decoder(self, finished) -> np.ndarray:
        """D* (l x |F|) = argmin ||D B_F - T||_F (exact with >= N - s finished workers)."""
        rows = self.matrix[np.asarray(finished, dtype=int)]
        if rows.shape[0] == 0:
            return np.zeros((self.parts, 0))
        d, *_ = np.linalg.lstsq(rows.T, self.target().T, rcond=None)
        return d.T

    def error(self, finished) -> float:
        """||D* B_F - T||_F^2; NMSE = error / (m l) under the gradient model of §1.4."""
        rows = self.matrix[np.asarray(finished, dtype=int)]
        if rows.shape[0] == 0:
            return float(self.n_chunks * self.parts)
        residual = self.decoder(finished) @ rows - self.target()
        return float(np.sum(residual**2))

    def upload(self, rank: int, gradients: np.ndarray) -> np.ndarray:
        """y_rank, shape (ceil(d/l),), from all chunk gradients (m, d) (only held chunks count)."""
        blocks = np.stack([split_blocks(g, self.parts) for g in gradients])  # (m, l, w)
        return self.matrix[rank] @ blocks.reshape(-1, blocks.shape[2])


def tandon_code(n_workers: int, stragglers: int, seed: int = 0, matrix=None) -> OriginalCode:
    """l = 1: Tandon's cyclic-repetition code B(s) (bcgc_sim.model.codes), delta = s + 1 (§1.7)."""
    b = well_conditioned_matrix(n_workers, stragglers, seed) if matrix is None else matrix
    return OriginalCode("tandon", np.asarray(b, dtype=float), 1, stragglers)


def chebyshev_nodes(n: int) -> np.ndarray:
    """cos((2w + 1) pi / (2 N)), w = 0..N-1: the favourable nodes for the polynomial code."""
    return np.cos((2 * np.arange(n) + 1) * np.pi / (2 * n))


def ye_abbe_code(n_workers: int, load: int, parts: int, nodes=None) -> OriginalCode:
    """Ye & Abbe's communication-efficient code on the cyclic assignment, s = delta - l (§1.7).

    B[w, (i, u)] = q_i(alpha_w) sum_v alpha_w^v (U_i^{-1})[v, u], q_i(x) = prod_{w not in H_i}
    (x - alpha_w), U_i the upper-triangular Toeplitz matrix of q_i's leading coefficients.
    """
    s = load - parts
    if s < 0:
        raise ValueError(f"need delta >= l, got delta = {load}, l = {parts}")
    alpha = chebyshev_nodes(n_workers) if nodes is None else np.asarray(nodes, dtype=float)
    assignment = Assignment.cyclic(n_workers, load)
    b = np.zeros((n_workers, n_workers * parts))
    powers = np.vander(alpha, parts, increasing=True)  # (N, l): alpha_w^v
    for i in range(n_workers):
        others = np.flatnonzero(assignment.matrix[i] == 0)
        c = np.poly(alpha[others])  # [1, c_1, c_2, ...]
        c = np.concatenate([c, np.zeros(parts)])
        u = np.array([[c[v - t] if v >= t else 0.0 for v in range(parts)] for t in range(parts)])
        q_at = np.polyval(np.poly(alpha[others]), alpha)  # q_i(alpha_w), zero off H_i
        b[:, i * parts : (i + 1) * parts] = q_at[:, None] * (powers @ np.linalg.inv(u))
    return OriginalCode("ye-abbe", b, parts, s, alpha)


def original_code(n_workers: int, load: int, parts: int, seed: int = 0) -> OriginalCode:
    """The baseline of spec A6: Tandon for l = 1, Ye-Abbe with Chebyshev nodes for l >= 2."""
    if parts == 1:
        return tandon_code(n_workers, load - 1, seed)
    return ye_abbe_code(n_workers, load, parts)


def all_done_times(finish: np.ndarray, loads: np.ndarray) -> np.ndarray:
    """When each worker has finished all its delta_j chunks, shape (K, N)."""
    return finish[:, np.arange(finish.shape[1]), np.asarray(loads) - 1]


def original_exact_times(finish: np.ndarray, loads: np.ndarray, stragglers: int) -> np.ndarray:
    """Original GC (§1.7): the (N - s)-th smallest all-done time, shape (K,)."""
    done = np.sort(all_done_times(finish, loads), axis=1)
    return done[:, done.shape[1] - stragglers - 1]


def original_nmse_at(code: OriginalCode, finish: np.ndarray, loads, deadlines) -> np.ndarray:
    """NMSE ||D* B_F - T||^2 / (m l) of the original GC at each deadline, (K, D) (§1.7)."""
    done = all_done_times(finish, loads)
    cache: dict[bytes, float] = {}
    out = np.empty((finish.shape[0], len(deadlines)))
    scale = code.n_chunks * code.parts
    for col, t in enumerate(deadlines):
        for k, row in enumerate(done <= t):
            key = np.packbits(row).tobytes()
            if key not in cache:
                cache[key] = max(code.error(np.flatnonzero(row)), 0.0) / scale
            out[k, col] = cache[key]
    return out
