"""`bcgc calibrate`: measure natural cycle times, fit a shifted exponential, predict, validate.

1. Measure: the uncoded scheme runs in natural mode (no injected delay; real compute under real
   load, e.g. natural.burners, natural.slowdown). Worker n's message of iteration i arrives
   after its work of raw load L, so its cycle time is T_n = send time / ((M C / N) L), in
   seconds per unit of raw load (time scale 1).
2. Fit: the shifted exponential by the unbiased MLE (t0 = min - theta / n, 1/mu = theta =
   n (mean - min) / (n - 1)); fit quality as the Kolmogorov-Smirnov distance of the sample to the
   fitted law (its p-value is optimistic: the parameters come from the same sample).
3. Predict and validate: the schemes are planned for the fitted law, run in natural mode, and
   their measured runtimes compared with the fitted model's E[runtime] and exact distribution.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bcgc_sim.config import Config, load_config
from bcgc_sim.errors import UserError
from bcgc_sim.model.stragglers import ShiftedExponential
from bcgc_sim.prediction import evaluation_samples
from bcgc_sim.results import json_safe, write_atomically
from bcgc_sim.validation import load_run, model_cdf

from .runner import run_testbed


@dataclass(frozen=True)
class Fit:
    rate: float  # mu, per second-per-unit
    shift: float  # t0, seconds per unit
    samples: int
    ks_distance: float
    ks_pvalue: float
    worker_means: list[float]  # mean cycle time of each worker

    def law(self) -> ShiftedExponential:
        return ShiftedExponential(self.rate, self.shift)


def fit_shifted_exponential(values: np.ndarray, worker_means: list[float]) -> Fit:
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 3:
        raise UserError("calibration needs at least 3 measured cycle times; raise run.iterations")
    low = float(values.min())
    theta = n * (float(values.mean()) - low) / (n - 1)
    if not theta > 0:
        raise UserError("all measured cycle times are equal: nothing to fit")
    shift = max(low - theta / n, 0.0)
    law = ShiftedExponential(1.0 / theta, shift)
    ks = stats.kstest(values, law.cdf)
    return Fit(1.0 / theta, shift, n, float(ks.statistic), float(ks.pvalue), worker_means)


def measured_cycle_times(
    folder: Path, scale: float, coordinates: int
) -> tuple[np.ndarray, list[float]]:
    """Cycle times of the uncoded run in `folder`, and each worker's mean."""
    with open(folder / "messages.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] in ("used", "late")]
    workers = sorted({int(r["worker"]) for r in rows})
    times = {
        w: [float(r["send_s"]) / (scale * coordinates) for r in rows if int(r["worker"]) == w]
        for w in workers
    }
    return np.concatenate([np.array(v) for v in times.values()]), [
        float(np.mean(times[w])) for w in workers
    ]


def calibrate(config_path: str | None, overrides: list[str], folder: Path, log=print) -> dict:
    natural = [*overrides, "run.mode='natural'", "run.time_scale=1.0"]
    first = load_config(config_path, [*natural, "run.schemes=['uncoded']"])
    log(f"measuring cycle times: uncoded, {first.run.iterations} iterations, natural mode")
    run_testbed(first, folder / "measure", log=lambda text: None)
    measured = load_run(folder / "measure")
    values, worker_means = measured_cycle_times(
        folder / "measure", measured.model.scale, measured.model.coordinates
    )
    fit = fit_shifted_exponential(values, worker_means)
    law = [
        "straggler.distribution='shifted-exponential'",
        f"straggler.rate={fit.rate!r}",
        f"straggler.shift={fit.shift!r}",
    ]
    second: Config = load_config(config_path, [*natural, *law])
    log(
        f"fitted mu = {fit.rate:.4g}, t0 = {fit.shift:.4g}; running {', '.join(second.run.schemes)}"
    )
    run_testbed(second, folder / "validate", log=lambda text: None)
    run = load_run(folder / "validate")
    samples = evaluation_samples(run.model, second.seed, 50_000)
    schemes = {}
    for name, plan in run.plans.items():
        measured_s = np.array(
            [float(r["measured_s"]) for r in run.iterations if r["scheme"] == name]
        )
        predicted = float(np.mean(plan.raw_runtime(samples))) * run.seconds_per_raw_unit()
        ks = stats.kstest(measured_s, model_cdf(run, plan))
        schemes[name] = {
            "iterations": int(measured_s.size),
            "measured_mean_s": float(measured_s.mean()),
            "predicted_mean_s": predicted,
            "ratio": float(measured_s.mean()) / predicted,
            "ks_distance": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
        }
    result = {
        "fit": {
            "rate": fit.rate, "shift": fit.shift, "samples": fit.samples,
            "ks_distance": fit.ks_distance, "ks_pvalue": fit.ks_pvalue,
            "worker_mean_cycle_time": fit.worker_means,
            "unit": "seconds per unit of raw load (M C / N coordinate-subsets)",
        },
        "schemes": schemes,
        "output": str(folder),
    }  # fmt: skip
    write_atomically(folder / "calibration.json", json.dumps(json_safe(result), indent=2))
    return result


def format_calibration(result: dict) -> str:
    fit = result["fit"]
    means = np.array(fit["worker_mean_cycle_time"])
    lines = [
        f"fitted shifted exponential: mu = {fit['rate']:.4g} per (s/unit), t0 = {fit['shift']:.4g} s/unit "
        f"from {fit['samples']} cycle times; KS distance {fit['ks_distance']:.3f} (p = {fit['ks_pvalue']:.2g}, "
        "optimistic: parameters fitted on the same sample)",
        f"per-worker mean cycle time: min {means.min():.4g}, max {means.max():.4g} s/unit "
        f"(max/min {means.max() / means.min():.2f}; 1 for i.i.d. workers)",
        f"{'scheme':<14} {'iters':>5} {'measured s':>11} {'predicted s':>12} {'ratio':>6} {'KS':>5} {'KS p':>6}",
    ]
    for name, s in result["schemes"].items():
        lines.append(
            f"{name:<14} {s['iterations']:>5} {s['measured_mean_s']:>11.4f} {s['predicted_mean_s']:>12.4f} "
            f"{s['ratio']:>6.3f} {s['ks_distance']:>5.2f} {s['ks_pvalue']:>6.2f}"
        )
    lines.append(f"results: {result['output']}")
    return "\n".join(lines)
