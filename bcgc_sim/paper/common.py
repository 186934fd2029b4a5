"""What both parts of the papers' reproduction share (spec/bcgc.md §8).

A `Point` is one parameter point of the authors' tables, a `Sweep` one table (the varied
parameter, its points and the authors' row at each), a `PointResult` our plans and values at a
point, a `Check` one PASS/FAIL line, and a `Part` what one part hands the driver
(scripts/reproduce_paper.py): its checks, its summary.json entries and its figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.plans import Plan
from ..model.runtime import Estimate
from ..model.stragglers import ShiftedExponential
from ..model.system import SystemModel
from ..schemes import SchemeOptions, build_plan

SAMPLES_M = 50  # data-set size M of the figures (spec §8)
CYCLES_C = 1.0  # cycles C per partial derivative per sample (spec §8)


@dataclass(frozen=True)
class Point:
    """N, L, mu = 10^log10_rate and t0 of one point (M = 50, C = 1); for the completion
    probability also the deadline t = 10^log10_deadline in model time units."""

    n_workers: int
    coordinates: int
    log10_rate: float
    shift: float
    log10_deadline: float | None = None

    @property
    def rate(self) -> float:
        return 10.0**self.log10_rate

    @property
    def deadline(self) -> float:
        """t in model time units."""
        if self.log10_deadline is None:
            raise ValueError("this point has no deadline")
        return 10.0**self.log10_deadline

    def model(self) -> SystemModel:
        law = ShiftedExponential(self.rate, self.shift)
        return SystemModel(self.n_workers, self.coordinates, SAMPLES_M, CYCLES_C, law)


@dataclass(frozen=True)
class Sweep:
    """One of the authors' tables: the varied parameter, its points and the authors' rows."""

    key: str
    title: str
    labels: tuple[str, ...]
    axis: tuple[float, ...]
    points: tuple[Point, ...]
    paper: tuple[tuple[float, ...], ...]
    figure: str = ""  # file name of the table's own figure, if it has one

    @classmethod
    def over(
        cls,
        key: str,
        title: str,
        keys: Sequence,
        label: Callable[[Any], str],
        axis: Callable[[Any], float],
        point: Callable[[Any], Point],
        table: dict,
        figure: str = "",
    ) -> Sweep:
        """The table over `keys`: per key its label, axis value, point and the authors' row."""
        return cls(
            key,
            title,
            tuple(label(k) for k in keys),
            tuple(axis(k) for k in keys),
            tuple(point(k) for k in keys),
            tuple(table[k] for k in keys),
            figure,
        )

    def rows(self, columns: Sequence[str]) -> Iterator[tuple[str, Point, dict[str, float]]]:
        """(label, point, the authors' value of each of `columns`) at every point."""
        for label, point, row in zip(self.labels, self.points, self.paper, strict=True):
            yield label, point, dict(zip(columns, row, strict=True))


def table_rows(
    sweeps: Iterable[Sweep], columns: Sequence[str]
) -> list[tuple[Sweep, str, Point, dict[str, float]]]:
    """(sweep, label, point, the authors' values) for every point of every table."""
    return [(sweep, *row) for sweep in sweeps for row in sweep.rows(columns)]


def keep(keys: list, quick: bool) -> list:
    """--quick keeps the first two points of a table."""
    return keys[:2] if quick else keys


@dataclass
class PointResult:
    """Our plans at one point, with their planning times (s) and values: R on the evaluation
    draws (`estimates`, raw units) or the exact P(tau <= t) (`probability`)."""

    point: Point
    plans: dict[str, Plan] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    probability: dict[str, float] = field(default_factory=dict)
    n_samples: int = 0

    def plan(self, label: str, scheme: str, model: SystemModel, options: SchemeOptions) -> Plan:
        """Plan `scheme` under `label`, timing it."""
        start = time.perf_counter()
        plan = build_plan(scheme, model, options)
        self.seconds[label] = time.perf_counter() - start
        self.plans[label] = plan
        return plan


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    required: bool
    detail: str = ""


def largest_difference(differences: Iterable[tuple[float, str]]) -> tuple[float, str]:
    """The (difference, where) of largest magnitude, the last one on ties; (0.0, "") if none."""
    worst, where = 0.0, ""
    for difference, at in differences:
        if abs(difference) >= abs(worst):
            worst, where = difference, at
    return worst, where


@dataclass
class Part:
    """What one part of the reproduction hands the driver."""

    checks: list[Check]
    summary: dict  # its entries of summary.json
    figures: list[Path]
    rules: list[str] = field(default_factory=list)  # printed above the checks
    planning: dict[str, float] = field(default_factory=dict)  # seconds, for the closing line
