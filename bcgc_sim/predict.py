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
from .problems import MemoryNeed
from .schemes import PARTIAL_SCHEMES, SchemeOptions, build_plan


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
    n_workers: int, samples: int, schemes: list[str], storage: int = 0
) -> MemoryNeed:
    """Memory to plan and evaluate `schemes` on `samples` draws of the N cycle times.

    Peaks measured with `bcgc predict` (maximum resident size less that of a tiny run): about
    3.1 to 3.9 arrays of samples x N float64 for the block schemes, 3 arrays of samples x N x
    delta for the partial-gc schemes (delta = partial.storage, at most N; 0 counts as N).
    """
    partial = any(name in PARTIAL_SCHEMES for name in schemes)
    depth = (storage or n_workers) if partial else 1
    arrays = 3 if partial else 4
    what = f"the Monte Carlo draws ({samples} x {n_workers} cycle times"
    what += f" x {depth} chunks, for partial-gc)" if partial else ")"
    fix = "lower cluster.workers or predict.samples / optimize.tuning_samples"
    if partial:
        fix += ", or leave the partial-gc schemes out"
    return MemoryNeed(what, arrays * 8 * samples * n_workers * depth, fix)


def predict(
    model: SystemModel, schemes: list[str], options: SchemeOptions, n_samples: int, exact: bool
) -> list[Prediction]:
    """Plan every scheme and estimate its runtime on the same samples.

    With options.deadline = T (model time units) each plan also gets its exact P(tau <= T)
    (spec §6; raw deadline T / (M C / N)), and the deadline schemes can be planned. A scheme
    that cannot be planned under this model (for example E[tau]-minimisers under a failure
    mixture, or a deadline scheme without a deadline) is reported with its reason instead of
    ending the whole prediction.
    """
    samples = evaluation_samples(model, options.seed, n_samples)
    out = []
    for name in schemes:
        try:
            plan = build_plan(name, model, options)
        except UserError as exc:
            out.append(Prediction(name, None, None, None, None, str(exc)))
            continue
        raw = Estimate.of(plan.raw_runtime(samples))
        exact_value = None
        if exact:
            value = plan.exact_expected_raw_runtime(model.distribution)  # None: not available
            exact_value = None if value is None else value * model.scale
        probability = None
        if options.deadline is not None:
            probability = plan.completion_probability(
                options.deadline / model.scale, model.distribution
            )
        out.append(
            Prediction(name, plan, raw, raw.scaled(model.scale), exact_value, "", probability)
        )
    return out


def finite_or_none(value: float | None) -> float | None:
    """JSON has no infinity or NaN: map them to null."""
    return value if value is not None and math.isfinite(value) else None
