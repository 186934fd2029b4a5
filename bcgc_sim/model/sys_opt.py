"""Scheme bcgc-sys-opt: the block partition x minimising the calibrated system model's E[runtime].

Named after the scheme, beside `optimize` (the papers' SPSG, which minimises their model).

The forward pass depends on x only through its highest level s_max (every worker holds the
s_max + 1 partitions), so candidates are enumerated by s_max: the uncoded plan, every single
level L e_s, and for each s_max a BCGC partition over levels 0..s_max shaped like Theorem 2
(spec/bcgc.md §5) for the workers' modelled finish times of the uncoded plan. Each is priced by
the system model on common random numbers; the best is refined by moving coordinate shares
between neighbouring levels while that lowers the estimate. Where coding does not pay on the
machine, the answer is the uncoded or a single-level plan.
"""

from __future__ import annotations

import numpy as np

from .costs import SystemCosts
from .machine import Machine, simulate, system_runtimes
from .plans import BlockPlan
from .work import plan_work

SEARCH_SAMPLES = 60  # simulated iterations per candidate


def _rounded(shares: np.ndarray, coordinates: int) -> tuple[int, ...]:
    """Integer x with sum L from non-negative shares (largest remainders)."""
    shares = np.maximum(np.asarray(shares, dtype=float), 0.0)
    raw = coordinates * shares / shares.sum()
    x = np.floor(raw).astype(int)
    x[np.argsort(raw - x)[::-1][: coordinates - int(x.sum())]] += 1
    return tuple(int(v) for v in x)


def _truncated_theorem2(finish: np.ndarray, top: int) -> np.ndarray:
    """x over levels 0..top: every level's (N - s)-th finish time times its cumulative load
    equal (Theorem 2's structure), the finish times sorted ascending, shape (N,)."""
    t = np.sort(np.asarray(finish, dtype=float))
    n = t.size
    phi = 1.0 / t[::-1][: top + 1]  # level s uses the (N - s)-th fastest
    previous = np.concatenate([[0.0], phi[:-1]])
    weights = np.maximum(phi - previous, 0.0) / np.arange(1, top + 2)
    x = np.zeros(n)
    x[: top + 1] = weights if weights.sum() > 0 else np.eye(top + 1)[top]
    return x


def bcgc_sys_opt(
    n_workers: int, rows: int, coordinates: int, costs: SystemCosts, machine: Machine, seed: int
) -> tuple[int, ...]:
    """The x (length N) with the lowest simulated mean runtime among the candidates."""
    cache: dict[tuple[int, ...], float] = {}

    def price(x: tuple[int, ...]) -> float:
        if x not in cache:
            plan = BlockPlan("bcgc-sys-opt", x)
            runtimes = system_runtimes(
                plan, rows, coordinates, costs, machine, SEARCH_SAMPLES, seed
            )
            cache[x] = float(np.mean(runtimes))
        return cache[x]

    def single(level: int) -> tuple[int, ...]:
        x = [0] * n_workers
        x[level] = coordinates
        return tuple(x)

    candidates = [single(s) for s in range(n_workers)]
    finish = _uncoded_finish_times(n_workers, rows, coordinates, costs, machine, seed)
    for top in range(1, n_workers):
        candidates.append(_rounded(_truncated_theorem2(finish, top), coordinates))
    best = min(candidates, key=price)
    return _refine(best, price, coordinates)


def _uncoded_finish_times(n_workers, rows, coordinates, costs, machine, seed) -> np.ndarray:
    """Mean time at which each worker's uncoded message is taken by the master (seconds)."""
    plan = BlockPlan("uncoded", (coordinates,) + (0,) * (n_workers - 1))
    rng = np.random.default_rng(seed)
    multipliers = costs.cycle_times(rng, (SEARCH_SAMPLES, n_workers))
    trace = simulate(
        plan_work(plan, rows, coordinates, costs), costs, machine, multipliers, None, rng
    )
    return np.nanmean(trace.taken[2:, :, 0], axis=0)


def _refine(x: tuple[int, ...], price, coordinates: int, rounds: int = 3) -> tuple[int, ...]:
    """Move a share of coordinates between neighbouring levels while the estimate improves."""
    best = x
    for fraction in (0.25, 0.1)[:rounds]:
        improved = True
        while improved:
            improved = False
            for a in range(len(best)):
                for b in (a - 1, a + 1):
                    if not 0 <= b < len(best) or best[a] == 0:
                        continue
                    step = max(1, int(round(fraction * best[a])))
                    trial = list(best)
                    trial[a] -= step
                    trial[b] += step
                    trial = tuple(trial)
                    if price(trial) < price(best) * 0.995:
                        best, improved = trial, True
    return best
