"""Plans: what each worker computes and what the master needs, for every scheme.

A `BlockPlan` is a BCGC partition x (spec §3 eq. 6-7): the first x_0 coordinates tolerate no
straggler, the next x_1 tolerate one, ..., the last x_{N-1} tolerate N - 1. Single-BCGC, uncoded
and Ferdinand-Draper are block plans too. A `TandonPlan` is Tandon et al.'s partial-straggler
scheme (spec §7.2), whose runtime is not that of a block partition. The partial-straggler
protocol's plan is `bcgc_sim.partial.plan.PartialPlan`; the registry (`bcgc_sim.schemes`) builds
every kind and turns each into run.json's plain dict and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .runtime import (
    block_completion_probability,
    block_loads,
    block_raw_runtime,
    expected_from_cdf,
    tandon_completion_probability,
    tandon_raw_runtime,
)
from .stragglers import CycleTimeDistribution


@dataclass(frozen=True)
class Block:
    """Coordinates [start, stop) coded for `stragglers` stragglers; cumulative load `load` (S_n)."""

    stragglers: int
    start: int
    stop: int
    load: int


@dataclass(frozen=True)
class BlockPlan:
    """x[n] coordinates tolerate n stragglers, n = 0..N-1; sum(x) = L (integers)."""

    scheme: str
    x: tuple[int, ...]

    @property
    def n_workers(self) -> int:
        return len(self.x)

    @property
    def coordinates(self) -> int:
        return int(sum(self.x))

    def blocks(self) -> list[Block]:
        """The non-empty blocks in processing order (increasing redundancy)."""
        ends = np.cumsum(self.x)
        loads = block_loads(np.array(self.x))
        return [
            Block(n, int(ends[n] - self.x[n]), int(ends[n]), int(loads[n]))
            for n in range(self.n_workers)
            if self.x[n] > 0
        ]

    def raw_runtime(self, cycle_times: np.ndarray) -> np.ndarray:
        """R for each realisation, shape (K,); cycle_times has shape (K, N)."""
        return block_raw_runtime(np.array(self.x), cycle_times)

    def completion_probability(self, raw_deadline: float, dist: CycleTimeDistribution) -> float:
        """P(R <= raw_deadline), exact."""
        return block_completion_probability(np.array(self.x), raw_deadline, dist)

    def exact_expected_raw_runtime(self, dist: CycleTimeDistribution) -> float:
        """E[R] = integral of 1 - P(R <= r), exact up to quadrature (~1e-10 relative)."""
        loads = block_loads(np.array(self.x))[np.array(self.x) > 0]
        return expected_from_cdf(lambda r: self.completion_probability(r, dist), dist, loads)

    def describe(self) -> str:
        return "x = [" + ", ".join(str(v) for v in self.x) + "]"


@dataclass(frozen=True)
class TandonPlan:
    """Tandon et al.'s partial-straggler scheme with s stragglers and slowness bound alpha (§7.2)."""

    scheme: str
    n_workers: int
    coordinates: int
    stragglers: int
    alpha: float

    def raw_runtime(self, cycle_times: np.ndarray) -> np.ndarray:
        return tandon_raw_runtime(self.stragglers, self.alpha, self.coordinates, cycle_times)

    def completion_probability(self, raw_deadline: float, dist: CycleTimeDistribution) -> float:
        return tandon_completion_probability(
            self.stragglers, self.alpha, self.coordinates, raw_deadline, dist, self.n_workers
        )

    def exact_expected_raw_runtime(self, dist: CycleTimeDistribution) -> float:
        s, a = self.stragglers, self.alpha
        factor = self.coordinates * a * (s + 1) / (s + a)  # R = factor * max(T_(N-s), T_(N)/a)
        return expected_from_cdf(
            lambda r: self.completion_probability(r, dist), dist, np.array([factor, factor / a])
        )

    def block_partition(self) -> tuple[int, ...]:
        """The x of the same coordinates all coded for s stragglers (for display only)."""
        x = [0] * self.n_workers
        x[self.stragglers] = self.coordinates
        return tuple(x)

    def describe(self) -> str:
        return (
            f"s = {self.stragglers}, alpha = {self.alpha:g} (every coordinate, partial stragglers)"
        )


Plan = BlockPlan | TandonPlan
