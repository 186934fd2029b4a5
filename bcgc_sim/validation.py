"""Predictions against measurements for a finished run (the `bcgc validate` command).

Reads a run folder (bcgc_sim.results) and, per scheme, compares the measured runtimes with the
predictions for the same cycle times (paired, per iteration) and with the model's exact runtime
distribution (Kolmogorov-Smirnov distance of the measured sample to the model's CDF, which is
P(R <= t / (time_scale * M C / N)) from the exact completion probability, spec §6; for the
partial-gc plans a Monte-Carlo estimate, bcgc_sim/partial/plan.py).

With a deadline T (model time units, `bcgc validate --deadline T`), also the measured fraction of
iterations finishing by T * time_scale seconds with a 95% Wilson score interval, beside the
fraction of the predicted runtimes (same cycle times) and the model's exact P(tau <= T).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from .config import Config, config_from_dict
from .errors import UserError
from .intervals import CONFIDENCE, wilson_interval
from .model.plans import Plan
from .model.system import SystemModel
from .schemes import plan_from_dict


@dataclass(frozen=True)
class RunRecord:
    """What a run folder holds, rebuilt: config, model, plans, time scale, iteration rows."""

    folder: Path
    meta: dict
    config: Config
    model: SystemModel
    plans: dict[str, Plan]
    time_scale: float  # seconds per model time unit
    iterations: list[dict]

    def seconds_per_raw_unit(self) -> float:
        return self.time_scale * self.model.scale

    def rows(self, name: str, table: str) -> list[dict]:
        with open(self.folder / table) as handle:
            return [r for r in csv.DictReader(handle) if r["scheme"] == name]


def read_folder(folder: Path, meta: str, table: str, kind: str) -> tuple[dict, list[dict]]:
    """The JSON file `meta` and the CSV rows of `table` in `folder`, a `kind` folder ("run",
    "sweep"). Raises UserError naming a missing file or what could not be read."""
    try:
        data = json.loads((folder / meta).read_text())
        with open(folder / table) as handle:
            return data, list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        missing = Path(exc.filename).name
        raise UserError(f"{folder} is not a {kind} folder: {missing} is missing") from None
    except json.JSONDecodeError:
        raise UserError(f"{folder}/{meta} is not valid JSON") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the {kind} in {folder}: {exc}") from None


def load_run(folder: str | Path) -> RunRecord:
    folder = Path(folder)
    meta, iterations = read_folder(folder, "run.json", "iterations.csv", "run")
    try:
        config = config_from_dict(meta["config"])
        data = meta["data"]
        model = config.system_model(int(data["coordinates"]), int(data["rows"]))
        plans = {name: plan_from_dict(p) for name, p in meta["plans"].items()}
        time_scale = float(meta["time_scale_s_per_unit"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        status = meta.get("status", "?") if isinstance(meta, dict) else "?"
        raise UserError(
            f"{folder}/run.json does not describe a run that started (status: {status}; "
            f"{type(exc).__name__}: {exc})"
        ) from None
    for name, loads in meta.get("slot_loads", {}).items():  # run.cost_model = "system"
        from .model.emulation import EmulatedPlan
        from .model.layout import layout_for

        stragglers = tuple(s.stragglers for s in layout_for(plans[name], int(data["rows"])).slots)
        plans[name] = EmulatedPlan(plans[name], tuple(loads), stragglers)
    return RunRecord(folder, meta, config, model, plans, time_scale, iterations)


@dataclass(frozen=True)
class DeadlineCheck:
    """Iterations of one scheme finishing by the deadline, measured vs predicted vs the model."""

    deadline: float  # T, model time units
    deadline_s: float  # T * time_scale
    hits: int  # iterations with measured_s <= deadline_s
    iterations: int
    measured_ci: tuple[float, float]  # Wilson interval at CONFIDENCE
    predicted_fraction: float | None  # of the predicted runtimes, same cycle times (None: natural)
    completion_probability: float  # exact P(tau <= T) of the plan

    @property
    def measured_fraction(self) -> float:
        return self.hits / self.iterations

    @property
    def consistent(self) -> bool:
        """The model's probability lies inside the interval for the measured fraction."""
        lo, hi = self.measured_ci
        return lo <= self.completion_probability <= hi


def deadline_check(
    run: RunRecord, plan: Plan, measured: np.ndarray, predicted: np.ndarray, deadline: float
) -> DeadlineCheck:
    deadline_s = deadline * run.time_scale
    hits = int(np.count_nonzero(measured <= deadline_s))
    known = predicted[~np.isnan(predicted)]  # NaN: nothing predicted (natural stragglers)
    probability = plan.completion_probability(deadline / run.model.scale, run.model.distribution)
    return DeadlineCheck(
        deadline,
        deadline_s,
        hits,
        int(measured.size),
        wilson_interval(hits, int(measured.size)),
        float(np.mean(known <= deadline_s)) if known.size else None,
        float(probability),
    )


def check_deadline(deadline: float | None) -> float | None:
    """A deadline from the command line or the config: None (no deadline) or a positive number."""
    if deadline is None or deadline == 0:
        return None
    if not (deadline > 0 and math.isfinite(deadline)):
        raise UserError(
            f"the deadline must be a positive number of model time units, got {deadline}"
        )
    return float(deadline)


@dataclass(frozen=True)
class SchemeValidation:
    """Measured vs predicted runtimes of one scheme (seconds)."""

    scheme: str
    measured: np.ndarray  # per iteration
    predicted: np.ndarray  # per iteration, same cycle times
    ks_distance: float  # sup |F_measured - F_model|
    ks_pvalue: float
    deadline: DeadlineCheck | None = None  # with a deadline T

    @property
    def ratio(self) -> float:
        return float(self.measured.mean() / self.predicted.mean())

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.measured / self.predicted))

    def typical_iteration(self) -> int:
        """The iteration (index) whose measured / predicted ratio is nearest the median ratio;
        with nothing predicted (natural mode), whose measured runtime is nearest the median."""
        ratio = self.measured / self.predicted
        if np.isfinite(ratio).all():
            values, centre = ratio, self.median_ratio
        else:
            values, centre = self.measured, float(np.median(self.measured))
        return int(np.argmin(np.abs(values - centre)))

    def quantiles(self, q: float) -> tuple[float, float]:
        return float(np.quantile(self.measured, q)), float(np.quantile(self.predicted, q))


def model_cdf(run: RunRecord, plan: Plan):
    """t (seconds) -> P(runtime <= t) under the model, vectorised."""
    unit = run.seconds_per_raw_unit()
    law = run.model.distribution

    def cdf(t):
        t = np.atleast_1d(np.asarray(t, dtype=float))
        return np.array([plan.completion_probability(v / unit, law) if v > 0 else 0.0 for v in t])

    return cdf


def validate_run(run: RunRecord, deadline: float | None = None) -> list[SchemeValidation]:
    """Per scheme with finished iterations; `deadline` T (model time units) adds a DeadlineCheck."""
    deadline = check_deadline(deadline)
    out = []
    for name, plan in run.plans.items():
        rows = [r for r in run.iterations if r["scheme"] == name]
        if not rows:
            continue  # the run stopped before this scheme
        measured = np.array([float(r["measured_s"]) for r in rows])
        predicted = np.array([float(r["predicted_s"]) for r in rows])
        ks = stats.kstest(measured, model_cdf(run, plan))
        check = (
            deadline_check(run, plan, measured, predicted, deadline)
            if deadline is not None
            else None
        )
        out.append(
            SchemeValidation(
                name, measured, predicted, float(ks.statistic), float(ks.pvalue), check
            )
        )
    if not out:
        raise UserError(f"{run.folder} holds no finished iteration")
    return out


def format_table(results: list[SchemeValidation]) -> str:
    w = max([14, *(len(r.scheme) for r in results)])
    header = (
        f"{'scheme':<{w}} {'iters':>5} {'mean meas.':>10} {'mean pred.':>10} {'ratio':>6} "
        f"{'p50 meas.':>9} {'p50 pred.':>9} {'p95 meas.':>9} {'p95 pred.':>9} {'KS':>5} {'KS p':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        p50, p95 = r.quantiles(0.5), r.quantiles(0.95)
        lines.append(
            f"{r.scheme:<{w}} {r.measured.size:>5} {r.measured.mean():>10.4f} {r.predicted.mean():>10.4f} "
            f"{r.ratio:>6.3f} {p50[0]:>9.4f} {p50[1]:>9.4f} {p95[0]:>9.4f} {p95[1]:>9.4f} "
            f"{r.ks_distance:>5.2f} {r.ks_pvalue:>6.2f}"
        )
    lines.append(
        "seconds; ratio = mean measured / mean predicted (same cycle times); KS = distance of the"
    )
    lines.append("measured runtimes to the model's exact runtime distribution, with its p-value")
    if any(r.scheme.startswith("partial-gc") for r in results):
        lines.append(
            "(partial-gc*: the model CDF is a Monte-Carlo estimate, and measured runtimes include "
            "the COMBINE/UPLOAD round trip the model does not have)"
        )
    checks = [(r.scheme, r.deadline) for r in results if r.deadline is not None]
    if checks:
        lines += ["", *format_deadline_table(checks)]
    return "\n".join(lines)


def format_deadline_table(checks: list[tuple[str, DeadlineCheck]]) -> list[str]:
    first = checks[0][1]
    level = f"{CONFIDENCE:.0%}"
    w = max([14, *(len(scheme) for scheme, _ in checks)])
    header = (
        f"{'scheme':<{w}} {'iters':>5} {'by T':>5} {'measured':>8} {level + ' Wilson CI':>17} "
        f"{'pred. same T':>12} {'P(tau<=T)':>9}  consistent"
    )
    lines = [
        f"deadline T = {first.deadline:g} model time units = {first.deadline_s:.4f} s",
        header,
        "-" * len(header),
    ]
    for scheme, c in checks:
        lo, hi = c.measured_ci
        predicted = (
            f"{c.predicted_fraction:>12.3f}" if c.predicted_fraction is not None else f"{'-':>12}"
        )
        lines.append(
            f"{scheme:<{w}} {c.iterations:>5} {c.hits:>5} {c.measured_fraction:>8.3f} "
            f"{f'[{lo:.3f}, {hi:.3f}]':>17} {predicted} {c.completion_probability:>9.3f}  "
            f"{'yes' if c.consistent else 'NO'}"
        )
    lines.append(
        "fractions of iterations with runtime <= T: measured (with its Wilson score interval) and"
    )
    lines.append(
        "predicted for the same cycle times; P(tau<=T) = the model's exact completion probability;"
    )
    lines.append("consistent = P(tau<=T) lies inside the interval")
    return lines


def to_json(results: list[SchemeValidation]) -> dict:
    def num(v: float) -> float | None:
        return v if math.isfinite(v) else None

    return {
        "schemes": {
            r.scheme: {
                "iterations": int(r.measured.size),
                "measured_mean_s": num(float(r.measured.mean())),
                "predicted_mean_s": num(float(r.predicted.mean())),
                "ratio": num(r.ratio),
                "median_ratio": num(r.median_ratio),
                "measured_p50_s": r.quantiles(0.5)[0],
                "predicted_p50_s": r.quantiles(0.5)[1],
                "measured_p95_s": r.quantiles(0.95)[0],
                "predicted_p95_s": r.quantiles(0.95)[1],
                "ks_distance": num(r.ks_distance),
                "ks_pvalue": num(r.ks_pvalue),
            }
            | _deadline_json(r.deadline)
            for r in results
        }
    }


def _deadline_json(c: DeadlineCheck | None) -> dict:
    if c is None:
        return {}
    return {
        "deadline": c.deadline,
        "deadline_s": c.deadline_s,
        "measured_fraction": c.measured_fraction,
        "measured_ci": list(c.measured_ci),
        "measured_ci_method": f"wilson {CONFIDENCE:g}",
        "predicted_fraction": c.predicted_fraction,
        "completion_probability": c.completion_probability,
        "consistent": c.consistent,
    }
