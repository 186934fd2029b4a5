"""`bcgc calibrate`: measure natural cycle times, fit a shifted exponential, predict, validate.

1. Measure: the uncoded scheme runs in natural mode (no injected delay; real compute under real
   load, e.g. natural.burners, natural.slowdown). Worker n's message of iteration i arrives
   after its work of raw load L, so its cycle time is T_n = send time / ((M C / N) L), in
   seconds per unit of raw load (time scale 1).
2. Fit: the shifted exponential by the unbiased MLE (t0 = min - theta / n, 1/mu = theta =
   n (mean - min) / (n - 1)); fit quality as the Kolmogorov-Smirnov distance of the sample to the
   fitted law (its p-value is optimistic: the parameters come from the same sample).
3. Measure the system (master/system_calibrate.py): the same natural run also runs a probe plan
   (one block per level); kernel and decode costs are timed, per-message costs and latency
   fitted to both plans' per-block times, per-worker compute laws fitted to the uncoded run;
   written to calibration.toml (load it with --calibration FILE).
4. Predict and validate: the schemes (and bcgc-sys-opt, planned on the system model) are planned
   for the fitted law, run in natural mode, and their measured runtimes compared with the paper
   model's E[runtime] and exact distribution and with the system model's (Monte Carlo).
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
from bcgc_sim.model.costs import SystemCosts
from bcgc_sim.model.machine import system_runtimes
from bcgc_sim.model.plans import BlockPlan
from bcgc_sim.model.stragglers import ShiftedExponential
from bcgc_sim.predict import evaluation_samples
from bcgc_sim.results import json_safe
from bcgc_sim.validation import load_run, model_cdf

from . import system_calibrate
from .runner import run_testbed

SYSTEM_SAMPLES = 400  # simulated iterations per scheme for the system model's prediction
QUANTUM_S = 0.004  # the scheduler's time slice on the development VM (HZ = 250)
ITERATION_S = 200e-6  # the master's book-keeping between iterations (an estimate)


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
            if r["status"] in ("used", "late") and scheme in (None, r["scheme"])
        ]
    workers = sorted({int(r["worker"]) for r in rows})
    times = {
        w: [float(r["send_s"]) / (scale * coordinates) for r in rows if int(r["worker"]) == w]
        for w in workers
    }
    return np.concatenate([np.array(v) for v in times.values()]), [
        float(np.mean(times[w])) for w in workers
    ]


def probe_plan(n_workers: int, coordinates: int) -> BlockPlan:
    """One block per redundancy level, equal widths: many messages, every forward pass."""
    x = [coordinates // n_workers] * n_workers
    x[0] += coordinates - sum(x)
    return BlockPlan("probe", tuple(x))


def measure_system(config: Config, folder: Path, log=print) -> SystemCosts:
    """The costs of this machine (master/system_calibrate.py) from the measure run in `folder`."""
    run = load_run(folder)
    rows, coordinates, n = run.model.samples, run.model.coordinates, run.model.n_workers
    log("timing kernels and decoding; fitting message costs to the measured blocks")
    costs = SystemCosts(
        **system_calibrate.measure_kernels(rows, coordinates, n, config.seed),
        **system_calibrate.measure_decode(n, coordinates, config.seed),
        cores=system_calibrate.machine_cores(),
        quantum_s=QUANTUM_S,
        iteration_s=ITERATION_S,
    )
    machine = config.machine(costs)
    runs = [(run.plans["uncoded"], folder, "uncoded"), (run.plans["probe"], folder, "probe")]
    costs = system_calibrate.fit_messages(runs, rows, coordinates, costs, machine)
    return system_calibrate.fit_worker_laws(
        run.plans["uncoded"], folder, rows, coordinates, costs, machine
    )


def calibrate(config_path: str | None, overrides: list[str], folder: Path, log=print) -> dict:
    natural = [*overrides, "run.mode='natural'", "run.time_scale=1.0"]
    first = load_config(config_path, [*natural, "run.schemes=['uncoded']"])
    log(f"measuring: uncoded and a probe plan, {first.run.iterations} iterations, natural mode")
    run_testbed(
        first,
        folder / "measure",
        log=lambda text: None,
        plans=lambda model: {
            "uncoded": BlockPlan("uncoded", (model.coordinates,) + (0,) * (model.n_workers - 1)),
            "probe": probe_plan(model.n_workers, model.coordinates),
        },
    )
    measured = load_run(folder / "measure")
    values, worker_means = measured_cycle_times(
        folder / "measure", measured.model.scale, measured.model.coordinates, "uncoded"
    )
    fit = fit_shifted_exponential(values, worker_means)
    costs = measure_system(first, folder / "measure", log)
    calibration = save_costs(
        costs,
        folder / "calibration.toml",
        {"setting": " ".join(overrides) or "defaults", "unit": "seconds"},
    )
    law = [
        "straggler.distribution='shifted-exponential'",
        f"straggler.rate={fit.rate!r}",
        f"straggler.shift={fit.shift!r}",
    ]
    second: Config = load_config(config_path, [*natural, *law])
    schemes = [
        *second.run.schemes,
        *(["bcgc-sys-opt"] if "bcgc-sys-opt" not in second.run.schemes else []),
    ]
    second = load_config(config_path, [*natural, *law, f"run.schemes={schemes!r}"])
    log(
        f"fitted mu = {fit.rate:.4g}, t0 = {fit.shift:.4g}; running {', '.join(second.run.schemes)}"
    )
    run_testbed(second, folder / "validate", log=lambda text: None, costs=costs)
    run = load_run(folder / "validate")
    samples = evaluation_samples(run.model, second.seed, 50_000)
    machine = second.machine(costs)
    schemes = {}
    for name, plan in run.plans.items():
        measured_s = np.array(
            [float(r["measured_s"]) for r in run.iterations if r["scheme"] == name]
        )
        predicted = float(np.mean(plan.raw_runtime(samples))) * run.seconds_per_raw_unit()
        ks = stats.kstest(measured_s, model_cdf(run, plan))
        system = system_runtimes(
            plan,
            run.model.samples,
            run.model.coordinates,
            costs,
            machine,
            SYSTEM_SAMPLES,
            second.seed,
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
            "plan": plan.describe(),
        }
    result = {
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
    (folder / "calibration.json").write_text(json.dumps(json_safe(result), indent=2))
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
    lines.append(
        "paper = the papers' model with the fitted law; system = the calibrated system model "
        "(ratio = measured / predicted; KS distance of the measured runtimes to each model)"
    )
    lines.append(f"calibration: {result['calibration_file']}  (use it with --calibration FILE)")
    lines.append(f"results: {result['output']}, figure: {result['figure']}")
    return "\n".join(lines)
