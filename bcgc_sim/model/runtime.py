"""Runtime of a plan: tau(x, T), its expectation and its distribution (spec/bcgc.md §3, §6, §7.2).

Everything here is in **raw units** R = tau / (M C / N), as in the authors' tables (spec §8):
the factor M C / N (cycles per sample per coordinate, times samples per worker) is applied by the
caller with `runtime_scale`. T has shape (K, N): K realisations of the N workers' cycle times.

scipy is imported inside the functions that need it: worker processes load this module (for
the plan layout and their cycle-time stream) but never call them, and importing scipy would
add about 0.5 s to every worker's start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .stragglers import CycleTimeDistribution


def runtime_scale(samples: int, cycles: float, n_workers: int) -> float:
    """M C / N: model time per unit of raw runtime R (tau = scale * R)."""
    return samples * cycles / n_workers


def block_loads(x: np.ndarray) -> np.ndarray:
    """S_n(x) = sum_{i<=n} (i+1) x_i, n = 0..N-1: cumulative coordinate-cycles after block n (eq. 5)."""
    x = np.asarray(x, dtype=float)
    return np.cumsum(np.arange(1, x.size + 1) * x)


def block_raw_runtime(x: np.ndarray, cycle_times: np.ndarray) -> np.ndarray:
    """R = max_n T_(N-n) S_n(x) over the non-empty blocks n, shape (K,) (spec eq. 5).

    Empty blocks are dominated by the previous non-empty one (spec §3), so skipping them is exact
    and keeps 0 * inf (a failed worker, an empty block) out of the maximum.
    """
    x = np.asarray(x, dtype=float)
    t = np.atleast_2d(cycle_times)
    descending = -np.sort(-t, axis=1)  # column n holds T_(N-n)
    used = np.flatnonzero(x > 0)
    return np.max(descending[:, used] * block_loads(x)[used], axis=1)


def tandon_raw_runtime(
    stragglers: int, alpha: float, coordinates: int, cycle_times: np.ndarray
) -> np.ndarray:
    """R = L alpha (s+1)/(s+alpha) max(T_(N-s), T_(N)/alpha), shape (K,) (spec §7.2)."""
    t = np.sort(np.atleast_2d(cycle_times), axis=1)
    n = t.shape[1]
    factor = coordinates * alpha * (stragglers + 1) / (stragglers + alpha)
    return factor * np.maximum(t[:, n - 1 - stragglers], t[:, n - 1] / alpha)


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo mean with its standard error (same unit as the samples)."""

    mean: float
    stderr: float

    @classmethod
    def of(cls, values: np.ndarray) -> Estimate:
        values = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(values)):
            return cls(math.inf, math.nan)
        return cls(float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size)))

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.mean * factor, self.stderr * factor)


def block_completion_probability(
    x: np.ndarray, raw_deadline: float, dist: CycleTimeDistribution
) -> float:
    """P(R(x, T) <= r) exactly, in O(N^3) (spec §6), for a raw deadline r = t / (M C / N).

    R <= r  iff  for every non-empty block n at least N - n workers have T <= c_n = r / S_n.
    The thresholds c_n fall as n grows; workers are placed interval by interval from the
    smallest threshold up, f[j] holding the probability of "j workers so far" (one matrix
    product per interval), and counts that already break a constraint are dropped. Failed
    workers (T = inf) exceed every threshold, so failure mixtures are handled too.
    """
    x = np.asarray(x, dtype=float)
    n_workers = x.size
    used = np.flatnonzero(x > 0)
    if used.size == 0 or raw_deadline <= 0:
        return 0.0
    thresholds = raw_deadline / block_loads(x)[used]  # non-increasing
    need = n_workers - used  # workers needed at or below each threshold
    cdf = np.asarray(dist.cdf(thresholds), dtype=float)
    placed = np.arange(n_workers + 1)
    extra = placed[:, None] - placed[None, :]  # k = i - j workers added to j placed
    log_ways = np.where(
        extra >= 0, _log_choose(n_workers - placed[None, :], np.maximum(extra, 0)), -np.inf
    )
    f = np.zeros(n_workers + 1)
    f[0] = 1.0
    previous = 0.0
    for i in range(used.size - 1, -1, -1):  # smallest threshold first
        q = max(cdf[i] - previous, 0.0)
        previous = cdf[i]
        if q > 0:
            with np.errstate(invalid="ignore"):
                f = np.exp(log_ways + extra * math.log(q)) @ f
        f[: need[i]] = 0.0
    above = max(1.0 - previous, 0.0)  # P(T > largest threshold), failures included
    return float(np.sum(f * above ** (n_workers - placed)))


def _log_choose(m: np.ndarray | int, k: np.ndarray) -> np.ndarray:
    """log C(m, k), -inf where k > m."""
    from scipy import special

    m = np.asarray(m, dtype=float)
    with np.errstate(invalid="ignore"):
        out = special.gammaln(m + 1) - special.gammaln(k + 1) - special.gammaln(m - k + 1)
    return np.where(k <= m, out, -np.inf)


def tandon_completion_probability(
    stragglers: int,
    alpha: float,
    coordinates: int,
    raw_deadline: float,
    dist: CycleTimeDistribution,
    n_workers: int,
) -> float:
    """P(R_Tandon <= r) exactly: at least N - s workers have T <= b and all have T <= alpha b.

    Here b = r / (L alpha (s+1)/(s+alpha)); the sum runs over i = N-s..N workers below b
    (binomial terms), the rest in (b, alpha b].
    """
    from scipy import special

    b = raw_deadline / (coordinates * alpha * (stragglers + 1) / (stragglers + alpha))
    low, high = float(dist.cdf(b)), float(dist.cdf(alpha * b))
    i = np.arange(n_workers - stragglers, n_workers + 1)
    log_terms = (
        _log_choose(n_workers, i) + special.xlogy(i, low) + special.xlogy(n_workers - i, high - low)
    )
    return float(np.sum(np.exp(log_terms)))


def expected_from_cdf(cdf, dist: CycleTimeDistribution, scales: np.ndarray) -> float:
    """E[R] = integral_0^inf (1 - P(R <= r)) dr, where R = max of terms scale_i * (a cycle time).

    P(R <= r) can only have a corner (continuous laws) or a jump (discrete laws) at
    scale_i * c for the law's corner points c. For a discrete law P is constant between jumps
    and the integral is an exact sum. Otherwise the integral is split at the corners and into
    geometric panels around the median (each a factor of 2 wide), so that narrow and
    heavy-tailed laws alike are integrated to ~1e-10. Infinite when workers can fail.
    """
    from scipy import integrate

    if dist.failure_probability > 0:
        return math.inf
    corners = np.unique(np.outer(np.asarray(scales, dtype=float), dist.corners()).ravel())
    if dist.atoms is not None:
        jumps = corners
        below = np.array([1.0 - cdf(r) for r in jumps[:-1]])
        return float(jumps[0] + np.sum(below * np.diff(jumps)))
    lower = float(dist.lower_bound * np.max(scales))  # R >= lower surely
    median = lower * 2 if lower > 0 else 1.0
    while cdf(median) < 0.5:
        median *= 2
    while median / 2 > lower and cdf(median / 2) >= 0.5:
        median /= 2

    def panel(a: float, b: float) -> float:
        inside = corners[(corners > a) & (corners < b)]
        edges = np.concatenate([[a], inside, [b]])
        return sum(
            integrate.quad(
                lambda r: 1.0 - cdf(r), lo, hi, epsabs=1e-13 * (hi - lo), epsrel=1e-10, limit=100
            )[0]
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        )

    total = 0.0
    b = median
    while b > lower:  # below the median, down to where P vanishes
        a = max(b / 2, lower)
        if cdf(a) <= 0.0:
            total += a - lower + panel(a, b)
            break
        total += panel(a, b)
        b = a
    a = median
    for _ in range(4000):  # above the median, until the tail is negligible
        piece = panel(a, 2 * a)
        total += piece
        a *= 2
        if piece <= 1e-15 * total and 1.0 - cdf(a) < 1e-12:
            break
    return lower + total
