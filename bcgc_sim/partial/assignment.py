"""Which worker stores which chunk, and in which order it processes them (spec/partial-gc.md §1.1, §2).

Notation (spec §1.1): N workers, m chunks, A (m x N) 0/1 with A[i, j] = 1 iff worker j stores
chunk i; an ordering pi_j lists the chunks of worker j in processing order. Workers and chunks
are 0-based. The testbed uses cyclic storage (`Assignment.cyclic`) and either the Latin ordering
(optimal, spec §2.2, A4) or one uniformly random order per worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

Ordering = tuple[tuple[int, ...], ...]  # Ordering[j] = pi_j, the chunks of worker j in order


@dataclass(frozen=True, eq=False)
class Assignment:
    """A 0/1 matrix A (m chunks x N workers); A[i, j] = 1 iff worker j stores chunk i.

    `natural` is the default processing order: cyclic order for `cyclic`, ascending chunk index
    for any other matrix.
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
    for all i and Q_max (spec §2.1) meets its lower bound 1 + W - floor(sum_j delta_j (delta_j + 1)
    / (2 m)): optimal for l = 1, and for l >= 2 in the spec's exhaustive checks (§2.2).
    O(delta * E sqrt(V)).
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
