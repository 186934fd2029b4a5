"""The fair comparison of spec/partial-gc.md §5.3: BCGC, the original GC and partial GC.

Expected time to the exact gradient of every scheme on common evaluation draws, with the same
storage, work unit and uplink (see `fair_comparison`). It sits above the scheme registry: the
uncapped BCGC row is scheme bcgc-opt planned by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize as sp_optimize

from .model.optimize import SubgradientSettings, round_r2, stochastic_subgradient
from .model.plans import BlockPlan
from .model.runtime import Estimate
from .model.stragglers import CycleTimeDistribution, FailureMixture, monte_carlo_cycle_times
from .model.streams import (
    ROOT_COMPARISON_ORDERS,
    STREAM_EVALUATION,
    STREAM_ROUNDING,
    STREAM_TUNING,
    generator,
)
from .model.system import SystemModel
from .partial.assignment import Assignment, latin_ordering, positions
from .partial.timing import exact_times, random_positions, speed_finish_times
from .schemes import SchemeOptions, build_plan, deterministic_optimum


@dataclass(frozen=True)
class SchemeTimes:
    """Time to the exact gradient of one scheme on the common evaluation draws (§5.3).

    `times` (K,) in chunk-gradient units (one partition's full gradient at unit cycle time);
    `storage` in partitions per worker; `uplink` in floats per worker per iteration, units of d.
    """

    scheme: str
    detail: str
    storage: int
    uplink: float
    times: np.ndarray

    @property
    def estimate(self) -> Estimate:
        return Estimate.of(self.times)

    @property
    def finished(self) -> float:
        """Fraction of iterations that ever finish (< 1 only with failed workers)."""
        return float(np.isfinite(self.times).mean())

    @property
    def std(self) -> float:
        t = self.times[np.isfinite(self.times)]
        return float(t.std(ddof=1)) if t.size > 1 else math.nan

    @property
    def p90(self) -> float:
        return float(np.quantile(self.times, 0.9, method="inverted_cdf"))


def fit_capped_bcgc(
    n_workers: int,
    storage: int,
    distribution: CycleTimeDistribution,
    coordinates: int = 1000,
    seed: int = 1,
    settings: SubgradientSettings | None = None,
) -> BlockPlan:
    """bcgc-opt restricted to redundancy levels 0..delta-1 (storage delta, spec §5.3.1).

    Same optimiser as schemes.build_bcgc_opt, on the delta largest cycle times (the only ones
    levels < delta use), tuning and rounding streams only (never the evaluation stream).
    """
    settings = settings or SubgradientSettings()

    def top(k: int, stream: int) -> np.ndarray:
        t = monte_carlo_cycle_times(distribution, seed, settings.batch, n_workers, stream + k)
        return np.sort(t, axis=1)[:, n_workers - storage :]

    means = distribution.order_stat_means(n_workers)[n_workers - storage :]
    start = deterministic_optimum(means, coordinates)
    relaxed = stochastic_subgradient(start, coordinates, lambda k: top(k, STREAM_TUNING), settings)
    x = round_r2(relaxed, coordinates, top(0, STREAM_ROUNDING))
    return BlockPlan("bcgc-capped", tuple(int(v) for v in x) + (0,) * (n_workers - storage))


def oracle_times(assignment: Assignment, cycle_times: np.ndarray) -> np.ndarray:
    """The storage-limited lower bound of §5.3.7 by LP per realisation, shape (K,).

    min t s.t. sum_{j in H_i} x_ij = 1, T_j sum_i x_ij <= t, x >= 0 (fractional chunk work).
    """
    edges = np.argwhere(assignment.matrix > 0)  # (E, 2): (chunk, worker)
    out = np.empty(cycle_times.shape[0])
    for k, t in enumerate(np.atleast_2d(cycle_times)):
        alive = np.isfinite(t[edges[:, 1]])
        e = edges[alive]
        if np.unique(e[:, 0]).size < assignment.n_chunks:
            out[k] = np.inf
            continue
        n_e = e.shape[0]
        a_eq = np.zeros((assignment.n_chunks, n_e + 1))
        a_eq[e[:, 0], np.arange(n_e)] = 1.0
        a_ub = np.zeros((assignment.n_workers, n_e + 1))
        a_ub[e[:, 1], np.arange(n_e)] = t[e[:, 1]]
        a_ub[:, -1] = -1.0
        cost = np.zeros(n_e + 1)
        cost[-1] = 1.0
        res = sp_optimize.linprog(
            cost,
            A_ub=a_ub,
            b_ub=np.zeros(assignment.n_workers),
            A_eq=a_eq,
            b_eq=np.ones(assignment.n_chunks),
            method="highs",
        )
        out[k] = res.fun if res.success else np.inf
    return out


def fair_comparison(
    n_workers: int,
    storage: int,
    distribution: CycleTimeDistribution,
    parts=(1, 2),
    samples: int = 4000,
    seed: int = 1,
    coordinates: int = 1000,
    options: SchemeOptions | None = None,
    uncapped_bcgc: bool = True,
    oracle_samples: int = 0,
) -> list[SchemeTimes]:
    """Expected time to the exact gradient of BCGC, original GC and partial GC (spec §5.3).

    Mapping (all on the same evaluation draws T, shape (K, N), stream STREAM_EVALUATION of `seed`,
    which no scheme was tuned on; per-worker constant speed; time unit = one partition's full
    gradient at unit cycle time):
      * data: m = N partitions, cyclic storage of `storage` = delta partitions per worker;
      * partial GC, chunk = partition: worker j finishes its k-th chunk at k T_j; exact when every
        chunk has l copies (R1/R2); Latin (= the cyclic natural order, optimal) and a fresh random
        order per draw; uplink d / l floats;
      * original GC (Tandon, s = delta - 1) = BlockPlan x = L e_s: time delta T_(N-s); uplink d;
      * BCGC, coordinate = 1/L of a partition gradient, level n costs (n + 1)/L units: time
        R(x, T) / L = max_n T_(N-n) S_n(x) / L. "bcgc-capped" (levels <= delta - 1, storage
        delta, `fit_capped_bcgc`) is the fair one; "bcgc-opt" = schemes.build_plan (levels up to
        N - 1: storage up to N, reported for reference); uplink d (L coordinates);
      * uncoded (delta = 1): time T_(N);
      * oracle (optional, LP on the first `oracle_samples` draws): best possible with the storage.
    With a FailureMixture the BCGC plans are fitted on its base law (they need finite means).
    """
    options = options or SchemeOptions(seed=seed)
    fit_law = distribution.base if isinstance(distribution, FailureMixture) else distribution
    t = monte_carlo_cycle_times(distribution, seed, samples, n_workers, STREAM_EVALUATION)
    assignment = Assignment.cyclic(n_workers, storage)
    s = storage - 1
    rows = [
        _block_row("uncoded", "delta = 1", 1, _single_level(n_workers, coordinates, 0), t),
        _block_row(
            "original GC", f"Tandon s = {s}", storage, _single_level(n_workers, coordinates, s), t
        ),
        *_bcgc_rows(n_workers, storage, fit_law, coordinates, seed, options, uncapped_bcgc, t),
        *_partial_rows(assignment, storage, parts, seed, t),
    ]
    if oracle_samples:
        rows.append(
            SchemeTimes(
                "oracle bound",
                f"LP, first {oracle_samples} draws",
                storage,
                math.nan,
                oracle_times(assignment, t[:oracle_samples]),
            )
        )
    return rows


def _single_level(n_workers: int, coordinates: int, level: int) -> BlockPlan:
    """x = L e_level: every coordinate tolerates `level` stragglers."""
    return BlockPlan(
        "single-level", tuple(coordinates if n == level else 0 for n in range(n_workers))
    )


def _block_row(
    scheme: str, detail: str, storage: int, plan: BlockPlan, t: np.ndarray
) -> SchemeTimes:
    """A BCGC-style plan's time R(x, T) / L (chunk units), uplink d."""
    return SchemeTimes(scheme, detail, storage, 1.0, plan.raw_runtime(t) / plan.coordinates)


def _bcgc_rows(
    n_workers: int,
    storage: int,
    law: CycleTimeDistribution,
    coordinates: int,
    seed: int,
    options: SchemeOptions,
    uncapped: bool,
    t: np.ndarray,
) -> list[SchemeTimes]:
    """BCGC capped at the storage (the fair one) and, if `uncapped`, bcgc-opt as planned."""
    capped = fit_capped_bcgc(n_workers, storage, law, coordinates, seed, options.optimizer)
    rows = [_block_row("BCGC capped", _fractions(capped.x, storage), storage, capped, t)]
    if uncapped:
        model = SystemModel(n_workers, coordinates, n_workers, 1.0, law)
        plan = build_plan("bcgc-opt", model, options)
        top = int(np.flatnonzero(np.array(plan.x) > 0).max()) + 1
        rows.append(_block_row("BCGC (bcgc-opt)", _fractions(plan.x, top), top, plan, t))
    return rows


def _partial_rows(
    assignment: Assignment, storage: int, parts, seed: int, t: np.ndarray
) -> list[SchemeTimes]:
    """Partial GC for each l, in the Latin order and in a fresh random order per draw."""
    finish = speed_finish_times(t, assignment.loads)
    latin = positions(assignment, latin_ordering(assignment))
    rng = generator(seed, ROOT_COMPARISON_ORDERS, assignment.n_workers, storage)
    shuffled = random_positions(assignment, rng, t.shape[0])
    return [
        SchemeTimes(
            f"partial GC l={l}",
            f"{label} order",
            storage,
            1.0 / l,
            exact_times(assignment, pos, finish, l),
        )
        for l in parts
        for label, pos in (("Latin", latin), ("random", shuffled))
    ]


def _fractions(x, levels: int) -> str:
    total = float(sum(x))
    return "x/L = [" + ", ".join(f"{v / total:.2f}" for v in x[:levels]) + "]"
