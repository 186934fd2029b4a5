"""Predicted runtimes of several schemes on common random numbers (the `bcgc predict` command)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import UserError
from .model.plans import BlockPlan, Plan, TandonPlan
from .model.runtime import Estimate
from .model.stragglers import monte_carlo_cycle_times
from .model.streams import STREAM_EVALUATION
from .model.system import SystemModel
from .partial.plan import CDF_SAMPLES, PartialPlan
from .problems import MemoryNeed
from .progress import Progress, report
from .schemes import PARTIAL_SCHEMES, PlanContext, SchemeOptions, build_plan

EVALUATION_ROWS = 10_000  # draws per evaluation step (one progress report each)


@dataclass(frozen=True)
class Prediction:
    """One scheme's predicted runtime. R is raw (spec §8); E[tau] = (M C / N) R, model time units."""

    scheme: str
    plan: Plan | None
    raw: Estimate | None  # R by Monte Carlo
    expected_runtime: Estimate | None  # E[tau] by Monte Carlo
    exact_expected_runtime: float | None  # E[tau] from the exact completion probability
    error: str = ""  # why the scheme has no plan under this model
    completion_probability: float | None = None  # exact P(tau <= T) when a deadline T is given

    def partition(self) -> list[int]:
        if isinstance(self.plan, TandonPlan):
            return [int(v) for v in self.plan.block_partition()]
        if isinstance(self.plan, BlockPlan):
            return [int(v) for v in self.plan.x]
        return []  # no plan, or a PartialPlan (no block partition)


def evaluation_samples(model: SystemModel, seed: int, n_samples: int) -> np.ndarray:
    """The out-of-sample cycle times all schemes are evaluated on, shape (K, N)."""
    return monte_carlo_cycle_times(
        model.distribution, seed, n_samples, model.n_workers, STREAM_EVALUATION
    )


def monte_carlo_need(
    n_workers: int, samples: int, schemes: list[str], parts: int = 1
) -> MemoryNeed:
    """Memory to plan and evaluate `schemes` on `samples` draws of the N cycle times.

    Block schemes: about 3.1 to 3.9 arrays of samples x N float64 (peaks measured with `bcgc
    predict`: maximum resident size less that of a tiny run). The partial-gc schemes keep the
    l = partial.parts earliest copies of every chunk: 3 arrays of samples x N x l at most.
    """
    partial = any(name in PARTIAL_SCHEMES for name in schemes)
    depth = parts if partial else 1
    arrays = 3 if partial else 4
    what = f"the Monte Carlo draws ({samples} x {n_workers} cycle times"
    what += f" x {depth} copies, for partial-gc)" if partial else ")"
    fix = "lower cluster.workers or predict.samples / optimize.tuning_samples"
    if partial:
        fix += ", or leave the partial-gc schemes out"
    return MemoryNeed(what, arrays * 8 * samples * n_workers * depth, fix)


@dataclass(frozen=True)
class TimeNeed:
    """Time one part of a prediction will take (estimated before it starts), and what shortens it."""

    what: str
    seconds: float
    fix: str


# Seconds per unit of work, measured with scripts/bench_predict.py at N = 30..100 on a 2-core
# machine (an order of magnitude, not a promise): one cycle time drawn, sorted and scanned
SORT_S = 2e-8
# one multiply-add of the completion DP (N^2 per non-empty block and deadline); the exact
# E[tau] evaluates it at about QUADRATURE_NODES deadlines, bcgc-cdf-opt at CDF_OPT_EVALUATIONS
DP_S = 1e-9
QUADRATURE_NODES = 400
CDF_OPT_EVALUATIONS = 2000
CDF_OPT_S = 1e-9  # one entry of bcgc-cdf-opt's (N+1)^2 interval matrices
COPY_S = 3e-9  # one copy time of partial-gc (draw x chunk x holder)


def time_needs(
    model: SystemModel, schemes: list[str], options: SchemeOptions, n_samples: int, exact: bool
) -> list[TimeNeed]:
    """What `predict` will spend its time on, for `check_time` to refuse before it starts.

    Upper bounds of the work (every block non-empty, partial-gc visiting every holder) times
    the rates above: about N x (iterations x batch + N x batch) for bcgc-opt, schemes x samples
    x N for the evaluation, schemes x nodes x N^3 for the exact E[tau], (evaluations x N^3)
    for bcgc-cdf-opt, (samples + tuning + CDF_SAMPLES) x N x delta for partial-gc.
    """
    n = model.n_workers
    opt = options.optimizer
    partial = [s for s in schemes if s in PARTIAL_SCHEMES]
    block = [s for s in schemes if s not in PARTIAL_SCHEMES]
    needs = [
        TimeNeed(
            f"the evaluation of {len(schemes)} schemes on {n_samples} draws of {n} cycle times",
            len(schemes) * n_samples * n * SORT_S,
            "lower predict.samples",
        )
    ]
    if "bcgc-opt" in schemes or (partial and not options.partial.storage):
        needs.append(
            TimeNeed(
                f"bcgc-opt's optimiser and rounding ({opt.iterations} iterations x "
                f"{opt.batch} draws x N = {n})",
                (opt.iterations + n) * opt.batch * n * SORT_S,
                "lower optimize.iterations or optimize.batch",
            )
        )
    if exact and block:
        needs.append(
            TimeNeed(
                f"the exact E[tau] of {len(block)} schemes (N^3 = {n**3:.3g} per deadline)",
                len(block) * QUADRATURE_NODES * n**3 * DP_S,
                "set predict.exact = false",
            )
        )
    if "bcgc-cdf-opt" in schemes:
        needs.append(
            TimeNeed(
                f"bcgc-cdf-opt's search ({CDF_OPT_EVALUATIONS} evaluations of N^3 = {n**3:.3g})",
                CDF_OPT_EVALUATIONS * n**3 * CDF_OPT_S,
                "leave bcgc-cdf-opt out (bcgc-cdf-lg needs no search)",
            )
        )
    if partial:
        draws = n_samples + CDF_SAMPLES + options.tuning_samples
        delta = options.partial.storage or n
        needs.append(
            TimeNeed(
                f"partial-gc's Monte Carlo ({draws} draws x {n} chunks x {delta} holders)",
                len(partial) * draws * n * delta * COPY_S,
                "lower predict.samples or partial.storage, or leave the partial-gc schemes out",
            )
        )
    return needs


def check_time(needs: list[TimeNeed], step: str, limit: float) -> None:
    """Refuse (UserError) a `step` whose estimated seconds add up to more than `limit` (0: no
    limit); the message names the largest part and its fix."""
    total = sum(need.seconds for need in needs)
    if limit <= 0 or total <= limit:
        return
    top = max(needs, key=lambda need: need.seconds)
    raise UserError(
        f"{step} would take about {_duration(total)} (estimated), more than predict.time_limit "
        f"= {limit:g} s; the largest part is {top.what} (about {_duration(top.seconds)}): "
        f"{top.fix}, or raise predict.time_limit (0 = no limit)"
    )


def _duration(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} s"


def predict(
    model: SystemModel,
    schemes: list[str],
    options: SchemeOptions,
    n_samples: int,
    exact: bool,
    progress: Progress | None = None,
) -> list[Prediction]:
    """Plan every scheme and estimate its runtime on the same samples.

    With options.deadline = T (model time units) each plan also gets its exact P(tau <= T)
    (spec §6; raw deadline T / (M C / N)), and the deadline schemes can be planned. A scheme
    that cannot be planned under this model (for example E[tau]-minimisers under a failure
    mixture, or a deadline scheme without a deadline) is reported with its reason instead of
    ending the whole prediction. `progress` hears of every step, as "scheme (i/n): step".
    """
    samples = evaluation_samples(model, options.seed, n_samples)
    out: list[Prediction] = []
    known: dict[str, Plan | PartialPlan] = {}
    for index, name in enumerate(schemes):

        def step(task: str, done: float = 0, total: float = 0, name=name, index=index) -> None:
            report(progress, f"{name} ({index + 1}/{len(schemes)}): {task}", done, total)

        try:
            plan = build_plan(name, model, options, PlanContext(known, step))
        except UserError as exc:
            out.append(Prediction(name, None, None, None, None, str(exc)))
            continue
        known[name] = plan
        raw = Estimate.of(_raw_runtimes(plan, samples, step))
        exact_value = None
        if exact:
            step("exact E[tau]")
            value = plan.exact_expected_raw_runtime(model.distribution)  # None: not available
            exact_value = None if value is None else value * model.scale
        probability = None
        if options.deadline is not None:
            step("P(tau <= T)")
            probability = plan.completion_probability(
                options.deadline / model.scale, model.distribution
            )
        out.append(
            Prediction(name, plan, raw, raw.scaled(model.scale), exact_value, "", probability)
        )
    return out


def _raw_runtimes(plan: Plan | PartialPlan, samples: np.ndarray, step: Progress) -> np.ndarray:
    """plan.raw_runtime(samples), shape (K,), EVALUATION_ROWS draws at a time (the same values:
    every row is its own realisation)."""
    out = np.empty(samples.shape[0])
    for start in range(0, samples.shape[0], EVALUATION_ROWS):
        step(f"R on {samples.shape[0]} draws", start, samples.shape[0])
        stop = start + EVALUATION_ROWS
        out[start:stop] = plan.raw_runtime(samples[start:stop])
    return out


def finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity or NaN: map them to null."""
    return value if value is not None and math.isfinite(value) else None
