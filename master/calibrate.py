"""`bcgc calibrate`: measure the machine, fit the papers' law, predict with both models, validate.

1. Measure (master/system_calibrate.py): three probe plans (uncoded among them) run in natural
   mode (no injected delay; real compute under real load, e.g. natural.burners,
   natural.slowdown) on an instrumented cluster that reads every thread's CPU; with the timed
   numpy kernels and a transport ping-pong they give every cost of the system model, written
   to calibration.toml (load it with --calibration FILE).
2. Fit the papers' law: worker n's uncoded message of iteration i arrives after its work of raw
   load L, so its cycle time is T_n = send time / ((M C / N) L), in seconds per unit of raw load
   (time scale 1); the shifted exponential by the unbiased MLE (t0 = min - theta / n, 1/mu =
   theta = n (mean - min) / (n - 1)); fit quality as the Kolmogorov-Smirnov distance of the
   sample to the fitted law (its p-value is optimistic: the parameters come from the same
   sample).
3. Validate: the schemes, planned for the fitted law, and bcgc-sys-opt, planned on the system
   model, run side by side in alternating rounds (master/rounds.py); their measured runtimes
   are compared with the papers' E[runtime] and exact distribution and with the system model's
   simulated iterations (mean, KS distance).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bcgc_sim.calibration import save_costs
from bcgc_sim.config import Config, load_config
from bcgc_sim.errors import UserError
from bcgc_sim.model.machine import system_runtimes
from bcgc_sim.model.stragglers import ShiftedExponential
from bcgc_sim.prediction import evaluation_samples
from bcgc_sim.results import json_safe, write_atomically
from bcgc_sim.schemes import build_plan
from bcgc_sim.validation import load_run

from .rounds import SEPARATOR, run_rounds
from .system_calibrate import (
    PROBE_UNCODED,
    fit_costs,
    machine_costs,
    measure_plans,
    plan_costs,
    probe_plans,
    resolved_transport,
    write_measurements,
)

SYSTEM_SAMPLES = 400  # simulated iterations per scheme for the system model's prediction
ROUND_ITERATIONS = 10  # iterations per scheme and round of the validation (schemes alternate)
SYS_OPT = "bcgc-sys-opt"


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
    folder: Path, scale: float, coordinates: int, scheme: str | None = None
) -> tuple[np.ndarray, list[float]]:
    """Cycle times of the uncoded run in `folder` (of `scheme` if given), and each worker's mean."""
    with open(folder / "messages.csv") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r["status"] in ("used", "late") and scheme in (None, r["scheme"].split(SEPARATOR)[0])
        ]
    workers = sorted({int(r["worker"]) for r in rows})
    times = {
        w: [float(r["send_s"]) / (scale * coordinates) for r in rows if int(r["worker"]) == w]
        for w in workers
    }
    return np.concatenate([np.array(v) for v in times.values()]), [
        float(np.mean(times[w])) for w in workers
    ]


def paper_cdf(plan, model):
    """t (seconds, time scale 1) -> P(runtime <= t) under the papers' model, vectorised."""

    def cdf(t):
        t = np.atleast_1d(np.asarray(t, dtype=float))
        return np.array(
            [
                plan.completion_probability(v / model.scale, model.distribution) if v > 0 else 0.0
                for v in t
            ]
        )

    return cdf


def fitted_law(folder: Path) -> Fit:
    """The shifted exponential of the uncoded probe's natural cycle times in `folder`."""
    run = load_run(folder)
    values, worker_means = measured_cycle_times(
        folder, run.model.scale, run.model.coordinates, PROBE_UNCODED
    )
    return fit_shifted_exponential(values, worker_means)


def calibrate(config_path: str | None, overrides: list[str], folder: Path, log=print) -> dict:
    natural = [*overrides, "run.mode='natural'", "run.time_scale=1.0"]
    first = load_config(config_path, natural)
    rounds = max(2, first.run.iterations // ROUND_ITERATIONS)
    log("timing the numpy kernels, the decoder's sum and the transport")
    base = machine_costs(first)
    probes = probe_plans(first.cluster.workers, first.model.coordinates)
    quick = max(2, rounds // 2)  # bcgc-sys-opt is planned on these: fewer rounds were noisy
    log(f"measuring the probe plans: {quick} rounds of {ROUND_ITERATIONS} iterations")
    first_costs = fit_costs(
        base, measure_plans(first, folder / "measure", probes, quick, ROUND_ITERATIONS), first
    )
    fit = fitted_law(folder / "measure")
    law = [
        "straggler.distribution='shifted-exponential'",
        f"straggler.rate={fit.rate!r}",
        f"straggler.shift={fit.shift!r}",
    ]
    second: Config = load_config(config_path, [*natural, *law])
    names = [*second.run.schemes, *([] if SYS_OPT in second.run.schemes else [SYS_OPT])]
    model = second.system_model()
    options = second.scheme_options(first_costs)
    plans = {name: build_plan(name, model, options) for name in names}
    log(
        f"fitted mu = {fit.rate:.4g}, t0 = {fit.shift:.4g}; running {', '.join(names)} and the "
        f"probe plans in {rounds} alternating rounds of {ROUND_ITERATIONS} iterations"
    )
    measured = run_rounds(
        second, folder / "validate", {**plans, **probes}, rounds, ROUND_ITERATIONS
    )
    probe_runs = {name: measured.pop(name) for name in probes}
    probe_costs = {name: plan_costs(m) for name, m in probe_runs.items()}
    write_measurements(probe_costs, folder / "validate" / "cpu.json")
    costs = fit_costs(base, probe_costs, second)
    calibration = save_costs(
        costs,
        folder / "calibration.toml",
        {
            "setting": " ".join(overrides) or "defaults",
            "transport": resolved_transport(second.cluster.transport),
            "unit": "seconds",
        },
    )
    samples = evaluation_samples(model, second.seed, 50_000)
    machine = second.machine(costs)
    unit = model.scale  # seconds per raw unit at time scale 1
    schemes = {}
    for name, m in measured.items():
        plan, measured_s = m.plan, m.runtimes
        predicted = float(np.mean(plan.raw_runtime(samples))) * unit
        ks = stats.kstest(measured_s, paper_cdf(plan, model))
        system = system_runtimes(
            plan, model.samples, model.coordinates, costs, machine, SYSTEM_SAMPLES, second.seed
        )
        schemes[name] = {
            "iterations": int(measured_s.size),
            "measured_mean_s": float(measured_s.mean()),
            "predicted_mean_s": predicted,
            "ratio": float(measured_s.mean()) / predicted,
            "ks_distance": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
            "system_predicted_mean_s": float(system.mean()),
            "system_ratio": float(measured_s.mean()) / float(system.mean()),
            "system_ks_distance": float(stats.ks_2samp(measured_s, system).statistic),
            "measured_median_round_s": m.median_round,
            "round_spread": m.round_spread,
            "system_median_ratio": m.median_round / float(system.mean()),
            "rounds_kept": int(m.kept.sum()),
            "rounds": int(m.kept.size),
            "foreign_load_max": float(m.foreign.max()),
            "plan": plan.describe(),
        }
    machine = second.machine(costs)
    probes_out = {
        name: {
            "measured_mean_s": m.mean,
            "measured_median_round_s": m.median_round,
            "round_spread": m.round_spread,
            "plan": m.plan.describe(),
            "system_predicted_mean_s": float(
                system_runtimes(
                    m.plan,
                    model.samples,
                    model.coordinates,
                    costs,
                    machine,
                    SYSTEM_SAMPLES,
                    second.seed,
                ).mean()
            ),
        }
        for name, m in probe_runs.items()
    }
    result = {
        "probes": probes_out,
        "fit": {
            "rate": fit.rate,
            "shift": fit.shift,
            "samples": fit.samples,
            "ks_distance": fit.ks_distance,
            "ks_pvalue": fit.ks_pvalue,
            "worker_mean_cycle_time": fit.worker_means,
            "unit": "seconds per unit of raw load (M C / N coordinate-subsets)",
        },
        "schemes": schemes,
        "calibration_file": str(calibration),
        "output": str(folder),
    }
    from bcgc_sim.plots import plot_calibration

    result["figure"] = str(plot_calibration(schemes, folder / "calibration.png"))
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
        f"{'scheme':<14} {'iters':>5} {'measured s':>11} {'paper s':>9} {'ratio':>6} {'KS':>5} "
        f"{'system s':>9} {'ratio':>6} {'KS':>5}",
    ]
    for name, s in result["schemes"].items():
        lines.append(
            f"{name:<14} {s['iterations']:>5} {s['measured_mean_s']:>11.4f} {s['predicted_mean_s']:>9.4f} "
            f"{s['ratio']:>6.3f} {s['ks_distance']:>5.2f} {s['system_predicted_mean_s']:>9.4f} "
            f"{s['system_ratio']:>6.3f} {s['system_ks_distance']:>5.2f}"
        )
    probes = ", ".join(
        f"{k} {1e3 * v['measured_mean_s']:.3f}/{1e3 * v['system_predicted_mean_s']:.3f} ms"
        for k, v in result["probes"].items()
    )
    lines.append(f"probe plans, measured/system: {probes}")
    lines.append(
        "paper = the papers' model with the fitted law; system = the calibrated system model "
        "(ratio = measured / predicted; KS distance of the measured runtimes to each model); "
        "schemes and probe plans measured side by side in alternating rounds, each round's "
        "first and last iterations left out"
    )
    lines.append(f"calibration: {result['calibration_file']}  (use it with --calibration FILE)")
    lines.append(f"results: {result['output']}, figure: {result['figure']}")
    return "\n".join(lines)
