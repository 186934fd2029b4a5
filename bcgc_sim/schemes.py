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
bcgc-cdf-opt   x maximising the exact completion probability P(tau <= T) (§6; model/deadline.py)
bcgc-sys-opt   x minimising the calibrated system model's E[runtime] (model/sys_opt.py;
               needs SchemeOptions.system, i.e. --calibration FILE)
partial-gc         the partial-straggler protocol (spec/partial-gc.md, a reconstruction), variant
                   R1, exact: cyclic storage, chunk = data partition (partial/plan.py)
partial-gc-approx  the same, stopped at a deadline: approximate gradient, error recorded

The last two (DEADLINE_SCHEMES) maximise P(tau <= T) and need SchemeOptions.deadline = T (model
time units); the others minimise E[tau] and ignore the deadline. The partial-gc schemes
(PARTIAL_SCHEMES) give a PartialPlan, not a block partition; their knobs are SchemeOptions.partial.
Plans go to run.json and back through `plan_to_dict` / `plan_from_dict`. This module sits above
the runtime and partial models (bcgc_sim/model, bcgc_sim/partial), which never import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError
from .model.deadline import cdf_large_t, maximise_completion_probability
from .model.ferdinand import ferdinand_partition
from .model.optimize import (
    SubgradientSettings,
    deterministic_optimum,
    optimum_from_frequencies,
    round_r1,
    round_r2,
    stochastic_subgradient,
)
from .model.plans import BlockPlan, Plan, TandonPlan
from .model.runtime import sorted_tandon_raw_runtime
from .model.stragglers import FailureMixture, monte_carlo_cycle_times
from .model.streams import STREAM_ROUNDING, STREAM_TUNING
from .model.sys_opt import bcgc_sys_opt
from .model.system import SystemModel
from .partial.plan import PartialOptions, PartialPlan, build_partial
from .progress import Progress, report

TANDON_ALPHA = 6.0  # ceil((1 - ln 0.5)/(1 + ln 0.5)), the authors' code (spec §7.2)


@dataclass(frozen=True)
class SchemeOptions:
    """Knobs of the schemes that are not part of the system model."""

    seed: int = 1
    optimizer: SubgradientSettings = field(default_factory=SubgradientSettings)
    tuning_samples: int = 20_000  # Monte-Carlo draws for choosing Tandon's s and for R2 rounding
    tandon_alpha: float = TANDON_ALPHA
    deadline: float | None = None  # T in model time units, for the DEADLINE_SCHEMES
    partial: PartialOptions = field(default_factory=PartialOptions)
    system: tuple | None = None  # (SystemCosts, model.machine.Machine) for bcgc-sys-opt


@dataclass(frozen=True)
class PlanContext:
    """What a builder may use besides the model and the options: the plans already built for
    the same model and options (partial-gc takes its storage from bcgc-opt's), and where to
    report progress."""

    known: Mapping[str, Plan | PartialPlan] = field(default_factory=dict)
    progress: Progress | None = None


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


def build_bcgc_opt(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    _finite_means(model, "bcgc-opt")
    settings = options.optimizer

    def draw(k: int) -> np.ndarray:
        report(context.progress, "optimiser", k - 1, settings.iterations)
        return monte_carlo_cycle_times(
            model.distribution, options.seed, settings.batch, model.n_workers, STREAM_TUNING + k
        )

    relaxed = stochastic_subgradient(theorem2_relaxed(model), model.coordinates, draw, settings)
    rounding = monte_carlo_cycle_times(  # one optimiser batch: R2 moves fewer than N coordinates
        model.distribution, options.seed, settings.batch, model.n_workers, STREAM_ROUNDING
    )

    def rounded(done: int, total: int) -> None:
        report(context.progress, "rounding (R2)", done, total)

    x = round_r2(relaxed, model.coordinates, rounding, rounded)
    return BlockPlan("bcgc-opt", tuple(int(v) for v in x))


def build_bcgc_t(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    x = round_r1(theorem2_relaxed(model), model.coordinates)
    return BlockPlan("bcgc-t", tuple(int(v) for v in x))


def build_bcgc_f(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    x = round_r1(theorem3_relaxed(model), model.coordinates)
    return BlockPlan("bcgc-f", tuple(int(v) for v in x))


def build_single_bcgc(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    """s* = argmin_s (s+1) E[T_(N-s)]: E[R] of x = L e_s is L (s+1) E[T_(N-s)] (spec §7.1)."""
    means = _finite_means(model, "single-bcgc")
    levels = np.arange(model.n_workers)
    best = int(np.argmin((levels + 1) * means[model.n_workers - 1 - levels]))
    return BlockPlan("single-bcgc", _single_level(model, best))


def build_tandon(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    """s* in 1..N-1 minimising the Monte-Carlo E[R] on the scheme tuning stream (spec §7.2)."""
    _finite_means(model, "tandon")
    ascending = np.sort(_tuning_samples(model, options, STREAM_TUNING), axis=1)
    costs = [
        sorted_tandon_raw_runtime(s, options.tandon_alpha, model.coordinates, ascending).mean()
        for s in range(1, model.n_workers)
    ]
    best = 1 + int(np.argmin(costs))
    return TandonPlan("tandon", model.n_workers, model.coordinates, best, options.tandon_alpha)


def build_ferdinand_full(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    x = ferdinand_partition(model.n_workers, model.coordinates, model.coordinates)
    return BlockPlan("ferdinand-L", tuple(int(v) for v in x))


def build_ferdinand_half(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    layers = max(1, model.coordinates // 2)
    x = ferdinand_partition(model.n_workers, model.coordinates, layers)
    return BlockPlan("ferdinand-L/2", tuple(int(v) for v in x))


def build_uncoded(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    return BlockPlan("uncoded", _single_level(model, 0))


def _raw_deadline(model: SystemModel, options: SchemeOptions, scheme: str) -> float:
    """r = T / (M C / N) of options.deadline, or a UserError if there is no valid deadline."""
    t = options.deadline
    if t is None:
        raise missing_deadline(scheme)
    if not (t > 0 and np.isfinite(t)):
        raise UserError(f"the deadline T must be a positive number of model time units, got {t}")
    return t / model.scale


def build_bcgc_cdf_lg(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    """x^(CDF,lg) = L / (H_N (n+1)), R1-rounded; it does not depend on T, but is meant for one."""
    _raw_deadline(model, options, "bcgc-cdf-lg")
    x = cdf_large_t(model.n_workers, model.coordinates)
    return BlockPlan("bcgc-cdf-lg", tuple(int(v) for v in x))


def build_bcgc_cdf_opt(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    raw = _raw_deadline(model, options, "bcgc-cdf-opt")

    def steps(done: int, total: int) -> None:
        report(context.progress, "maximising P(tau <= T)", done, total)

    x, _ = maximise_completion_probability(
        model.n_workers, model.coordinates, raw, model.distribution, progress=steps
    )
    return BlockPlan("bcgc-cdf-opt", tuple(int(v) for v in x))


def build_bcgc_sys_opt(model: SystemModel, options: SchemeOptions, context: PlanContext) -> Plan:
    if options.system is None:
        raise UserError(
            "bcgc-sys-opt minimises the calibrated system model: pass --calibration FILE "
            "(written by 'bcgc calibrate')"
        )
    costs, machine = options.system
    x = bcgc_sys_opt(
        model.n_workers, model.samples, model.coordinates, costs, machine, options.seed
    )
    return BlockPlan("bcgc-sys-opt", x)


def bcgc_storage(
    model: SystemModel, options: SchemeOptions, context: PlanContext | None = None
) -> int:
    """1 + the highest redundancy level bcgc-opt uses for `model`: the partitions it stores.

    Fitted on the base law under a failure mixture (bcgc-opt needs finite means). The plan in
    `context.known` is taken when it is the one this would build.
    """
    context = context or PlanContext()
    law = model.distribution
    known = context.known.get("bcgc-opt")
    if isinstance(law, FailureMixture):
        model = dataclasses.replace(model, distribution=law.base)
        known = None  # planned for another law

    def storage(task: str, done: float = 0, total: float = 0) -> None:
        report(context.progress, f"storage of bcgc-opt: {task}", done, total)

    try:
        plan = known or build_plan("bcgc-opt", model, options, PlanContext(progress=storage))
    except UserError as exc:
        raise UserError(
            f"partial.storage = 0 takes the storage of bcgc-opt, which cannot be planned here "
            f"({exc}); set partial.storage = delta"
        ) from None
    return int(np.flatnonzero(np.asarray(plan.x) > 0).max()) + 1


def _partial(
    model: SystemModel, options: SchemeOptions, approximate: bool, context: PlanContext
) -> PartialPlan:
    """partial-gc or partial-gc-approx; storage 0 = the storage of bcgc-opt (`bcgc_storage`)."""
    storage = options.partial.storage or bcgc_storage(model, options, context)
    return build_partial(
        model, options.partial, storage, options.seed, options.tuning_samples, approximate
    )


def build_partial_gc(
    model: SystemModel, options: SchemeOptions, context: PlanContext
) -> PartialPlan:
    return _partial(model, options, False, context)


def build_partial_gc_approx(
    model: SystemModel, options: SchemeOptions, context: PlanContext
) -> PartialPlan:
    return _partial(model, options, True, context)


SCHEMES: dict[str, Callable[[SystemModel, SchemeOptions, PlanContext], Plan | PartialPlan]] = {
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
APPROXIMATE_SCHEMES = ("partial-gc-approx",)  # decode an approximate gradient
SYSTEM_SCHEMES = ("bcgc-sys-opt",)  # need a calibration (SchemeOptions.system)


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


def build_plan(
    name: str,
    model: SystemModel,
    options: SchemeOptions | None = None,
    context: PlanContext | None = None,
) -> Plan | PartialPlan:
    """The plan of scheme `name` for `model`; `context`: plans already built for the same
    model and options, and a progress callback."""
    check_scheme_names([name])
    return SCHEMES[name](model, options or SchemeOptions(), context or PlanContext())


def plan_to_dict(plan: Plan | PartialPlan) -> dict:
    """A plain dict (run.json) from which `plan_from_dict` rebuilds the plan."""
    if isinstance(plan, BlockPlan):
        return {"kind": "block", "scheme": plan.scheme, "x": [int(v) for v in plan.x]}
    if isinstance(plan, TandonPlan):
        return {
            "kind": "tandon",
            "scheme": plan.scheme,
            "n_workers": plan.n_workers,
            "coordinates": plan.coordinates,
            "stragglers": plan.stragglers,
            "alpha": plan.alpha,
        }
    return plan.to_dict()


def plan_from_dict(data: dict) -> Plan | PartialPlan:
    """The plan `plan_to_dict` described."""
    if data["kind"] == "block":
        return BlockPlan(data["scheme"], tuple(int(v) for v in data["x"]))
    if data["kind"] == "partial":
        return PartialPlan.from_dict(data)
    return TandonPlan(
        data["scheme"],
        int(data["n_workers"]),
        int(data["coordinates"]),
        int(data["stragglers"]),
        float(data["alpha"]),
    )
