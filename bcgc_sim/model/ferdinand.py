"""Ferdinand & Draper's hierarchical coded computation as a BCGC baseline (spec/bcgc.md §7.3).

r layers are processed in sequence; layer j (1-based) is coded for s_j stragglers. The LP
    max u  s.t.  u <= (s_j + 1)/j,  sum_j s_j = r N - L,  s_1 <= ... <= s_r,  s_min <= s_j <= N-1
equalises the layers' failure exponents. For r = L/2 it is degenerate: a whole face of s attains
u* = N / r. **Our rule (spec §10.10): the analytic centre of that optimal face**, computed by a
damped Newton method whose Hessian is tridiagonal (a Jacobi-scaled banded Cholesky, O(r) per
step), then s_j rounded to the
nearest integer. Layers map to BCGC blocks as x_n = sum of the sizes of the layers with s_j = n.
The authors' code maps layers in two ways (spec §10.11), chosen by `part`:
  "expectation"  equal layers of L / r coordinates, s_1 >= 1 (the E-part figures);
  "cdf"          layer j holds N - s_j coordinates (an (N, N - s_j) code), s_1 >= 0 (the CDF
                 figures); the s_j are then rounded so that their sum, hence sum x = L, is kept.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solveh_banded


def optimal_exponent(n_workers: int, layers: int, total: float, s_min: float) -> float:
    """u* = the largest u with a feasible s (bisection; the LP value)."""

    def min_sum(u: float) -> float:
        return float(np.sum(np.maximum(np.arange(1, layers + 1) * u - 1.0, s_min)))

    hi = n_workers / layers  # u <= (s_r + 1)/r <= N/r
    if min_sum(hi) <= total:
        return hi
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if min_sum(mid) <= total else (lo, mid)
    return lo


def analytic_centre(lower: np.ndarray, top: float, total: float) -> np.ndarray:
    """Analytic centre of {s : s >= lower, s_1 <= ... <= s_m <= top, sum s = total}.

    Minimises -sum log(s_j - lower_j) - sum log(s_{j+1} - s_j) (s_{m+1} = top) under the sum
    constraint by Newton's method with a feasibility-keeping backtracking line search.
    """
    m = lower.size
    low_sum, high_sum = float(lower.sum()), m * top
    if total <= low_sum + 1e-9 * max(1.0, abs(low_sum)):
        return lower.copy()
    if total >= high_sum - 1e-9 * max(1.0, high_sum):
        return np.full(m, top)
    # strictly feasible start: s_j = top - w_j beta_j with w_j = top - lower_j (non-increasing)
    # and beta_j in (0, 1) strictly decreasing, so every difference is at least
    # w_{j+1} (beta_j - beta_{j+1}) > 0 and about u where the lower bound rises
    width = top - lower
    j = np.arange(1, m + 1) / (m + 1)
    deficit = m * top - total  # sum_j w_j beta_j must equal this
    falling = 1.0 - j / 2  # in (1/2, 1)
    a = deficit / float(width @ falling)
    if a <= 0.9:
        beta = a * falling
    else:  # close to the lower bounds everywhere
        rising = 0.5 + j / 2
        beta = 1.0 - (float(width.sum()) - deficit) / float(width @ rising) * rising
    s = top - width * beta

    def barrier(v: np.ndarray) -> float:
        e, d = v - lower, np.diff(np.append(v, top))
        if np.any(e <= 0) or np.any(d <= 0):
            return np.inf
        return float(-np.log(e).sum() - np.log(d).sum())

    value = barrier(s)
    for _ in range(200):
        e, d = s - lower, np.diff(np.append(s, top))
        grad = -1.0 / e + 1.0 / d
        grad[1:] -= 1.0 / d[:-1]
        inv_d2 = 1.0 / d**2
        diag = 1.0 / e**2 + inv_d2
        diag[1:] += inv_d2[:-1]
        # Jacobi-scaled Cholesky: the entries span many decades near the thin end of the face
        scale = 1.0 / np.sqrt(diag)
        bands = np.zeros((2, m))
        bands[0, 1:] = -inv_d2[:-1] * scale[1:] * scale[:-1]
        bands[1] = 1.0
        solved = solveh_banded(bands, np.column_stack([grad * scale, scale]))
        v, w = solved[:, 0] * scale, solved[:, 1] * scale
        step = -(v - w * v.sum() / w.sum())  # Newton step within sum(step) = 0
        decrement = float(-grad @ step)
        if not decrement > -1e-9:
            raise ArithmeticError("analytic centre: the Newton system lost positive definiteness")
        if decrement < 1e-12:
            break
        alpha = 1.0
        while alpha > 1e-12:
            trial = barrier(s + alpha * step)
            if trial <= value - 0.25 * alpha * decrement:
                break
            alpha /= 2
        s, value = s + alpha * step, barrier(s + alpha * step)
    return s


def ferdinand_partition(
    n_workers: int,
    coordinates: int,
    layers: int,
    s_min: int | None = None,
    part: str = "expectation",
) -> np.ndarray:
    """Block partition x (length N, integers summing to L) of the r-layer Ferdinand-Draper code.

    `part` picks the layer-to-block mapping ("expectation" or "cdf", see the module docstring);
    `s_min` defaults to 1 for "expectation" and 0 for "cdf".
    """
    if part not in ("expectation", "cdf"):
        raise ValueError(f"part must be 'expectation' or 'cdf', got {part!r}")
    if s_min is None:
        s_min = 1 if part == "expectation" else 0
    n, r = n_workers, layers
    sizes = np.array([len(a) for a in np.array_split(np.arange(coordinates), r)])
    total = float(r * n - coordinates)
    u = optimal_exponent(n, r, total, s_min)
    lower = np.maximum(np.arange(1, r + 1) * u - 1.0, s_min)
    forced = lower >= n - 1 - 1e-9  # layers that must carry full redundancy
    s = np.full(r, float(n - 1))
    free = np.flatnonzero(~forced)
    if free.size:
        s[free] = analytic_centre(lower[free], n - 1.0, total - (n - 1.0) * forced.sum())
    if part == "cdf":  # layer j holds N - s_j coordinates: keep sum s = r N - L when rounding
        levels = _round_keeping_sum(np.clip(s, 0, n - 1), int(total))
        return np.bincount(levels, weights=n - levels, minlength=n).astype(np.int64)
    levels = np.clip(np.rint(s), 0, n - 1).astype(int)
    return np.bincount(levels, weights=sizes, minlength=n).astype(np.int64)


def _round_keeping_sum(values: np.ndarray, total: int) -> np.ndarray:
    """Integers within one of `values` summing to `total` (largest remainders round up)."""
    out = np.floor(values + 1e-9).astype(int)
    missing = total - int(out.sum())
    if missing > 0:
        up = np.argsort(-(values - out), kind="stable")[:missing]
        out[up] += 1
    elif missing < 0:
        down = np.argsort(values - out, kind="stable")[:-missing]
        out[down] -= 1
    return out
