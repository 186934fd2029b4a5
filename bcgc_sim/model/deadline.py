"""Completion probability P(tau <= t) for a deadline t, and the plans that maximise it (spec/bcgc.md §6-7).

A deadline t is in model time units; the functions here take the **raw deadline**
r = t / (M C / N) (`raw_deadline`), since tau <= t iff R <= r with R = max_n T_(N-n) S_n(x).

* `maximise_completion_probability`: the x of scheme bcgc-cdf-opt (integer, sum L).
* `cdf_large_t_relaxed`: the closed form x^(CDF,lg)_n = L / (H_N (n+1)) of scheme bcgc-cdf-lg.
* `deadline_baselines`: every baseline of the journal's CDF figures at its best for the deadline:
  Single BCGC (s maximising P, formula of spec §7.1), Tandon (s in 0..N-1 maximising P, §7.2),
  Ferdinand r = L and r = L/2 with the CDF-part mapping (§7.3, §10.11).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize as sp_optimize
from scipy import special, stats

from .ferdinand import ferdinand_partition
from .optimize import round_r1
from .plans import BlockPlan, Plan, TandonPlan
from .runtime import block_loads
from .stragglers import CycleTimeDistribution
from .system import SystemModel


def raw_deadline(model: SystemModel, deadline: float) -> float:
    """r = t / (M C / N): the deadline t (model time units) on the scale of R."""
    return deadline / model.scale


# --- baselines (spec §7) -------------------------------------------------------------------------


def single_level_completion_probability(
    level: int, coordinates: int, raw: float, dist: CycleTimeDistribution, n_workers: int
) -> float:
    """P(R <= r) of x = L e_s (spec §7.1): at least N - s workers have T <= c = r / (L (s+1)).

    = sum_{i=N-s}^{N} C(N, i) F(c)^i (1 - F(c))^(N-i); equal to the exact DP of the block plan.
    """
    c = raw / (coordinates * (level + 1))
    return float(stats.binom.sf(n_workers - level - 1, n_workers, float(dist.cdf(c))))


def best_single_level(model: SystemModel, raw: float) -> tuple[int, float]:
    """(s, P) with s in 0..N-1 maximising P(R(L e_s) <= r); the smallest s on ties."""
    values = [
        single_level_completion_probability(
            s, model.coordinates, raw, model.distribution, model.n_workers
        )
        for s in range(model.n_workers)
    ]
    best = int(np.argmax(values))
    return best, values[best]


def best_tandon(model: SystemModel, raw: float, alpha: float) -> tuple[int, float]:
    """(s, P) with s in 0..N-1 maximising Tandon's exact P(R <= r) (spec §7.2, the analytic CDF part)."""
    values = [
        TandonPlan("tandon", model.n_workers, model.coordinates, s, alpha).completion_probability(
            raw, model.distribution
        )
        for s in range(model.n_workers)
    ]
    best = int(np.argmax(values))
    return best, values[best]


def ferdinand_cdf_partition(model: SystemModel, layers: int) -> tuple[int, ...]:
    """Ferdinand & Draper with r layers, CDF-part mapping (layer j: N - s_j coordinates, s_1 >= 0)."""
    x = ferdinand_partition(model.n_workers, model.coordinates, layers, part="cdf")
    return tuple(int(v) for v in x)


@dataclass(frozen=True)
class DeadlineResult:
    """A plan and its exact completion probability P(tau <= t) at one deadline."""

    plan: Plan
    probability: float


def deadline_baselines(
    model: SystemModel, deadline: float, tandon_alpha: float
) -> dict[str, DeadlineResult]:
    """The journal's four CDF baselines at their best for deadline t (model time units).

    single-bcgc and tandon choose s maximising P (not E[tau] as the registered schemes do);
    ferdinand-L and ferdinand-L/2 use the CDF-part mapping of spec §10.11.
    """
    raw = raw_deadline(model, deadline)
    dist = model.distribution
    level, p_single = best_single_level(model, raw)
    single = BlockPlan("single-bcgc", _single(model, level))
    s, p_tandon = best_tandon(model, raw, tandon_alpha)
    tandon = TandonPlan("tandon", model.n_workers, model.coordinates, s, tandon_alpha)
    out = {
        "single-bcgc": DeadlineResult(single, p_single),
        "tandon": DeadlineResult(tandon, p_tandon),
    }
    for name, layers in (
        ("ferdinand-L", model.coordinates),
        ("ferdinand-L/2", max(1, model.coordinates // 2)),
    ):
        plan = BlockPlan(name, ferdinand_cdf_partition(model, layers))
        out[name] = DeadlineResult(plan, plan.completion_probability(raw, dist))
    return out


def _single(model: SystemModel, level: int) -> tuple[int, ...]:
    x = [0] * model.n_workers
    x[level] = model.coordinates
    return tuple(x)


# --- x^(CDF,lg) (spec §6) --------------------------------------------------------------------------


def cdf_large_t_relaxed(n_workers: int, coordinates: float) -> np.ndarray:
    """x^(CDF,lg)_n = L / (H_N (n+1)), n = 0..N-1 (spec §6): every S_n / (n+1) equals L / H_N."""
    n = np.arange(1, n_workers + 1)
    return coordinates / (np.sum(1.0 / n) * n)


def cdf_large_t(n_workers: int, coordinates: int) -> np.ndarray:
    """x^(CDF,lg) rounded with R1 (spec §4.1), integers summing to L."""
    return round_r1(cdf_large_t_relaxed(n_workers, coordinates), coordinates)


# --- exact completion probability with its gradient -----------------------------------------------


def _density(dist: CycleTimeDistribution, c: np.ndarray) -> np.ndarray:
    """dF/dt at c by central differences (relative step 1e-6); 0 where c is infinite.

    Generic on purpose: it serves only as a search direction; every decision uses the exact P.
    """
    finite = np.isfinite(c)
    h = np.where(finite, 1e-6 * np.maximum(np.abs(c), 1e-300), 0.0)
    safe = np.where(finite, c, 0.0)
    upper = np.asarray(dist.cdf(safe + h), dtype=float)
    lower = np.asarray(dist.cdf(np.maximum(safe - h, 0.0)), dtype=float)
    width = np.where(finite, safe + h - np.maximum(safe - h, 0.0), 1.0)
    return np.where(finite, (upper - lower) / width, 0.0)


class CompletionModel:
    """P(R(x, T) <= r) and its gradient in x for one (N, r, law), x real with x >= 0, sum > 0.

    The same O(N^3) dynamic programme as `runtime.block_completion_probability` (spec §6), over
    every block (an empty block has c_n = c_{n-1} and q_{n-1} = 0, which is exact; leading empty
    blocks, S_n = 0, have c_n = inf and no constraint), kept differentiable: the forward pass
    stores the per-interval state and a reverse pass gives dP/dq_n; then
    q -> c_n = r / S_n -> S_n -> x by the chain rule.
    """

    def __init__(self, n_workers: int, raw: float, dist: CycleTimeDistribution) -> None:
        n = n_workers
        self.n, self.raw, self.dist = n, raw, dist
        placed = np.arange(n + 1)
        self.extra = placed[:, None] - placed[None, :]  # [i, j]: i - j workers added to j
        k = np.maximum(self.extra, 0)
        self.log_ways = np.where(
            self.extra >= 0,
            special.gammaln(n - placed[None, :] + 1)
            - special.gammaln(k + 1)
            - special.gammaln(n - placed[None, :] - k + 1),
            -np.inf,
        )
        self.log_ways = np.where(k <= n - placed[None, :], self.log_ways, -np.inf)
        self.ways = np.exp(self.log_ways)  # C(N-j, i-j), 0 above the diagonal
        self.power = np.maximum(self.extra, 0)
        self.fast = bool(np.all(np.isfinite(self.ways)))  # C(N, N/2) < 1e308 up to N ~ 1000
        self.ways_first = np.where(self.extra == 1, n - placed[None, :], 0.0)  # dA/dq at q = 0

    def _matrices(self, q: float, derivative: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """A(q)[i, j] = C(N-j, i-j) q^(i-j) and (if asked) its derivative in q."""
        if q <= 0.0:
            return np.eye(self.n + 1), self.ways_first
        if self.fast:
            a = self.ways * (q ** np.arange(self.n + 1))[self.power]
        else:
            with np.errstate(invalid="ignore"):
                a = np.exp(self.log_ways + self.extra * math.log(q))
        return a, (a * self.extra / q if derivative else None)

    def probability(self, x: np.ndarray) -> float:
        return self.evaluate(x, gradient=False)[0]

    def evaluate(self, x: np.ndarray, gradient: bool = True) -> tuple[float, np.ndarray | None]:
        """(P, dP/dx); dP/dx is None when gradient is False."""
        n, raw = self.n, self.raw
        loads = block_loads(np.asarray(x, dtype=float))
        with np.errstate(divide="ignore"):
            c = np.where(loads > 0, raw / np.where(loads > 0, loads, 1.0), np.inf)
        cdf = np.asarray(self.dist.cdf(np.where(np.isfinite(c), c, np.finfo(float).max)), float)
        q = np.empty(n)
        q[n - 1] = cdf[n - 1]
        q[:-1] = np.maximum(cdf[:-1] - cdf[1:], 0.0)
        constrained = loads > 0  # S_n = 0: c_n = inf, T_(N-n) S_n = 0 <= r always
        f = np.zeros(n + 1)
        f[0] = 1.0
        states, derivs = [], []
        for block in range(n - 1, -1, -1):  # smallest threshold first
            a, da = self._matrices(float(q[block]), gradient)
            states.append(f)
            derivs.append((a, da))
            f = a @ f
            if constrained[block]:
                f[: n - block] = 0.0  # at least N - block workers at or below c_block
        # the N - j workers not placed are above every threshold (or failed); when c_0 is
        # finite only j = N is left and the weight is 1, so it has no gradient
        rest = max(1.0 - float(cdf[0]), 0.0)
        weights = rest ** (n - np.arange(n + 1, dtype=float))
        p = float(f @ weights)
        if not gradient:
            return p, None
        adj = weights.copy()
        dq = np.zeros(n)
        for step in range(n - 1, -1, -1):
            block = n - 1 - step
            a, da = derivs[step]
            if constrained[block]:
                adj = adj.copy()
                adj[: n - block] = 0.0
            dq[block] = adj @ (da @ states[step])
            adj = a.T @ adj
        d_cdf = dq.copy()
        d_cdf[1:] -= dq[:-1]  # F_n enters q_n with +1 and q_{n-1} with -1
        finite = np.isfinite(c)  # c_n = inf (S_n = 0, leading empty blocks) does not move
        d_loads = np.where(
            finite,
            d_cdf * _density(self.dist, c) * -np.where(finite, c, 0.0) / np.where(finite, loads, 1),
            0.0,
        )
        # S_n = sum_{i<=n} (i+1) x_i  ->  dP/dx_i = (i+1) sum_{n>=i} dP/dS_n
        grad = np.cumsum(d_loads[::-1])[::-1] * np.arange(1, n + 1)
        return p, grad


# --- bcgc-cdf-opt ------------------------------------------------------------------------------


def union_bound(x: np.ndarray, raw: float, dist: CycleTimeDistribution) -> tuple[float, np.ndarray]:
    """U(x) = sum_n C(N, n+1) (1 - F(r / S_n))^(n+1) >= 1 - P, and dU/dx (spec §6 'Caveat').

    For the shifted exponential this is sum_n C(N, n+1) e^((n+1) mu t0) e^(-(n+1) mu r / S_n)
    wherever r / S_n >= t0.
    """
    n = x.size
    loads = block_loads(x)
    c = raw / loads
    tail = 1.0 - np.asarray(dist.cdf(c), dtype=float)
    k = np.arange(1, n + 1)
    ways = special.comb(n, k)
    terms = ways * tail**k
    d_c = -ways * k * tail ** (k - 1) * _density(dist, c)
    d_loads = d_c * -c / loads
    return float(terms.sum()), np.cumsum(d_loads[::-1])[::-1] * k


@dataclass(frozen=True)
class CdfOptSettings:
    """Knobs of `maximise_completion_probability` (defaults: a few seconds at N = 50)."""

    lbfgs_iterations: int = 300
    polish_evaluations: int = 600  # exact evaluations of the integer local search


def _softmax(theta: np.ndarray, total: float) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return total * e / e.sum()


def _lbfgs_on_simplex(objective, start: np.ndarray, total: float, iterations: int) -> np.ndarray:
    """Minimise objective(x) -> (value, d/dx) over {x > 0, sum x = total} with x = total softmax(theta)."""
    floor = total * 1e-12
    theta0 = np.log(np.maximum(start, floor))

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        x = _softmax(theta, total)
        value, grad = objective(x)
        if not np.isfinite(value):
            return 1e300, np.zeros_like(theta)
        return value, x * (grad - float(x @ grad) / total)

    result = sp_optimize.minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": iterations, "ftol": 1e-13, "gtol": 1e-11},
    )
    return _softmax(result.x, total)


def _neg_logit(model: CompletionModel):
    """x -> (-logit P, gradient): logit keeps both P ~ 1e-6 and 1 - P ~ 1e-6 well scaled."""

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        p, grad = model.evaluate(x)
        p = min(max(p, 1e-300), 1.0 - 1e-16)
        return math.log1p(-p) - math.log(p), -(1.0 / (1.0 - p) + 1.0 / p) * grad

    return objective


def _polish(x: np.ndarray, model: CompletionModel, budget: int) -> tuple[np.ndarray, float]:
    """Integer local search: move d coordinates from block i to block j while P rises.

    Candidate moves are ranked by the gradient (dP/dx_j - dP/dx_i); d runs from about L/1000
    down to 1. At most `budget` exact evaluations.
    """
    x = np.asarray(x, dtype=np.int64).copy()
    n, total = x.size, int(x.sum())
    best = model.probability(x)
    used = 1
    step = max(1, total // 1000)
    while used < budget:
        _, grad = model.evaluate(x)
        order = np.argsort(grad[None, :] - grad[:, None], axis=None)[::-1]  # [i, j] flattened
        improved = False
        tried = 0
        for flat in order:
            i, j = divmod(int(flat), n)
            if i == j or x[i] < step:
                continue
            trial = x.copy()
            trial[i] -= step
            trial[j] += step
            p = model.probability(trial)
            used += 1
            tried += 1
            if p > best:
                x, best, improved = trial, p, True
                break
            if tried >= n or used >= budget:
                break
        if not improved:
            if step == 1:
                break
            step = max(1, step // 4)
    return x, best


def maximise_completion_probability(
    n_workers: int,
    coordinates: int,
    raw: float,
    dist: CycleTimeDistribution,
    settings: CdfOptSettings | None = None,
) -> tuple[np.ndarray, float]:
    """(x, P): integer x (sum L) maximising the exact P(R(x, T) <= r) (scheme bcgc-cdf-opt).

    1. Relaxed starts: x^(CDF,lg) and the minimiser of the union bound (L-BFGS over a softmax
       parameterisation, spec §6 'Caveat').
    2. From each, maximise the exact DP probability on the logit scale by L-BFGS over the same
       parameterisation, with the DP's own gradient (`CompletionModel`).
    3. R1 rounding; the best of these roundings, of every single-level plan L e_s and of the
       R1-rounded x^(CDF,lg) (so the result is never worse than Single BCGC, uncoded,
       Ferdinand r = L or bcgc-cdf-lg), then an integer local search (pairwise transfers).
    The problem is not concave, but from random starts L-BFGS reached the same value to 1e-12
    at the paper's points (N = 10, 20, 30); with 1 - P below ~1e-15 every x scores P = 1.
    """
    settings = settings or CdfOptSettings()
    n, total = n_workers, coordinates
    model = CompletionModel(n, raw, dist)
    large_t = cdf_large_t_relaxed(n, total)
    bound = _lbfgs_on_simplex(
        lambda x: _log_union_bound(x, raw, dist), large_t, total, settings.lbfgs_iterations
    )
    candidates = [cdf_large_t(n, total)]
    candidates += [np.eye(n, dtype=np.int64)[s] * total for s in range(n)]
    for start in (large_t, bound):
        x = _lbfgs_on_simplex(_neg_logit(model), start, total, settings.lbfgs_iterations)
        candidates.append(round_r1(x, total))
    scores = [model.probability(c) for c in candidates]
    best = int(np.argmax(scores))  # the first (x^(CDF,lg)) on ties, e.g. when every P is 0
    return _polish(candidates[best], model, settings.polish_evaluations)


def _log_union_bound(
    x: np.ndarray, raw: float, dist: CycleTimeDistribution
) -> tuple[float, np.ndarray]:
    value, grad = union_bound(x, raw, dist)
    if not value > 0:
        return 0.0, np.zeros_like(x)
    return math.log(value), grad / value
