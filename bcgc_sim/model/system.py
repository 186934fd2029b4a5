"""The system being modelled: N workers, L coordinates, M samples, C cycles, cycle-time law."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .runtime import runtime_scale
from .stragglers import CycleTimeDistribution

MAX_COUNT = 2**53  # N, L, M: counts that floats (the model's arithmetic) still hold exactly


@dataclass(frozen=True)
class SystemModel:
    """spec/bcgc.md §1: N workers, L gradient coordinates, M training samples, C cycles per
    partial derivative per sample, and the i.i.d. cycle-time distribution of each worker."""

    n_workers: int
    coordinates: int
    samples: int
    cycles: float
    distribution: CycleTimeDistribution

    def __post_init__(self) -> None:
        if not 2 <= self.n_workers <= MAX_COUNT:
            raise UserError(f"cluster.workers (N) must be in 2..2**53, got {self.n_workers}")
        if not 1 <= self.coordinates <= MAX_COUNT:
            raise UserError(f"model.coordinates (L) must be in 1..2**53, got {self.coordinates}")
        if not 1 <= self.samples <= MAX_COUNT:
            raise UserError(f"model.samples (M) must be in 1..2**53, got {self.samples}")
        if not self.cycles > 0:
            raise UserError(f"model.cycles (C) must be > 0, got {self.cycles}")

    @property
    def scale(self) -> float:
        """M C / N: model time units per unit of raw runtime R."""
        return runtime_scale(self.samples, self.cycles, self.n_workers)
