"""The system being modelled: N workers, L coordinates, M samples, C cycles, cycle-time law."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .runtime import runtime_scale
from .stragglers import CycleTimeDistribution


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
        if self.n_workers < 2:
            raise UserError(f"cluster.workers (N) must be >= 2, got {self.n_workers}")
        if self.coordinates < 1:
            raise UserError(f"model.coordinates (L) must be >= 1, got {self.coordinates}")
        if self.samples < 1:
            raise UserError(f"model.samples (M) must be >= 1, got {self.samples}")
        if not self.cycles > 0:
            raise UserError(f"model.cycles (C) must be > 0, got {self.cycles}")

    @property
    def scale(self) -> float:
        """M C / N: model time units per unit of raw runtime R."""
        return runtime_scale(self.samples, self.cycles, self.n_workers)
