"""How a plan runs on the testbed: the messages ("slots") each worker sends per iteration.

A slot covers coordinates [start, stop). Worker n computes it over the parts
cyclic_support(n, s) of one row partition, weighted by row n of B(s), and sends it when its
cumulative model load `load` (raw units, spec §3) is done:
    deadline = t_start + time_scale * (M C / N) * T_n * load.
The master decodes the slot from its first N - s arrivals and adds the result to
gradient[start:stop].

BCGC-style plans: one slot per non-empty block, one partition into N equal subsets
(`partition_bounds`: contiguous row ranges whose sizes differ by at most one).
Tandon's partial-straggler scheme (spec §7.2): two slots over all coordinates: first the
worker's unique rows (plain sum, all N needed), then its s + 1 shared parts coded with B(s).
With p = alpha (s+1)/(alpha-1) parts per worker, the unique parts are a fraction 1/alpha of
its load; row counts are rounded, the deadlines use the exact model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plans import BlockPlan, Plan, TandonPlan


@dataclass(frozen=True)
class Slot:
    """One coded message per worker per iteration."""

    start: int  # first coordinate
    stop: int  # one past the last coordinate
    stragglers: int  # s: decodable from any N - s workers
    load: float  # cumulative raw load at which it is due
    partition: str  # name of the row partition it combines


@dataclass(frozen=True)
class Layout:
    slots: tuple[Slot, ...]
    partitions: dict[str, tuple[int, ...]]  # name -> N + 1 row boundaries


def partition_bounds(rows: int, parts: int, start: int = 0) -> tuple[int, ...]:
    """Boundaries of `parts` contiguous row ranges of [start, start + rows), sizes within 1."""
    sizes = np.full(parts, rows // parts)
    sizes[: rows % parts] += 1
    return tuple(int(v) for v in start + np.concatenate([[0], np.cumsum(sizes)]))


def layout_for(plan: Plan, rows: int) -> Layout:
    """The testbed layout of `plan` on a data set of `rows` samples."""
    n = plan.n_workers
    if isinstance(plan, BlockPlan):
        slots = tuple(
            Slot(b.start, b.stop, b.stragglers, float(b.load), "subsets") for b in plan.blocks()
        )
        return Layout(slots, {"subsets": partition_bounds(rows, n)})
    if isinstance(plan, TandonPlan):
        s, alpha, length = plan.stragglers, plan.alpha, plan.coordinates
        total = length * alpha * (s + 1) / (s + alpha)
        shared_rows = round(rows / (1 + (s + 1) / (alpha - 1)))
        unique_rows = rows - shared_rows
        slots = (
            Slot(0, length, 0, total / alpha, "unique"),
            Slot(0, length, s, total, "shared"),
        )
        partitions = {
            "unique": partition_bounds(unique_rows, n),
            "shared": partition_bounds(shared_rows, n, start=unique_rows),
        }
        return Layout(slots, partitions)
    raise TypeError(f"no testbed layout for {type(plan).__name__}")
