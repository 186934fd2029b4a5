"""The real arithmetic of a worker: coded partial derivatives of one slot (spec §2)."""

from __future__ import annotations

import numpy as np

from bcgc_sim.codes import cyclic_support
from bcgc_sim.layout import Slot
from bcgc_sim.problems import ProblemData, loss_derivative


class SlotComputer:
    """Worker `rank`'s data (memory-mapped) and code rows for one plan.

    `code_rows[s]` holds row `rank` of B(s) on its support cyclic_support(rank, s), length s + 1.
    """

    def __init__(
        self,
        data: ProblemData,
        partitions: dict[str, tuple[int, ...]],
        rank: int,
        n_workers: int,
        code_rows: dict[int, np.ndarray],
    ) -> None:
        self.kind = data.kind
        self.features, self.targets = data.load()
        self.partitions = partitions
        self.rank = rank
        self.n_workers = n_workers
        self.code_rows = code_rows
        self._theta: np.ndarray | None = None
        self._residuals: dict[tuple[str, int], np.ndarray] = {}

    def begin(self, theta: np.ndarray) -> None:
        """Start an iteration at theta, shape (L,)."""
        self._theta = theta
        self._residuals.clear()

    def _residual(self, partition: str, part: int) -> tuple[slice, np.ndarray]:
        bounds = self.partitions[partition]
        rows = slice(bounds[part], bounds[part + 1])
        key = (partition, part)
        if key not in self._residuals:
            z = self.features[rows] @ self._theta
            self._residuals[key] = loss_derivative(self.kind, z, self.targets[rows])
        return rows, self._residuals[key]

    def compute(self, slot: Slot) -> np.ndarray:
        """sum_i B(s)[rank, part_i] X[part_i, start:stop]^T r(part_i), shape (stop - start,)."""
        parts = cyclic_support(self.rank, slot.stragglers, self.n_workers)
        weights = self.code_rows[slot.stragglers]
        out = np.zeros(slot.stop - slot.start)
        for weight, part in zip(weights, parts, strict=True):
            rows, residual = self._residual(slot.partition, int(part))
            out += weight * (self.features[rows, slot.start : slot.stop].T @ residual)
        return out
