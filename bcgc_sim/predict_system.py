"""Predictions of the calibrated system model: `bcgc predict --model system` and the system
columns of `bcgc validate` for natural-mode runs (seconds; model/machine.py). Beside
predict.py, which does the same for the papers' model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .config import Config
from .errors import UserError
from .model.costs import SystemCosts
from .model.machine import SYSTEM_SAMPLES, system_runtimes
from .model.plans import Plan
from .partial.plan import PartialPlan
from .schemes import build_plan

PARTIAL_NOTE = "the system model covers block plans and Tandon's scheme, not partial-gc"


@dataclass(frozen=True)
class SystemPrediction:
    scheme: str
    plan: Plan | None
    runtimes: np.ndarray | None  # seconds, one per simulated iteration
    error: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(self.runtimes))

    @property
    def stderr(self) -> float:
        return float(np.std(self.runtimes, ddof=1) / math.sqrt(self.runtimes.size))

    def completion_probability(self, deadline_s: float) -> float:
        """P(runtime <= deadline_s), the fraction of simulated iterations."""
        return float(np.mean(self.runtimes <= deadline_s))


def predict_system(
    config: Config, schemes: list[str], costs: SystemCosts
) -> list[SystemPrediction]:
    """Plan every scheme (bcgc-sys-opt on the system model) and simulate it on common random
    numbers; a scheme that cannot be planned is reported with its reason."""
    model = config.system_model()
    options = config.scheme_options(costs)
    machine = config.machine(costs)
    out = []
    for name in schemes:
        try:
            plan = build_plan(name, model, options)
        except UserError as exc:
            out.append(SystemPrediction(name, None, None, str(exc)))
            continue
        if isinstance(plan, PartialPlan):
            out.append(SystemPrediction(name, plan, None, PARTIAL_NOTE))
            continue
        runtimes = system_runtimes(
            plan, model.samples, model.coordinates, costs, machine, None, config.seed
        )
        out.append(SystemPrediction(name, plan, runtimes))
    return out


def format_system_predictions(
    results: list[SystemPrediction], config: Config, costs: SystemCosts
) -> str:
    m = config.model
    burners = list(config.natural.burners) or "none"
    lines = [
        f"system model: N = {config.cluster.workers} workers on {costs.cores or 'dedicated'} cores, "
        f"M = {m.samples}, L = {m.coordinates}, burners {burners}, slowdown "
        f"{list(config.natural.slowdown) or 'none'}; consecutive simulated iterations per "
        f"scheme until the standard error is 2% of the mean (at most {SYSTEM_SAMPLES})",
    ]
    deadline = config.predict.deadline
    column = f" {'P(t<=T)':>8}" if deadline else ""
    w = max([14, *(len(r.scheme) for r in results)])
    header = (
        f"{'scheme':<{w}} {'E[t] s':>10} {'+- stderr':>10} {'p50 s':>9} {'p95 s':>9}{column}  plan"
    )
    lines += [header, "-" * len(header)]
    for r in results:
        if r.runtimes is None:
            lines.append(f"{r.scheme:<{w}} {'n/a':>10}  {r.error}")
            continue
        p50, p95 = np.quantile(r.runtimes, [0.5, 0.95])
        extra = f" {r.completion_probability(deadline):>8.3f}" if deadline else ""
        lines.append(
            f"{r.scheme:<{w}} {r.mean:>10.5f} {r.stderr:>10.2g} {p50:>9.5f} {p95:>9.5f}{extra}  "
            f"{r.plan.describe()[:50]}"
        )
    if deadline:
        lines.append(f"P(t<=T): fraction of simulated iterations done by T = {deadline:g} s")
    return "\n".join(lines)


def system_json(results: list[SystemPrediction], config: Config) -> dict:
    out = {}
    for r in results:
        if r.runtimes is None:
            out[r.scheme] = {"error": r.error}
            continue
        x = list(getattr(r.plan, "x", []))
        out[r.scheme] = {
            "expected_runtime_s": r.mean,
            "stderr_s": r.stderr,
            "iterations": int(r.runtimes.size),
            "x": x,
        }
        if config.predict.deadline:
            out[r.scheme]["completion_probability"] = r.completion_probability(
                config.predict.deadline
            )
    return {"schemes": out, "unit": "seconds", "model": "system", "most_samples": SYSTEM_SAMPLES}


def system_validation(run, costs: SystemCosts) -> dict[str, dict]:
    """Per scheme of a natural run: the system model's mean, measured / predicted, KS distance."""
    machine = run.config.machine(costs)
    out = {}
    for name, plan in run.plans.items():
        measured = np.array([float(r["measured_s"]) for r in run.iterations if r["scheme"] == name])
        if measured.size == 0 or isinstance(plan, PartialPlan):
            continue
        simulated = system_runtimes(
            plan,
            run.model.samples,
            run.model.coordinates,
            costs,
            machine,
            SYSTEM_SAMPLES,
            run.config.seed,
        )
        out[name] = {
            "system_predicted_mean_s": float(simulated.mean()),
            "system_ratio": float(measured.mean() / simulated.mean()),
            "system_ks_distance": float(stats.ks_2samp(measured, simulated).statistic),
        }
    return out


def format_system_validation(system: dict[str, dict]) -> str:
    lines = ["", "against the calibrated system model (natural mode):"]
    lines.append(f"{'scheme':<14} {'system s':>9} {'ratio':>6} {'KS':>5}")
    for name, s in system.items():
        lines.append(
            f"{name:<14} {s['system_predicted_mean_s']:>9.5f} {s['system_ratio']:>6.3f} "
            f"{s['system_ks_distance']:>5.2f}"
        )
    return "\n".join(lines)
