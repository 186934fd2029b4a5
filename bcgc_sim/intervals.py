"""Confidence intervals of the figures and tables: a binomial proportion (Wilson), a mean
(Student t) and the reduction of one paired mean against another (delta method).

All at CONFIDENCE (95%) unless told otherwise; each returns (lo, hi).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def wilson_interval(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: (lo, hi) within [0, 1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a point at
    0 or n successes; its coverage is close to nominal already for small n.
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, trials > 0; got {successes}/{trials}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    shrink = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / shrink
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / shrink
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends at 0 and n successes
    hi = 1.0 if successes == trials else min(1.0, centre + half)
    return lo, hi


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval for the mean of `values`, shape (n,); (nan, nan) for n < 2."""
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 2:
        return math.nan, math.nan
    half = _t(confidence, n) * float(values.std(ddof=1)) / math.sqrt(n)
    centre = float(values.mean())
    return centre - half, centre + half


def reduction_interval(
    ours: np.ndarray, baseline: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval for 100 * (1 - mean(ours) / mean(baseline)) (%) from paired samples, shape (n,)
    each (iteration i of both ran on the same cycle times): the delta method for the ratio of
    means r, whose standard error is sd(ours - r * baseline) / (sqrt(n) * mean(baseline)).
    (nan, nan) for n < 2."""
    ours, baseline = np.asarray(ours, dtype=float), np.asarray(baseline, dtype=float)
    if ours.shape != baseline.shape:
        raise ValueError(f"paired samples need one shape, got {ours.shape} and {baseline.shape}")
    n = ours.size
    if n < 2:
        return math.nan, math.nan
    ratio = float(ours.mean() / baseline.mean())
    spread = float((ours - ratio * baseline).std(ddof=1))
    half = _t(confidence, n) * spread / (math.sqrt(n) * float(baseline.mean()))
    return 100.0 * (1.0 - ratio - half), 100.0 * (1.0 - ratio + half)


def _t(confidence: float, n: int) -> float:
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))
