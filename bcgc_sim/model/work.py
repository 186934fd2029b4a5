"""What every worker computes and sends in one iteration of a plan, priced by SystemCosts.

Named `work` (the CPU seconds a plan asks of each worker) beside `layout` (the slots it sends).

The testbed's worker (workers/compute.py) first runs the forward pass z = X theta, l'(z) over
every row it holds (for each row partition, the parts of its highest redundancy level), then,
slot by slot, the coded partial derivatives over the s + 1 parts of the slot and its
coordinates, and sends each slot as one message of 8 * width bytes. Rows of cyclically
consecutive parts form at most two contiguous ranges; each range is one numpy call.
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
    forward_s: np.ndarray  # shape (N,)
    derivative_s: np.ndarray  # shape (N, slots)

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
    widest: dict[str, int] = {}
    for slot in layout.slots:
        widest[slot.partition] = max(widest.get(slot.partition, 0), slot.stragglers)
    forward = np.zeros(n)
    derivative = np.zeros((n, len(layout.slots)))
    for w in range(n):
        for name, s in widest.items():
            held, calls = _rows_and_calls(layout.partitions[name], cyclic_support(w, s, n))
            forward[w] += costs.forward_s(held, coordinates, calls)
        for k, slot in enumerate(layout.slots):
            derivative[w, k] = _slot_derivative_s(
                slot, layout.partitions[slot.partition], w, n, costs
            )
    slots = tuple(SlotWork(s.stragglers, s.stop - s.start, s.load) for s in layout.slots)
    return PlanWork(n, rows, coordinates, slots, forward, derivative)


def _slot_derivative_s(
    slot: Slot, bounds: tuple[int, ...], worker: int, n_workers: int, costs: SystemCosts
) -> float:
    held, calls = _rows_and_calls(bounds, cyclic_support(worker, slot.stragglers, n_workers))
    return costs.derivative_s(held, slot.stop - slot.start, calls)
