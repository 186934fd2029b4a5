"""The real arithmetic of a worker: coded partial derivatives of one slot (spec §2).

The s + 1 parts a worker combines for redundancy s are cyclically consecutive, so their rows form
at most two contiguous ranges of the data file. Per iteration the worker computes the loss
derivative r = l'(X theta, y) once over all rows it holds (at most two products per
partition); a slot is then X[range, start:stop]^T (w * r[range]) over at most two ranges, w
holding each row's code coefficient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bcgc_sim.model.codes import cyclic_support
from bcgc_sim.model.layout import Slot
from bcgc_sim.problems import ProblemData, loss_derivative


class SlotComputer:
    """Worker `rank`'s data (memory-mapped) and code rows for one plan.

    `code_rows[s]` holds row `rank` of B(s) on its support cyclic_support(rank, s), length s + 1.
    """

    def __init__(
        self,
        data: ProblemData,
        partitions: dict[str, tuple[int, ...]],
        slots: Sequence[Slot],
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
        self.ranges = {
            (slot.partition, slot.stragglers): self._ranges(
                slot.partition, slot.stragglers, code_rows[slot.stragglers]
            )
            for slot in slots
        }
        widest: dict[str, int] = {}
        for slot in slots:
            widest[slot.partition] = max(widest.get(slot.partition, 0), slot.stragglers)
        self.held = [
            rows for name, s in widest.items() for rows, _ in self._ranges(name, s, np.ones(s + 1))
        ]
        self.residual = np.zeros(data.rows)  # loss derivative of the held rows at this theta

    def _ranges(
        self, partition: str, stragglers: int, weights: np.ndarray
    ) -> list[tuple[slice, np.ndarray]]:
        """Row ranges of the parts combined for s, each with its per-row code weights."""
        bounds = self.partitions[partition]
        ranges: list[list] = []  # [first row, end row, weights per row]
        for part, weight in zip(
            cyclic_support(self.rank, stragglers, self.n_workers), weights, strict=True
        ):
            lo, hi = bounds[part], bounds[part + 1]
            rows = np.full(hi - lo, float(weight))
            if ranges and ranges[-1][1] == lo:
                ranges[-1][1] = hi
                ranges[-1][2] = np.concatenate([ranges[-1][2], rows])
            else:
                ranges.append([lo, hi, rows])
        return [(slice(lo, hi), w) for lo, hi, w in ranges if hi > lo]

    def begin(self, theta: np.ndarray) -> None:
        """Start an iteration at theta, shape (L,): r over every held row."""
        for rows in self.held:
            z = self.features[rows] @ theta
            self.residual[rows] = loss_derivative(self.kind, z, self.targets[rows])

    def compute(self, slot: Slot) -> np.ndarray:
        """sum_i B(s)[rank, part_i] X[part_i, start:stop]^T r(part_i), shape (stop - start,)."""
        out = None
        for rows, weights in self.ranges[slot.partition, slot.stragglers]:
            weighted = weights * self.residual[rows]
            block = self.features[rows, slot.start : slot.stop]
            # numpy's matmul is slow when the inner dimension is 1: one row is a scaled copy
            term = block.T @ weighted if weighted.size > 1 else block[0] * weighted[0]
            if out is None:
                out = term
            else:
                out += term
        return np.zeros(slot.stop - slot.start) if out is None else out
