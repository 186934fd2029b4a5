"""Scheme bcgc-sys-opt: the block partition x minimising the calibrated system model's E[runtime].

Named after the scheme, beside `optimize` (the papers' SPSG, which minimises their model).

The objective is what the testbed measures: the mean time from the broadcast of theta to the
last decode, over consecutive simulated iterations (model/machine.py), stale work and the
master's CPU included. The forward pass depends on x only through its highest level s_max
(every worker holds the s_max + 1 partitions), so candidates are enumerated by s_max: the
uncoded plan, every single level L e_s, and for each s_max a BCGC partition over levels
0..s_max shaped like Theorem 2 (spec/bcgc.md §5) for the workers' mean cycle times (every
s_max up to N = 10, above that a geometric grid), with any other schemes' partitions passed
in. The best is refined by moving shares of coordinates between neighbouring levels while that
lowers the estimate (at most REFINE_EVALUATIONS more). Every plan is priced on the same
simulated draws (common random numbers), and the finalists are compared again on more of
them: the answer is never a plan the model predicts slower than one it tried, the uncoded
and every single-level plan included. Where coding does not pay on the machine, the answer
is the uncoded or a single-level plan.
"""

from __future__ import annotations

import numpy as np

from .costs import SystemCosts
from .machine import Machine, system_runtimes
from .plans import BlockPlan

SEARCH_SAMPLES = 40  # simulated iterations per plan while searching (common random numbers)
FINAL_SAMPLES = 120  # ... when the finalists are compared
FINALIST_MARGIN = 1.10  # searched plans within this factor of the best are compared again
EVERY_LEVEL_UP_TO = 10  # N up to which every s_max gets a Theorem 2 shaped candidate
REFINE_EVALUATIONS = 40  # most extra plans priced while refining
IMPROVEMENT = 0.995  # a move is taken if it lowers the estimate by 0.5% at least


def _rounded(shares: np.ndarray, coordinates: int) -> tuple[int, ...]:
    """Integer x with sum L from non-negative shares (largest remainders)."""
    shares = np.maximum(np.asarray(shares, dtype=float), 0.0)
    raw = coordinates * shares / shares.sum()
    x = np.floor(raw).astype(int)
    x[np.argsort(raw - x)[::-1][: coordinates - int(x.sum())]] += 1
    return tuple(int(v) for v in x)


def truncated_theorem2(mean_times: np.ndarray, top: int) -> np.ndarray:
    """x over levels 0..top, shape (N,): every level's (N - s)-th fastest mean cycle time
    times its cumulative load equal (Theorem 2's structure), the rest zero."""
    t = np.sort(np.asarray(mean_times, dtype=float))
    n = t.size
    phi = 1.0 / t[::-1][: top + 1]  # level s waits for the (N - s)-th fastest
    previous = np.concatenate([[0.0], phi[:-1]])
    weights = np.maximum(phi - previous, 0.0) / np.arange(1, top + 2)
    x = np.zeros(n)
    x[: top + 1] = weights if weights.sum() > 0 else np.eye(top + 1)[top]
    return x


def candidate_levels(n_workers: int) -> list[int]:
    """The highest levels tried: all of them up to EVERY_LEVEL_UP_TO, else a geometric grid."""
    if n_workers <= EVERY_LEVEL_UP_TO:
        return list(range(n_workers))
    grid = {0, 1, n_workers - 1}
    level = 2
    while level < n_workers - 1:
        grid.add(level)
        level *= 2
    return sorted(grid)


def single_level(n_workers: int, coordinates: int, level: int) -> tuple[int, ...]:
    """L e_s: every coordinate at one level (level 0 is the uncoded plan)."""
    x = [0] * n_workers
    x[level] = coordinates
    return tuple(x)


def bcgc_sys_opt(
    n_workers: int,
    rows: int,
    coordinates: int,
    costs: SystemCosts,
    machine: Machine,
    seed: int,
    extra: tuple[tuple[int, ...], ...] = (),
) -> tuple[int, ...]:
    """The x (length N) with the lowest simulated mean runtime among the candidates: the
    uncoded plan, every single level, Theorem 2 shaped partitions per s_max, `extra` (other
    schemes' block partitions) and the refinement of the best. Every plan is priced on the
    same simulated draws (the seed's multipliers: common random numbers); the finalists, the
    uncoded and every single-level plan always among them, are compared again on
    FINAL_SAMPLES draws, so no plan the search saw is predicted faster than the answer."""

    def pricer(samples: int):
        cache: dict[tuple[int, ...], float] = {}

        def price(x: tuple[int, ...]) -> float:
            if x not in cache:
                plan = BlockPlan("bcgc-sys-opt", x)
                runtimes = system_runtimes(plan, rows, coordinates, costs, machine, samples, seed)
                cache[x] = float(np.mean(runtimes))
            return cache[x]

        return price, cache

    repeat = np.asarray(machine.repeat, dtype=float) if machine.repeat else 1.0
    means = costs.mean_cycle_times(n_workers) * repeat
    singles = [single_level(n_workers, coordinates, s) for s in range(n_workers)]
    candidates = list(singles)
    for top in candidate_levels(n_workers):
        if top > 0:
            candidates.append(_rounded(truncated_theorem2(means, top), coordinates))
    candidates += [tuple(int(v) for v in x) for x in extra if _valid(x, n_workers, coordinates)]
    search, searched = pricer(SEARCH_SAMPLES)
    best = min(candidates, key=search)
    best = _refine(best, search, len(searched) + REFINE_EVALUATIONS, searched)
    cutoff = FINALIST_MARGIN * min(searched.values())
    finalists = {x for x, value in searched.items() if value <= cutoff} | set(singles) | {best}
    final, _ = pricer(FINAL_SAMPLES)
    return min(sorted(finalists), key=final)


def _valid(x, n_workers: int, coordinates: int) -> bool:
    return len(x) == n_workers and min(x) >= 0 and sum(x) == coordinates


def _refine(x: tuple[int, ...], price, budget: int, cache: dict) -> tuple[int, ...]:
    """Move a share of coordinates between neighbouring levels while the estimate improves,
    until `budget` plans in all have been priced."""
    best = x
    for fraction in (0.25, 0.1):
        improved = True
        while improved and len(cache) < budget:
            improved = False
            for a in range(len(best)):
                for b in (a - 1, a + 1):
                    if not 0 <= b < len(best) or best[a] == 0 or len(cache) >= budget:
                        continue
                    step = max(1, int(round(fraction * best[a])))
                    trial = list(best)
                    trial[a] -= step
                    trial[b] += step
                    trial = tuple(trial)
                    if price(trial) < price(best) * IMPROVEMENT:
                        best, improved = trial, True
    return best
