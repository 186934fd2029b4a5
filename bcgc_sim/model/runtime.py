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

from ..errors import UserError
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
    return sorted_block_raw_runtime(x, np.sort(np.atleast_2d(cycle_times), axis=1))


def sorted_block_raw_runtime(x: np.ndarray, ascending: np.ndarray) -> np.ndarray:
    """`block_raw_runtime` from cycle times already sorted along each row, shape (K, N)."""
    x = np.asarray(x, dtype=float)
    used = np.flatnonzero(x > 0)
    column = ascending.shape[1] - 1 - used  # T_(N-n) of block n
    return np.max(ascending[:, column] * block_loads(x)[used], axis=1)


def tandon_raw_runtime(
    stragglers: int, alpha: float, coordinates: int, cycle_times: np.ndarray
) -> np.ndarray:
    """R = L alpha (s+1)/(s+alpha) max(T_(N-s), T_(N)/alpha), shape (K,) (spec §7.2)."""
    return sorted_tandon_raw_runtime(
        stragglers, alpha, coordinates, np.sort(np.atleast_2d(cycle_times), axis=1)
    )


def sorted_tandon_raw_runtime(
    stragglers: int, alpha: float, coordinates: int, ascending: np.ndarray
) -> np.ndarray:
    """`tandon_raw_runtime` from cycle times already sorted along each row, shape (K, N)."""
    t = ascending
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


MAX_EXACT_WORKERS = 1500  # the completion DP's scaled states stay inside float64 up to here


def block_completion_probability(
    x: np.ndarray, raw_deadline: np.ndarray | float, dist: CycleTimeDistribution
) -> np.ndarray | float:
    """P(R(x, T) <= r) exactly (spec §6), for raw deadlines r = t / (M C / N): a float for a
    float r, an array of r's shape for an array (every r in one pass, O(N^2) per r and block).

    R <= r  iff  for every non-empty block n at least N - n workers have T <= c_n = r / S_n.
    The thresholds c_n fall as n grows; workers are placed interval by interval from the
    smallest threshold up, f[j] holding the weight of "j workers so far" (an interval of mass q
    takes f to f'[i] = sum_j C(N-j, i-j) q^(i-j) f[j]), and counts that already break a
    constraint are dropped; the N - j workers never placed lie above every threshold (or failed,
    T = inf), so failure mixtures are handled too. In the scaled states
    h[j] = f[j] (N-j)! rho^j (rho = N/e keeps them within e^(N/e) of each other) an interval is
    a convolution with (q rho)^k / k!; each row is renormalised after every interval, its
    logarithmic scale kept apart, so nothing overflows for N <= MAX_EXACT_WORKERS.
    """
    x = np.asarray(x, dtype=float)
    r = np.asarray(raw_deadline, dtype=float)
    used = np.flatnonzero(x > 0)
    n_workers = x.size
    if n_workers > MAX_EXACT_WORKERS:
        raise UserError(
            f"the exact completion probability is computed for N <= {MAX_EXACT_WORKERS} workers, "
            f"not N = {n_workers}: give no deadline and set predict.exact = false"
        )
    out = np.zeros(r.size)
    valid = np.flatnonzero(r.ravel() > 0)
    if used.size and valid.size:
        out[valid] = _completion_dp(block_loads(x)[used], used, r.ravel()[valid], dist, n_workers)
    return float(out[0]) if r.ndim == 0 else out.reshape(r.shape)


def _completion_dp(
    loads: np.ndarray, used: np.ndarray, raw: np.ndarray, dist: CycleTimeDistribution, n: int
) -> np.ndarray:
    """The DP of `block_completion_probability` for positive r, shape (R,); `loads` = S_n of
    the non-empty blocks `used`."""
    from scipy import special

    rho = n / math.e
    states = np.arange(n + 1)
    log_weight = special.gammaln(n - states + 1.0) + states * math.log(rho)  # log of h[j] / f[j]
    cdf = np.asarray(dist.cdf(raw[:, None] / loads[None, :]), dtype=float)  # (R, U), falling
    need = n - used  # workers needed at or below each threshold
    log_factorial = special.gammaln(states + 1.0)
    h = np.zeros((raw.size, n + 1))
    h[:, 0] = 1.0
    log_scale = np.full(raw.size, log_weight[0])  # f[j] = h[j] exp(log_scale - log_weight[j])
    previous = np.zeros(raw.size)
    low = 0  # h is zero below `low`
    for block in range(used.size - 1, -1, -1):  # smallest threshold first
        q = np.maximum(cdf[:, block] - previous, 0.0)
        previous = np.maximum(previous, cdf[:, block])
        width = n + 1 - low
        with np.errstate(divide="ignore", invalid="ignore"):  # q = 0: kernel (1, 0, 0, ...)
            power = np.where(states[:width] > 0, states[:width] * np.log(q * rho)[:, None], 0.0)
        kernel = np.exp(power - log_factorial[:width])
        for row in np.flatnonzero(q > 0):
            h[row, low:] = np.convolve(h[row, low:], kernel[row])[:width]
        low = int(need[block])
        h[:, :low] = 0.0
        peak = h[:, low:].max(axis=1)
        alive = peak > 0
        h[alive] /= peak[alive, None]
        log_scale[alive] += np.log(peak[alive])
    above = np.maximum(1.0 - previous, 0.0)  # P(T > largest threshold), failures included
    missing = n - states
    with np.errstate(divide="ignore", invalid="ignore"):
        log_above = np.where(missing[None, :] > 0, missing * np.log(above)[:, None], 0.0)
        terms = np.log(h) - log_weight + log_above
    total = special.logsumexp(terms, axis=1) + log_scale
    return np.where(np.isfinite(total), np.exp(np.minimum(total, 0.0)), 0.0)


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
    raw_deadline: np.ndarray | float,
    dist: CycleTimeDistribution,
    n_workers: int,
) -> np.ndarray | float:
    """P(R_Tandon <= r) exactly: at least N - s workers have T <= b and all have T <= alpha b.

    Here b = r / (L alpha (s+1)/(s+alpha)); the sum runs over i = N-s..N workers below b
    (binomial terms), the rest in (b, alpha b]. A float for a float r, else an array.
    """
    from scipy import special

    r = np.asarray(raw_deadline, dtype=float)
    b = r.reshape(-1, 1) / (coordinates * alpha * (stragglers + 1) / (stragglers + alpha))
    low = np.asarray(dist.cdf(b), dtype=float)
    high = np.asarray(dist.cdf(alpha * b), dtype=float)
    i = np.arange(n_workers - stragglers, n_workers + 1)
    log_terms = (
        _log_choose(n_workers, i) + special.xlogy(i, low) + special.xlogy(n_workers - i, high - low)
    )
    out = np.sum(np.exp(log_terms), axis=1)
    return float(out[0]) if r.ndim == 0 else out.reshape(r.shape)


def expected_from_cdf(cdf, dist: CycleTimeDistribution, scales: np.ndarray) -> float:
    """E[R] = integral_0^inf (1 - P(R <= r)) dr, where R = max of terms scale_i * (a cycle time).

    `cdf` is P(R <= r) for an array of r (one call per round of the quadrature). P can only
    have a corner (continuous laws) or a jump (discrete laws) at scale_i * c for the law's
    corner points c. For a discrete law P is constant between jumps and the integral is an
    exact sum. Otherwise it is split at the corners and into geometric panels around the median
    (each a factor of 2 wide) up to an r where r (1 - P) < 1e-13 x the median (a tail falling
    faster than 1 / r leaves less than that beyond), and integrated to ~1e-11 by adaptive
    Gauss-Legendre (bcgc_sim.model.quadrature). Infinite when workers can fail.
    """
    from .quadrature import integrate_panels

    if dist.failure_probability > 0:
        return math.inf

    def probability(r: float) -> float:
        return float(np.asarray(cdf(np.array([r])), dtype=float)[0])

    corners = np.unique(np.outer(np.asarray(scales, dtype=float), dist.corners()).ravel())
    if dist.atoms is not None:
        jumps = corners
        below = 1.0 - np.asarray(cdf(jumps[:-1]), dtype=float)
        return float(jumps[0] + np.sum(below * np.diff(jumps)))
    lower = float(dist.lower_bound * np.max(scales))  # R >= lower surely
    median = lower * 2 if lower > 0 else 1.0
    while probability(median) < 0.5:
        median *= 2
    while median / 2 > lower and probability(median / 2) >= 0.5:
        median /= 2
    edges = [median]
    while edges[0] > lower:  # below the median, down to where P vanishes
        a = max(edges[0] / 2, lower)
        edges.insert(0, a)
        if probability(a) <= 0.0:
            break
    start = edges[0]  # 1 - P = 1 on [lower, start]
    tails = [1.0 - probability(edges[-1])]
    while tails[-1] * edges[-1] >= 1e-13 * median and tails[-1] >= 1e-11:
        edges.append(2 * edges[-1])  # above the median, until the tail is negligible or
        tails.append(1.0 - probability(edges[-1]))  # too close to rounding to be followed
    inside = corners[(corners > start) & (corners < edges[-1])]
    edges = np.unique(np.concatenate([edges, inside]))
    total = integrate_panels(lambda r: 1.0 - np.asarray(cdf(r), dtype=float), edges)
    return float(lower + (start - lower) + total + _tail_beyond(float(edges[-1]), tails))


def _tail_beyond(b: float, tails: list[float]) -> float:
    """integral_b^inf (1 - P(r)) dr from the last two doublings, 1 - P(b / 2) and 1 - P(b):
    a tail (b / r)^beta gives (1 - P(b)) b / (beta - 1), which is negligible for the fast tails
    of shifted exponentials and right for power laws (Pareto); inf if it is not integrable."""
    last = tails[-1]
    if last <= 0 or len(tails) < 2 or tails[-2] <= last:
        return 0.0
    beta = math.log2(tails[-2] / last)
    return last * b / (beta - 1.0) if beta > 1.0 else math.inf
