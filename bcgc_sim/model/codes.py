"""Cyclic-repetition gradient codes (Tandon et al., ICML 2017; spec/bcgc.md §2.1).

Worker n (0-based) combines the partial derivatives of data subsets n, n+1, ..., n+s (mod N)
with row n of the encoding matrix B(s), shape (N, N). The master recovers the sum over all
subsets from any set F of N - s workers with the decoding vector a_F, which solves
B_F^T a = 1_N.

Construction and conditioning. Tandon's Algorithm 1 draws a Gaussian H (s x N, H 1 = 0) and puts
every row of B in null(H). A single draw is sometimes badly conditioned: the amplification
kappa_F = sum_n |a_n| ||b_n||_1 of rounding errors in the coded messages reached 4.6e7 at N = 32
and 2.7e8 at N = 64 (one draw, worst of 200 random F per s). We therefore draw `draws` = 4
candidates per s and keep the one whose worst kappa_F over a probe family (the N cyclic windows
plus 32 random sets) is smallest. Measured by `scripts/bench_codes.py` (every F for N <= 12; the
cyclic windows plus 400 random F per s above), worst relative decoding error
max|decoded - true| / max|true| of random partial derivatives: 1.3e-10 at N = 12, 3.5e-11 at
N = 16, 3.3e-10 at N = 32 and, the worst case at N = 64, 4.7e-9 (kappa_F up to 2.2e8).
The codes document a tolerance of 1e-8 for N <= 32 (DECODING_TOLERANCE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .streams import ROOT_CODES, generator

DECODING_TOLERANCE = 1e-8  # relative, for N <= 32 (measured; see module docstring)


def cyclic_support(worker: int, stragglers: int, n_workers: int) -> np.ndarray:
    """The data subsets worker `worker` combines for redundancy s: worker, ..., worker+s (mod N)."""
    return (worker + np.arange(stragglers + 1)) % n_workers


def encoding_matrix(
    n_workers: int,
    stragglers: int,
    h: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Tandon's B(s), shape (N, N): row n supported on cyclic_support(n, s), B[n, n] = 1.

    `h` (s x N with h @ 1 = 0) may be given (the spec's worked example uses [[2, -1, -1]]);
    otherwise it is drawn from `rng`. s = 0 gives the identity and s = N - 1 all ones, exactly.
    """
    n, s = n_workers, stragglers
    if not 0 <= s < n:
        raise ValueError(f"stragglers must be in 0..{n - 1}, got {s}")
    if s == 0:
        return np.eye(n)
    if s == n - 1:
        return np.ones((n, n))
    if h is None:
        rng = rng if rng is not None else np.random.default_rng()
        h = rng.standard_normal((s, n))
        h[:, -1] = -h[:, :-1].sum(axis=1)
    h = np.asarray(h, dtype=float)
    b = np.zeros((n, n))
    for row in range(n):
        others = cyclic_support(row, s, n)[1:]
        b[row, row] = 1.0
        b[row, others] = -np.linalg.solve(h[:, others], h[:, row])
    return b


def decoding_vector(b: np.ndarray, fastest: Sequence[int]) -> np.ndarray:
    """a_F, shape (|F|,): the weights with sum_{n in F} a_n b_n = 1_N, for F = `fastest`."""
    rows = b[np.asarray(fastest, dtype=int)]
    a, *_ = np.linalg.lstsq(rows.T, np.ones(b.shape[1]), rcond=None)
    return a


def _batched_amplification(b: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """kappa_F = sum_n |a_n| ||b_n||_1 for each row of `sets` (shape (P, N-s)), by batched QR."""
    rows = b[sets]  # (P, k, N)
    q, r = np.linalg.qr(np.swapaxes(rows, 1, 2))  # B_F^T = Q R
    rhs = np.swapaxes(q, 1, 2) @ np.ones(b.shape[1])
    with np.errstate(all="ignore"):
        a = np.linalg.solve(r, rhs[..., None])[..., 0]
    kappa = np.abs(a) * np.abs(rows).sum(axis=2)
    return np.where(np.isfinite(kappa).all(axis=1), kappa.sum(axis=1), np.inf)


def probe_sets(
    n_workers: int, stragglers: int, rng: np.random.Generator, n_random: int = 32
) -> np.ndarray:
    """Sets F of size N - s to score a code on: the N cyclic windows plus `n_random` random sets."""
    k = n_workers - stragglers
    windows = (np.arange(n_workers)[:, None] + np.arange(k)) % n_workers
    random = np.array([np.sort(rng.choice(n_workers, k, replace=False)) for _ in range(n_random)])
    return np.vstack([windows, random.reshape(-1, k)])


def amplification(b: np.ndarray, fastest: Sequence[int]) -> float:
    """kappa_F: how much the decode amplifies relative rounding errors of the coded messages."""
    return float(_batched_amplification(b, np.asarray([fastest], dtype=int))[0])


def well_conditioned_matrix(
    n_workers: int, stragglers: int, seed: int, draws: int = 4
) -> np.ndarray:
    """B(s) for (seed, N, s): the best of `draws` Gaussian constructions by worst probe kappa_F."""
    if stragglers in (0, n_workers - 1):
        return encoding_matrix(n_workers, stragglers)
    rng = generator(seed, ROOT_CODES, n_workers, stragglers)
    candidates = [encoding_matrix(n_workers, stragglers, rng=rng) for _ in range(draws)]
    probes = probe_sets(n_workers, stragglers, rng)
    scores = [float(np.max(_batched_amplification(c, probes))) for c in candidates]
    return candidates[int(np.argmin(scores))]


@dataclass
class CodeBook:
    """The encoding matrices of one run, built on first use per redundancy level s.

    Master and workers build the same matrices from the same seed; decoding vectors are cached
    per (s, F) because F is the same for every block of an iteration that shares s.
    """

    n_workers: int
    seed: int
    _matrices: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _decoders: dict[tuple[int, tuple[int, ...]], np.ndarray] = field(
        default_factory=dict, repr=False
    )

    def matrix(self, stragglers: int) -> np.ndarray:
        if stragglers not in self._matrices:
            self._matrices[stragglers] = well_conditioned_matrix(
                self.n_workers, stragglers, self.seed
            )
        return self._matrices[stragglers]

    def decoder(self, stragglers: int, fastest: Sequence[int]) -> np.ndarray:
        """a_F for the sorted worker set F (|F| = N - s); cached."""
        cached = self._decoders.get((stragglers, tuple(fastest)))  # fast path: sorted ints
        if cached is not None:
            return cached
        key = (stragglers, tuple(sorted(int(w) for w in fastest)))
        if key not in self._decoders:
            self._decoders[key] = decoding_vector(self.matrix(stragglers), key[1])
        return self._decoders[key]
