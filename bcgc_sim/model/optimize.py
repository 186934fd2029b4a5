"""The relaxed optimum of Problem 3, the closed-form optimum for fixed cycle times, and the
rounding to integers (spec/bcgc.md §3, §4, §4.1, §5).

All objectives are raw (R = E[max_n T_(N-n) S_n(x)], no M C / N factor). Cycle-time samples
have shape (K, N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize as sp_optimize
from scipy import sparse

from ..errors import UserError
from .runtime import block_loads


def project_to_simplex(v: np.ndarray, total: float) -> np.ndarray:
    """Euclidean projection of v onto {x >= 0, sum x = total} (spec §4 step 3).

    Exact: x = max(v - nu, 0) with nu from the sorted values (the bisection of the spec converges
    to the same nu).
    """
    v = np.asarray(v, dtype=float)
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - total
    index = np.arange(1, v.size + 1)
    rho = np.flatnonzero(u - cumulative / index > 0)[-1]
    nu = cumulative[rho] / (rho + 1)
    return np.maximum(v - nu, 0.0)


def subgradient(x: np.ndarray, sorted_desc: np.ndarray) -> np.ndarray:
    """Mean subgradient of R(x, T) over samples, shape (N,) (spec §4 step 2b, c = 1).

    `sorted_desc` has shape (K, N), column n holding T_(N-n).
    """
    terms = sorted_desc * block_loads(x)
    active = np.argmax(terms, axis=1)  # n*_j
    weight = sorted_desc[np.arange(sorted_desc.shape[0]), active]
    n = x.size
    # h_i = T_(N-n*) (i+1) 1[i <= n*]: accumulate weights at n*, then a reverse cumulative sum
    per_active = np.bincount(active, weights=weight, minlength=n)
    return np.cumsum(per_active[::-1])[::-1] * np.arange(1, n + 1) / sorted_desc.shape[0]


@dataclass(frozen=True)
class SubgradientSettings:
    """Stochastic projected subgradient (spec §4): ours by default, the authors' with `paper()`.

    The authors step by 1/k on the raw objective and return the last iterate (R = 2.85e7 at the
    paper point). Ours is scale-free: step_k = step_scale * L / (k * |h_1|), with h_1 the first
    mean subgradient, and returns the average of the iterates after `averaging` of the run;
    it reaches the sample-average LP's value (2.82e7) in about 0.3 s (scripts/bench_optimizer.py).
    """

    iterations: int = 300
    batch: int = 4_000
    step_scale: float = 10.0
    normalized: bool = True
    averaging: float = 0.5

    @classmethod
    def paper(cls) -> SubgradientSettings:
        return cls(iterations=150, batch=10_000, step_scale=1.0, normalized=False, averaging=1.0)


def stochastic_subgradient(
    start: np.ndarray, total: float, draw, settings: SubgradientSettings
) -> np.ndarray:
    """Minimise E[R(x, T)] over {x >= 0, sum x = total} from `start`, shape (N,).

    `draw(k)` returns the k-th fresh batch of cycle times, shape (batch, N), k = 1, 2, ...
    """
    x = project_to_simplex(start, total)
    average, count = np.zeros_like(x), 0
    first_averaged = int(settings.iterations * settings.averaging)
    step = settings.step_scale
    for k in range(1, settings.iterations + 1):
        h = subgradient(x, -np.sort(-draw(k), axis=1))
        if k == 1 and settings.normalized:
            step = settings.step_scale * total / max(float(np.linalg.norm(h)), 1e-300)
        x = project_to_simplex(x - step / k * h, total)
        if k > first_averaged:
            average += x
            count += 1
    return average / count if count else x


def sample_average_lp(samples: np.ndarray, total: float) -> tuple[np.ndarray, float]:
    """Solve min_x mean_j R(x, T^(j)) exactly on the given samples (HiGHS); returns (x, value).

    In the variables S_n (cumulative loads) the LP is sparse: z_j >= T^(j)_(N-n) S_n,
    S non-decreasing (x_n = (S_n - S_{n-1})/(n+1) >= 0), sum_n x_n = total. Its value is an
    in-sample (optimistic) estimate of the optimum; evaluate x on fresh samples.
    """
    k, n = samples.shape
    desc = -np.sort(-samples, axis=1)
    # variables: S_0..S_{N-1}, z_1..z_K
    rows = np.repeat(np.arange(k * n), 2)
    cols = np.empty(2 * k * n, dtype=int)
    vals = np.empty(2 * k * n)
    cols[0::2] = np.tile(np.arange(n), k)
    vals[0::2] = desc.ravel()
    cols[1::2] = n + np.repeat(np.arange(k), n)
    vals[1::2] = -1.0
    a_runtime = sparse.csr_matrix((vals, (rows, cols)), shape=(k * n, n + k))
    # S_{n-1} - S_n <= 0
    mono = sparse.diags([np.ones(n - 1), -np.ones(n - 1)], [0, 1], shape=(n - 1, n + k))
    a_ub = sparse.vstack([a_runtime, mono]).tocsc()
    b_ub = np.zeros(k * n + n - 1)
    # sum_n x_n = sum_n S_n (1/(n+1) - 1/(n+2)) + S_{N-1}/N
    coef = np.zeros(n + k)
    idx = np.arange(n)
    coef[:n] = 1.0 / (idx + 1) - 1.0 / (idx + 2)
    coef[n - 1] = 1.0 / n
    cost = np.concatenate([np.zeros(n), np.full(k, 1.0 / k)])
    result = sp_optimize.linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=coef[None, :],
        b_eq=[total],
        bounds=[(0, None)] * (n + k),
        method="highs",
    )
    if not result.success:
        raise RuntimeError(f"sample-average LP failed: {result.message}")
    loads = result.x[:n]
    x = np.diff(np.concatenate([[0.0], loads])) / np.arange(1, n + 1)
    return np.maximum(x, 0.0), float(result.fun)


def round_r1(x: np.ndarray, total: int) -> np.ndarray:
    """Rule R1: round entrywise, then put the residual on the largest entry (spec §4.1).

    When a negative residual exceeds the largest entry (possible only for L of the order of N),
    the rest is taken from the next largest entries, so that no entry becomes negative.
    """
    values = np.asarray(x, dtype=float)
    out = np.rint(values).astype(np.int64)
    residual = total - int(out.sum())
    for index in np.argsort(-values, kind="stable"):
        change = max(residual, -int(out[index]))
        out[index] += change
        residual -= change
        if residual == 0:
            break
    return out


def round_r2(x: np.ndarray, total: int, samples: np.ndarray) -> np.ndarray:
    """Rule R2: floor, then add 1 where it raises the sample-average objective least (spec §4.1).

    `samples` has shape (K, N) with finite cycle times; at most N - 1 units are added.
    """
    out = np.floor(np.asarray(x, dtype=float)).astype(np.int64)
    desc = -np.sort(-np.asarray(samples, dtype=float), axis=1)
    n = out.size
    steps = (
        np.triu(np.ones((n, n))) * np.arange(1, n + 1)[:, None]
    )  # row i: +1 on x_i -> S_n += i+1, n >= i
    while out.sum() < total:
        loads = block_loads(out)[None, :] + steps  # (N candidates, N)
        scores = [np.max(desc * row, axis=1).mean() for row in loads]
        out[int(np.argmin(scores))] += 1
    return out


def deterministic_optimum(sorted_times: np.ndarray, coordinates: float) -> np.ndarray:
    """Relaxed x minimising max_n t_{N-n} S_n(x) for fixed sorted t_1 <= ... <= t_N (spec §5).

    x_n = lambda/(n+1) (1/t_{N-n} - 1/t_{N-n+1}) with 1/t_{N+1} = 0 and lambda = L / D(t):
    every term t_{N-n} S_n equals lambda. Accepts frequencies 1/t with zeros (failed workers).
    """
    return optimum_from_frequencies(1.0 / np.asarray(sorted_times, dtype=float), coordinates)


def optimum_from_frequencies(frequencies: np.ndarray, coordinates: float) -> np.ndarray:
    """The same optimum from phi_n = 1/t_n (non-increasing in n), shape (N,)."""
    phi = np.asarray(frequencies, dtype=float)
    n = phi.size
    by_block = phi[::-1]  # block n uses phi_{N-n}
    previous = np.concatenate([[0.0], by_block[:-1]])  # phi_{N-n+1}, phi_{N+1} = 0
    weights = (by_block - previous) / np.arange(1, n + 1)
    if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        raise UserError("the closed form needs finite, positive order-statistic moments")
    return coordinates * weights / weights.sum()
