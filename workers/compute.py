"""The real arithmetic of a worker: coded partial derivatives of one slot (spec §2).

The s + 1 parts a worker combines for redundancy s are cyclically consecutive, so their rows form
at most two contiguous ranges of the data file. Per iteration the worker needs the loss
derivative r = l'(X theta, y) on every row it holds; a slot is then X[range, start:stop]^T
(w * r[range]) over at most two ranges, w holding each row's code coefficient.

r is computed part by part when a slot first needs it, not over all held rows up front: slots
come in increasing redundancy, so the first slot (s = 0) waits only for the worker's own part,
and each later one for the parts its wider support adds. The work per iteration is the same;
it is done in the order the deadlines ask for it. (At N = 64, M = 128, L = 1e6 bcgc-opt codes
coordinates for s = 63: every worker holds all 1 GB of data, and a forward pass over it before
the first slot delayed every s = 0 message.)
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
        self.needs = {  # per (partition, s): the parts whose r it reads, as row ranges
            (slot.partition, slot.stragglers): [
                self._part_rows(slot.partition, int(part))
                for part in cyclic_support(rank, slot.stragglers, n_workers)
            ]
            for slot in slots
        }
        self.residual = np.zeros(data.rows)  # loss derivative of the held rows at this theta
        self.fresh: set[tuple[int, int]] = set()  # row ranges whose r is of this theta
        self.theta: np.ndarray | None = None
        self.repeat = 1
        self._touch()

    def _touch(self) -> None:
        """Read every held row once, at set-up: the data are memory-mapped, and mapping them
        page by page inside the first iteration cost about 2 s there (N = 64 workers holding
        1 GB each, scripts/bench_scale.py); SETUP_OK means the data are loaded."""
        for rows in {rows for needed in self.needs.values() for rows in needed}:
            float(np.add.reduce(self.features[rows[0] : rows[1]], axis=None))

    def _part_rows(self, partition: str, part: int) -> tuple[int, int]:
        bounds = self.partitions[partition]
        return bounds[part], bounds[part + 1]

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

    def begin(self, theta: np.ndarray, repeat: int = 1) -> None:
        """Start an iteration at theta, shape (L,) (kept, not copied, until the next begin):
        r is computed as slots need it, each part's `repeat` times (natural.slowdown: the
        repetitions are real extra work)."""
        self.theta, self.repeat = theta, repeat
        self.fresh.clear()

    def _forward(self, rows: tuple[int, int]) -> None:
        lo, hi = rows
        for _ in range(self.repeat):
            z = self.features[lo:hi] @ self.theta
            self.residual[lo:hi] = loss_derivative(self.kind, z, self.targets[lo:hi])
        self.fresh.add(rows)

    def compute(self, slot: Slot) -> np.ndarray:
        """sum_i B(s)[rank, part_i] X[part_i, start:stop]^T r(part_i), shape (stop - start,)."""
        for rows in self.needs[slot.partition, slot.stragglers]:
            if rows not in self.fresh:
                self._forward(rows)
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
