"""What every worker computes and sends in one iteration of a plan, priced by SystemCosts.

Named `work` (the CPU seconds a plan asks of each worker) beside `layout` (the slots it sends).

The testbed's worker (workers/compute.py) goes slot by slot: the forward pass z = X theta,
l'(z) over the parts of the slot's s + 1 that no earlier slot of the iteration needed (one
numpy call per part), then the coded partial derivatives over the s + 1 parts and the slot's
coordinates, and sends the slot as one message of 8 * width bytes. Slots come in increasing
redundancy, so the first waits only for the worker's own part; over the iteration every held
row is passed forward once. Rows of cyclically consecutive parts form at most two contiguous
ranges; each range is one numpy call of the derivatives.
Tandon's scheme has two slots over all coordinates (unique rows, then shared parts; layout.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codes import cyclic_support
from .costs import FLOAT_BYTES, SystemCosts
from .layout import Slot, layout_for
from .plans import Plan


@dataclass(frozen=True)
class SlotWork:
    """One slot (message) of every worker: its coordinates and how many workers decode it."""

    stragglers: int
    width: int  # coordinates
    load: float  # cumulative raw load at which the papers' model has it due (layout.Slot)

    @property
    def bytes(self) -> int:
        return FLOAT_BYTES * self.width


@dataclass(frozen=True)
class PlanWork:
    """CPU seconds per worker at T = 1 (no slowdown): forward pass and each slot's derivatives."""

    n_workers: int
    rows: int  # M
    coordinates: int  # L
    slots: tuple[SlotWork, ...]
    slot_forward_s: np.ndarray  # shape (N, slots): the forward pass each slot adds
    derivative_s: np.ndarray  # shape (N, slots)

    @property
    def forward_s(self) -> np.ndarray:
        """The whole forward pass of each worker, shape (N,)."""
        return self.slot_forward_s.sum(axis=1)

    @property
    def theta_bytes(self) -> int:
        return FLOAT_BYTES * self.coordinates

    def needed(self) -> np.ndarray:
        """N - s per slot: the arrivals that decode it."""
        return np.array([self.n_workers - s.stragglers for s in self.slots])


def row_ranges(bounds: tuple[int, ...], parts: np.ndarray) -> list[tuple[int, int]]:
    """The contiguous row ranges of the given parts (in order), adjacent parts merged."""
    ranges: list[list[int]] = []
    for part in parts:
        lo, hi = bounds[part], bounds[part + 1]
        if hi <= lo:
            continue
        if ranges and ranges[-1][1] == lo:
            ranges[-1][1] = hi
        else:
            ranges.append([lo, hi])
    return [(lo, hi) for lo, hi in ranges]


def _rows_and_calls(bounds: tuple[int, ...], parts: np.ndarray) -> tuple[int, int]:
    ranges = row_ranges(bounds, parts)
    return sum(hi - lo for lo, hi in ranges), len(ranges)


def plan_work(plan: Plan, rows: int, coordinates: int, costs: SystemCosts) -> PlanWork:
    """The work of `plan` on a data set of `rows` x `coordinates` (block and Tandon plans)."""
    layout = layout_for(plan, rows)
    n = plan.n_workers
    forward = np.zeros((n, len(layout.slots)))
    derivative = np.zeros((n, len(layout.slots)))
    for w in range(n):
        done: set[tuple[str, int]] = set()  # (partition, part) whose r is computed
        for k, slot in enumerate(layout.slots):
            bounds = layout.partitions[slot.partition]
            new = [
                int(p)
                for p in cyclic_support(w, slot.stragglers, n)
                if (slot.partition, int(p)) not in done
            ]
            done.update((slot.partition, p) for p in new)
            sizes = [bounds[p + 1] - bounds[p] for p in new]
            calls = sum(1 for size in sizes if size > 0)
            forward[w, k] = costs.forward_s(sum(sizes), coordinates, calls)
            derivative[w, k] = _slot_derivative_s(slot, bounds, w, n, costs)
    slots = tuple(SlotWork(s.stragglers, s.stop - s.start, s.load) for s in layout.slots)
    return PlanWork(n, rows, coordinates, slots, forward, derivative)


def _slot_derivative_s(
    slot: Slot, bounds: tuple[int, ...], worker: int, n_workers: int, costs: SystemCosts
) -> float:
    held, calls = _rows_and_calls(bounds, cyclic_support(worker, slot.stragglers, n_workers))
    return costs.derivative_s(held, slot.stop - slot.start, calls)
