"""Every scheme and baseline as a plan builder; one registry, one name each (spec/bcgc.md §4-7).

bcgc-opt       relaxed optimum of Problem 3 by stochastic subgradient (§4), rounded with R2
bcgc-t         Theorem 2 closed form x-bar from E[T_(n)] (§5), rounded with R1
bcgc-f         Theorem 3 closed form x-tilde from E[1/T_(n)] (§5), rounded with R1
single-bcgc    one redundancy level s for every coordinate, s optimal (§7.1)
tandon         Tandon et al.'s partial-straggler scheme, alpha = 6, s optimal (§7.2)
ferdinand-L    Ferdinand & Draper with r = L layers (= full replication) (§7.3)
ferdinand-L/2  Ferdinand & Draper with r = L/2 layers; analytic centre of the degenerate LP
uncoded        no redundancy: every worker's partial derivatives are needed
bcgc-cdf-lg    closed form x^(CDF,lg)_n = L / (H_N (n+1)) for large deadlines (§6), rounded with R1
bcgc-cdf-opt   x maximising the exact completion probability P(tau <= T) (§6; bcgc_sim/deadline.py)
bcgc-sys-opt   x minimising the calibrated system model's E[runtime] (bcgc_sim/system_optimize.py;
               needs SchemeOptions.system, i.e. --calibration FILE)
partial-gc         the partial-straggler protocol (spec/partial-gc.md, a reconstruction), variant
                   R1, exact: cyclic storage, chunk = data partition (bcgc_sim/partial_plan.py)
partial-gc-approx  the same, stopped at a deadline: approximate gradient, error recorded

The last two (DEADLINE_SCHEMES) maximise P(tau <= T) and need SchemeOptions.deadline = T (model
time units); the others minimise E[tau] and ignore the deadline. The partial-gc schemes
(PARTIAL_SCHEMES) give a PartialPlan, not a block partition; their knobs are SchemeOptions.partial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .deadline import cdf_large_t, maximise_completion_probability
from .errors import UserError
from .ferdinand import ferdinand_partition
from .model import SystemModel
from .optimize import SubgradientSettings, round_r1, round_r2, stochastic_subgradient
from .plans import BlockPlan, Plan, TandonPlan
from .runtime import tandon_raw_runtime
from .stragglers import STREAM_ROUNDING, STREAM_TUNING, monte_carlo_cycle_times

TANDON_ALPHA = 6.0  # ceil((1 - ln 0.5)/(1 + ln 0.5)), the authors' code (spec §7.2)


@dataclass(frozen=True)
class PartialOptions:
    """Knobs of partial-gc and partial-gc-approx (config section `partial`, partial_plan.py)."""

    storage: int = 0  # delta partitions per worker, cyclic; 0 = the storage bcgc-opt uses
    parts: int = 1  # l: the gradient is cut into l blocks, every upload has ceil(L / l) floats
    ordering: str = "optimal"  # "optimal" (Latin) or "random" (drawn once from the seed)
    approx_time: float = 0.8  # partial-gc-approx stops at this fraction of E[exact time] ...
    approx_nmse: float = 0.0  # ... or once the estimated NMSE is at most this (0 = off)


@dataclass(frozen=True)
class SchemeOptions:
    """Knobs of the schemes that are not part of the system model."""

    seed: int = 1
    optimizer: SubgradientSettings = field(default_factory=SubgradientSettings)
    tuning_samples: int = 20_000  # Monte-Carlo draws for choosing Tandon's s and for R2 rounding
    tandon_alpha: float = TANDON_ALPHA
    deadline: float | None = None  # T in model time units, for the DEADLINE_SCHEMES
    partial: PartialOptions = field(default_factory=PartialOptions)
    system: tuple | None = None  # (SystemCosts, system_runtime.Machine) for bcgc-sys-opt


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


def theorem2_relaxed(model: SystemModel) -> np.ndarray:
    """x-bar (journal x^(E,t)): the optimum for deterministic cycle times E[T_(n)]."""
    means = model.distribution.order_stat_means(model.n_workers)
    if not np.all(np.isfinite(means)):
        raise UserError(
            f"bcgc-t needs finite E[T_(n)], which {model.distribution.describe()} does not have"
        )
    return deterministic_optimum(means, model.coordinates)


def theorem3_relaxed(model: SystemModel) -> np.ndarray:
    """x-tilde (journal x^(E,f)): the optimum for deterministic frequencies E[1/T_(n)].

    With t0 = 0, E[1/T_(1)] is infinite and x-tilde degenerates to L e_{N-1} (spec §10.8).
    """
    phi = model.distribution.order_stat_inverse_means(model.n_workers)
    if np.isinf(phi[0]):
        return np.array(_single_level(model, model.n_workers - 1), dtype=float)
    return optimum_from_frequencies(phi, model.coordinates)


def _single_level(model: SystemModel, level: int) -> tuple[int, ...]:
    x = [0] * model.n_workers
    x[level] = model.coordinates
    return tuple(x)


def _tuning_samples(model: SystemModel, options: SchemeOptions, stream: int) -> np.ndarray:
    return monte_carlo_cycle_times(
        model.distribution, options.seed, options.tuning_samples, model.n_workers, stream
    )


def _finite_means(model: SystemModel, scheme: str) -> np.ndarray:
    means = model.distribution.order_stat_means(model.n_workers)
    if not np.all(np.isfinite(means)):
        raise UserError(
            f"{scheme} minimises E[runtime], which is infinite under "
            f"{model.distribution.describe()}; set straggler.failure_probability = 0"
        )
    return means


def build_bcgc_opt(model: SystemModel, options: SchemeOptions) -> Plan:
    _finite_means(model, "bcgc-opt")
    settings = options.optimizer

    def draw(k: int) -> np.ndarray:
        return monte_carlo_cycle_times(
            model.distribution, options.seed, settings.batch, model.n_workers, STREAM_TUNING + k
        )

    relaxed = stochastic_subgradient(theorem2_relaxed(model), model.coordinates, draw, settings)
    rounding = monte_carlo_cycle_times(  # one optimiser batch: R2 moves fewer than N coordinates
        model.distribution, options.seed, settings.batch, model.n_workers, STREAM_ROUNDING
    )
    return BlockPlan(
        "bcgc-opt", tuple(int(v) for v in round_r2(relaxed, model.coordinates, rounding))
    )


def build_bcgc_t(model: SystemModel, options: SchemeOptions) -> Plan:
    x = round_r1(theorem2_relaxed(model), model.coordinates)
    return BlockPlan("bcgc-t", tuple(int(v) for v in x))


def build_bcgc_f(model: SystemModel, options: SchemeOptions) -> Plan:
    x = round_r1(theorem3_relaxed(model), model.coordinates)
    return BlockPlan("bcgc-f", tuple(int(v) for v in x))


def build_single_bcgc(model: SystemModel, options: SchemeOptions) -> Plan:
    """s* = argmin_s (s+1) E[T_(N-s)]: E[R] of x = L e_s is L (s+1) E[T_(N-s)] (spec §7.1)."""
    means = _finite_means(model, "single-bcgc")
    levels = np.arange(model.n_workers)
    best = int(np.argmin((levels + 1) * means[model.n_workers - 1 - levels]))
    return BlockPlan("single-bcgc", _single_level(model, best))


def build_tandon(model: SystemModel, options: SchemeOptions) -> Plan:
    """s* in 1..N-1 minimising the Monte-Carlo E[R] on the scheme tuning stream (spec §7.2)."""
    _finite_means(model, "tandon")
    samples = _tuning_samples(model, options, STREAM_TUNING)
    costs = [
        tandon_raw_runtime(s, options.tandon_alpha, model.coordinates, samples).mean()
        for s in range(1, model.n_workers)
    ]
    best = 1 + int(np.argmin(costs))
    return TandonPlan("tandon", model.n_workers, model.coordinates, best, options.tandon_alpha)


def build_ferdinand_full(model: SystemModel, options: SchemeOptions) -> Plan:
    x = ferdinand_partition(model.n_workers, model.coordinates, model.coordinates)
    return BlockPlan("ferdinand-L", tuple(int(v) for v in x))


def build_ferdinand_half(model: SystemModel, options: SchemeOptions) -> Plan:
    layers = max(1, model.coordinates // 2)
    x = ferdinand_partition(model.n_workers, model.coordinates, layers)
    return BlockPlan("ferdinand-L/2", tuple(int(v) for v in x))


def build_uncoded(model: SystemModel, options: SchemeOptions) -> Plan:
    return BlockPlan("uncoded", _single_level(model, 0))


def _raw_deadline(model: SystemModel, options: SchemeOptions, scheme: str) -> float:
    """r = T / (M C / N) of options.deadline, or a UserError if there is no valid deadline."""
    t = options.deadline
    if t is None:
        raise missing_deadline(scheme)
    if not (t > 0 and np.isfinite(t)):
        raise UserError(f"the deadline T must be a positive number of model time units, got {t}")
    return t / model.scale


def build_bcgc_cdf_lg(model: SystemModel, options: SchemeOptions) -> Plan:
    """x^(CDF,lg) = L / (H_N (n+1)), R1-rounded; it does not depend on T, but is meant for one."""
    _raw_deadline(model, options, "bcgc-cdf-lg")
    x = cdf_large_t(model.n_workers, model.coordinates)
    return BlockPlan("bcgc-cdf-lg", tuple(int(v) for v in x))


def build_bcgc_cdf_opt(model: SystemModel, options: SchemeOptions) -> Plan:
    raw = _raw_deadline(model, options, "bcgc-cdf-opt")
    x, _ = maximise_completion_probability(
        model.n_workers, model.coordinates, raw, model.distribution
    )
    return BlockPlan("bcgc-cdf-opt", tuple(int(v) for v in x))


def build_bcgc_sys_opt(model: SystemModel, options: SchemeOptions) -> Plan:
    if options.system is None:
        raise UserError(
            "bcgc-sys-opt minimises the calibrated system model: pass --calibration FILE "
            "(written by 'bcgc calibrate')"
        )
    from .system_optimize import bcgc_sys_opt  # the system model: loaded on use

    costs, machine = options.system
    x = bcgc_sys_opt(
        model.n_workers, model.samples, model.coordinates, costs, machine, options.seed
    )
    return BlockPlan("bcgc-sys-opt", x)


def build_partial_gc(model: SystemModel, options: SchemeOptions) -> Plan:
    from .partial_plan import build_partial  # imports schemes itself: loaded on first use

    return build_partial(model, options, approximate=False)


def build_partial_gc_approx(model: SystemModel, options: SchemeOptions) -> Plan:
    from .partial_plan import build_partial

    return build_partial(model, options, approximate=True)


SCHEMES: dict[str, Callable[[SystemModel, SchemeOptions], Plan]] = {
    "bcgc-opt": build_bcgc_opt,
    "bcgc-t": build_bcgc_t,
    "bcgc-f": build_bcgc_f,
    "single-bcgc": build_single_bcgc,
    "tandon": build_tandon,
    "ferdinand-L": build_ferdinand_full,
    "ferdinand-L/2": build_ferdinand_half,
    "uncoded": build_uncoded,
    "bcgc-cdf-lg": build_bcgc_cdf_lg,
    "bcgc-cdf-opt": build_bcgc_cdf_opt,
    "bcgc-sys-opt": build_bcgc_sys_opt,
    "partial-gc": build_partial_gc,
    "partial-gc-approx": build_partial_gc_approx,
}
DEADLINE_SCHEMES = ("bcgc-cdf-lg", "bcgc-cdf-opt")  # these need SchemeOptions.deadline
PARTIAL_SCHEMES = ("partial-gc", "partial-gc-approx")  # PartialPlan, not a block partition
APPROXIMATE_SCHEMES = ("partial-gc-approx",)
SYSTEM_SCHEMES = (
    "bcgc-sys-opt",
)  # need a calibration (SchemeOptions.system)  # decode an approximate gradient


def needs_deadline(name: str) -> bool:
    """True for the schemes that maximise P(tau <= T) and cannot be planned without T."""
    return name in DEADLINE_SCHEMES


def missing_deadline(name: str) -> UserError:
    """The error for a deadline scheme planned without a deadline."""
    return UserError(
        f"{name} maximises P(tau <= T) and needs a deadline T: set predict.deadline = T "
        "(model time units), or pass --deadline T to 'bcgc plan', 'bcgc predict' or "
        "'bcgc validate'"
    )


def check_scheme_names(names: list[str]) -> None:
    """Raise a UserError naming the first unknown scheme and listing the known ones."""
    for name in names:
        if name not in SCHEMES:
            raise UserError(f"unknown scheme '{name}'; known schemes: {', '.join(SCHEMES)}")


def build_plan(name: str, model: SystemModel, options: SchemeOptions | None = None) -> Plan:
    """The plan of scheme `name` for `model`."""
    check_scheme_names([name])
    return SCHEMES[name](model, options or SchemeOptions())
