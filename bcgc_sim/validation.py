"""Predictions against measurements for a finished run (the `bcgc validate` command).

Reads a run folder (bcgc_sim.results) and, per scheme, compares the measured runtimes with the
predictions for the same cycle times (paired, per iteration) and with the model's exact runtime
distribution (Kolmogorov-Smirnov distance of the measured sample to the model's CDF, which is
P(R <= t / (time_scale * M C / N)) from the exact completion probability, spec §6).
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
from .model import SystemModel
from .plans import Plan, plan_from_dict


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


def load_run(folder: str | Path) -> RunRecord:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "run.json").read_text())
        with open(folder / "iterations.csv") as handle:
            iterations = list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise UserError(
            f"{folder} is not a run folder: {Path(exc.filename).name} is missing"
        ) from None
    except json.JSONDecodeError:
        raise UserError(f"{folder}/run.json is not valid JSON") from None
    config = config_from_dict(meta["config"])
    data = meta["data"]
    model = SystemModel(
        config.cluster.workers, int(data["coordinates"]), int(data["rows"]),
        config.model.cycles, config.distribution(),
    )  # fmt: skip
    plans = {name: plan_from_dict(p) for name, p in meta["plans"].items()}
    return RunRecord(
        folder, meta, config, model, plans, float(meta["time_scale_s_per_unit"]), iterations
    )


@dataclass(frozen=True)
class SchemeValidation:
    """Measured vs predicted runtimes of one scheme (seconds)."""

    scheme: str
    measured: np.ndarray  # per iteration
    predicted: np.ndarray  # per iteration, same cycle times
    ks_distance: float  # sup |F_measured - F_model|
    ks_pvalue: float

    @property
    def ratio(self) -> float:
        return float(self.measured.mean() / self.predicted.mean())

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.measured / self.predicted))

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


def validate_run(run: RunRecord) -> list[SchemeValidation]:
    out = []
    for name, plan in run.plans.items():
        rows = [r for r in run.iterations if r["scheme"] == name]
        if not rows:
            continue  # the run stopped before this scheme
        measured = np.array([float(r["measured_s"]) for r in rows])
        predicted = np.array([float(r["predicted_s"]) for r in rows])
        ks = stats.kstest(measured, model_cdf(run, plan))
        out.append(
            SchemeValidation(name, measured, predicted, float(ks.statistic), float(ks.pvalue))
        )
    if not out:
        raise UserError(f"{run.folder} holds no finished iteration")
    return out


def format_table(results: list[SchemeValidation]) -> str:
    header = (
        f"{'scheme':<14} {'iters':>5} {'mean meas.':>10} {'mean pred.':>10} {'ratio':>6} "
        f"{'p50 meas.':>9} {'p50 pred.':>9} {'p95 meas.':>9} {'p95 pred.':>9} {'KS':>5} {'KS p':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        p50, p95 = r.quantiles(0.5), r.quantiles(0.95)
        lines.append(
            f"{r.scheme:<14} {r.measured.size:>5} {r.measured.mean():>10.4f} {r.predicted.mean():>10.4f} "
            f"{r.ratio:>6.3f} {p50[0]:>9.4f} {p50[1]:>9.4f} {p95[0]:>9.4f} {p95[1]:>9.4f} "
            f"{r.ks_distance:>5.2f} {r.ks_pvalue:>6.2f}"
        )
    lines.append(
        "seconds; ratio = mean measured / mean predicted (same cycle times); KS = distance of the"
    )
    lines.append("measured runtimes to the model's exact runtime distribution, with its p-value")
    return "\n".join(lines)


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
                "measured_p50_s": r.quantiles(0.5)[0], "predicted_p50_s": r.quantiles(0.5)[1],
                "measured_p95_s": r.quantiles(0.95)[0], "predicted_p95_s": r.quantiles(0.95)[1],
                "ks_distance": num(r.ks_distance),
                "ks_pvalue": num(r.ks_pvalue),
            }
            for r in results
        }
    }  # fmt: skip
