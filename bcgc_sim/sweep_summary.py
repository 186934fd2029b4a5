"""A sweep folder (`bcgc sweep`) read back with its uncertainty, for the sweep figure.

Per swept value and scheme: the measured mean runtime per iteration and the mean of the
predictions for the same cycle times, each with its 95% Student-t interval over the iterations,
and the model's E[runtime]. Per swept value: the reduction of bcgc-opt's mean runtime over the
best baseline, measured and predicted, with 95% intervals (paired over iterations: every scheme
of a point runs on the same cycle times; bcgc_sim.intervals.reduction_interval).

Folder layout (written by master/sweep.py): sweep.json (parameter, values, config),
sweep.csv (one row per point and scheme), point-<index>/ (each point's run folder).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .intervals import mean_interval, reduction_interval
from .schemes import APPROXIMATE_SCHEMES
from .validation import read_folder

BCGC_SCHEMES = ("bcgc-opt", "bcgc-t", "bcgc-f")  # not baselines of the reduction


def point_folder(sweep: Path, index: int) -> Path:
    """The run folder of the sweep's point `index` (0-based)."""
    return Path(sweep) / f"point-{index}"


def best_baseline(means: dict[str, float]) -> str | None:
    """The scheme with the least finite mean among the baselines of bcgc-opt's reduction: not a
    BCGC scheme, not one that decodes only an approximate gradient. None if there is none."""
    baselines = {
        name: mean
        for name, mean in means.items()
        if name not in BCGC_SCHEMES and name not in APPROXIMATE_SCHEMES and math.isfinite(mean)
    }
    return min(baselines, key=baselines.__getitem__) if baselines else None


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% interval; lo = hi = nan when there are fewer than two samples."""

    mean: float
    lo: float
    hi: float


@dataclass(frozen=True)
class SweepCell:
    """One scheme at one swept value. Seconds."""

    value: int | float | str  # the swept value as given
    scheme: str
    iterations: int
    measured: Estimate  # mean measured runtime per iteration
    predicted: Estimate  # mean prediction for the same cycle times (nan in natural mode)
    model_mean_s: float  # the model's E[runtime]


@dataclass(frozen=True)
class SweepReduction:
    """Reduction (%) of bcgc-opt's mean runtime over the best baseline at one swept value, of
    the measured and of the predicted runtimes (each column picks its own best baseline, as the
    sweep's table does)."""

    value: int | float | str
    measured: Estimate
    predicted: Estimate  # nan in natural mode (nothing predicted)
    baselines: tuple[str | None, str | None]  # (measured, predicted)


@dataclass(frozen=True)
class SweepSummary:
    parameter: str  # the swept config key
    seed: int
    workers: int  # N of the first point (of every point unless N is swept)
    cells: tuple[SweepCell, ...]
    reductions: tuple[SweepReduction, ...]

    @property
    def values(self) -> list:
        return list(dict.fromkeys(c.value for c in self.cells))

    @property
    def schemes(self) -> list[str]:
        return list(dict.fromkeys(c.scheme for c in self.cells))

    @property
    def iterations(self) -> tuple[int, int]:
        """The fewest and the most iterations of any cell."""
        counts = [c.iterations for c in self.cells]
        return min(counts), max(counts)


def load_sweep(folder: str | Path) -> SweepSummary:
    """The summary of the finished points of the sweep in `folder`. Raises UserError."""
    folder = Path(folder)
    meta, rows = read_folder(folder, "sweep.json", "sweep.csv", "sweep")
    try:
        return _summary(folder, meta, rows)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UserError(
            f"{folder} does not hold a sweep this version reads ({type(exc).__name__}: {exc})"
        ) from None


def _summary(folder: Path, meta: dict, rows: list[dict]) -> SweepSummary:
    values = meta["values"]
    cells, reductions = [], []
    for point in dict.fromkeys(int(r["point"]) for r in rows):
        samples = _point_samples(point_folder(folder, point))
        mine = [r for r in rows if int(r["point"]) == point]
        cells += [_cell(values[point], r, *samples[r["scheme"]]) for r in mine]
        reduction = _reduction(values[point], samples)
        if reduction is not None:
            reductions.append(reduction)
    config = meta["config"]
    return SweepSummary(
        meta["parameter"],
        int(config["seed"]),
        int(config["cluster"]["workers"]),
        tuple(cells),
        tuple(reductions),
    )


def _point_samples(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """scheme -> (measured, predicted) runtimes (s) per iteration, in iteration order."""
    try:
        with open(run / "iterations.csv") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise UserError(f"cannot read the sweep point {run}: {exc}") from None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        mine = sorted((r for r in rows if r["scheme"] == scheme), key=lambda r: int(r["iteration"]))
        out[scheme] = (
            np.array([float(r["measured_s"]) for r in mine]),
            np.array([float(r["predicted_s"]) for r in mine]),
        )
    return out


def _estimate(values: np.ndarray) -> Estimate:
    return Estimate(float(np.mean(values)), *mean_interval(values))


def _cell(value, row: dict, measured: np.ndarray, predicted: np.ndarray) -> SweepCell:
    return SweepCell(
        value,
        row["scheme"],
        int(measured.size),
        _estimate(measured),
        _estimate(predicted),
        float(row["model_mean_s"]),
    )


def _reduction(value, samples: dict[str, tuple[np.ndarray, np.ndarray]]) -> SweepReduction | None:
    if "bcgc-opt" not in samples:
        return None
    estimates, baselines = [], []
    for column in (0, 1):  # measured, predicted
        baseline = best_baseline({name: float(s[column].mean()) for name, s in samples.items()})
        baselines.append(baseline)
        if baseline is None:
            estimates.append(Estimate(math.nan, math.nan, math.nan))
            continue
        ours, theirs = samples["bcgc-opt"][column], samples[baseline][column]
        n = min(ours.size, theirs.size)  # pairs: iteration i of both
        ours, theirs = ours[:n], theirs[:n]
        mean = 100.0 * (1.0 - float(ours.mean() / theirs.mean()))
        estimates.append(Estimate(mean, *reduction_interval(ours, theirs)))
    if baselines[0] is None:
        return None
    return SweepReduction(value, *estimates, baselines=(baselines[0], baselines[1]))
