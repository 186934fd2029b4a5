"""Natural mode: measured runtime against the papers' model and the calibrated system model.

For each setting, `bcgc calibrate` measures this machine (probe plans on an instrumented
cluster, numpy kernels, a transport ping-pong), then runs every scheme and bcgc-sys-opt in
natural mode, side by side in alternating rounds (rounds under the neighbours' load are set
aside). Printed per setting and scheme: the measured median of the kept rounds' means with the rounds'
spread (half their interquartile range, relative) and the plain mean, the paper-predicted mean
(fitted shifted exponential), the system-predicted mean, measured median / system and the KS
distance of the measured runtimes to the system model's simulated ones; then the checks of
issue 16 on the medians: every scheme within 10% of the system prediction, the model's order
where measured figures differ by more than 10%, bcgc-sys-opt within 3% of the best scheme; and
the runs that executed the same plan (uncoded and its probe; bcgc-sys-opt when it chose a
probe's plan) side by side, which differ by noise alone.

    python scripts/bench_system_model.py [--iterations 120] [--settings n8 burner ...]
        [--json results.json] [--figure docs/figures/system_model.png]
    python scripts/bench_system_model.py --replot results.json --figure docs/figures/system_model.png

Run it under the heavy lock, alone on the machine. The README's figure is this script's
--figure output (its --json beside it in docs/).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

from master.calibrate import calibrate

LOCAL_KEYS = ("calibration_file", "output", "figure")  # paths of one run's temporary folder
SETTINGS = {
    "n8": [],
    "burner": ["natural.burners=[1]", "model.samples=4000", "model.coordinates=1000"],
    "n2": ["cluster.workers=2"],
    "wide": ["model.samples=800", "model.coordinates=10000"],
    "slowdown": ["natural.slowdown=[1,1,1,1,1,1,2,3]"],
}


def measured(s: dict) -> float:
    """The measured figure compared: the median of the kept rounds' means (a round under the
    neighbours' load moves it less than the mean); the plain mean for older results."""
    return s.get("measured_median_round_s", s["measured_mean_s"])


def checks(schemes: dict[str, dict]) -> list[str]:
    out = []
    worst = max(abs(measured(s) / s["system_predicted_mean_s"] - 1) for s in schemes.values())
    out.append(f"worst |measured / system - 1| = {worst:.3f} (target <= 0.10)")
    wrong = [
        (a, b)
        for (a, sa), (b, sb) in itertools.combinations(schemes.items(), 2)
        if abs(measured(sa) / measured(sb) - 1) > 0.10
        and (measured(sa) < measured(sb))
        != (sa["system_predicted_mean_s"] < sb["system_predicted_mean_s"])
    ]
    out.append(f"pairs ordered differently (measured gap > 10%): {wrong or 'none'}")
    best = min(measured(s) for s in schemes.values())
    if "bcgc-sys-opt" in schemes:
        ratio = measured(schemes["bcgc-sys-opt"]) / best
        out.append(f"bcgc-sys-opt / best measured = {ratio:.3f} (target <= 1.03)")
        opt = schemes.get("bcgc-opt")
        if opt and measured(opt) > 1.2 * best:
            gain = measured(schemes["bcgc-sys-opt"]) / measured(opt)
            out.append(
                f"bcgc-opt is {measured(opt) / best:.2f}x the best; "
                f"bcgc-sys-opt / bcgc-opt = {gain:.3f}"
            )
    return out


def identical_plans(result: dict) -> list[str]:
    """Schemes and probe plans that ran the same plan: their measured figures side by side
    (they differ by measurement noise alone)."""
    runs = {**result["schemes"], **result["probes"]}
    groups: dict[str, list[str]] = {}
    for name, s in runs.items():
        if "plan" in s:
            groups.setdefault(s["plan"], []).append(name)
    out = []
    for names in groups.values():
        if len(names) < 2:
            continue
        values = [measured(runs[n]) for n in names]
        spread = max(runs[n].get("round_spread", 0.0) for n in names)
        same = ", ".join(f"{n} {1e3 * v:.3f}" for n, v in zip(names, values, strict=True))
        out.append(
            f"same plan: {same} ms; max/min {max(values) / min(values):.3f} "
            f"(rounds' spread up to {100 * spread:.1f}%)"
        )
    return out


def print_setting(name: str, result: dict, load: float) -> None:
    print(f"\n## {name}: {' '.join(SETTINGS[name]) or 'defaults (N = 8, M = 800, L = 400)'}")
    print(f"load average before: {load:.2f}, after: {result.get('load_average_after', 0):.2f}")
    print(
        f"{'scheme':<14} {'median ms':>9} {'spread':>6} {'mean ms':>8} {'paper ms':>8} "
        f"{'system ms':>9} {'meas/sys':>8} {'KS sys':>6} {'rounds':>6}  plan"
    )
    for scheme, s in result["schemes"].items():
        print(
            f"{scheme:<14} {1e3 * measured(s):>9.3f} {100 * s.get('round_spread', 0):>5.1f}% "
            f"{1e3 * s['measured_mean_s']:>8.3f} {1e3 * s['predicted_mean_s']:>8.3f} "
            f"{1e3 * s['system_predicted_mean_s']:>9.3f} "
            f"{measured(s) / s['system_predicted_mean_s']:>8.3f} "
            f"{s['system_ks_distance']:>6.2f} {s['rounds_kept']:>3}/{s['rounds']:<2}  {s['plan'][:40]}"
        )
    probes = ", ".join(
        f"{k} {1e3 * measured(v):.3f}/{1e3 * v['system_predicted_mean_s']:.3f}"
        for k, v in result["probes"].items()
    )
    print(f"probe plans (measured/system ms): {probes}")
    for line in checks(result["schemes"]) + identical_plans(result):
        print("  " + line)
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--json", help="write every setting's results here")
    parser.add_argument("--figure", help="plot measured, paper and system means per setting")
    parser.add_argument("--replot", help="no runs: plot the results of an earlier --json")
    args = parser.parse_args()
    if args.replot:
        results = json.loads(Path(args.replot).read_text())
        for name, result in results.items():
            print_setting(name, result, result.get("load_average_before", 0.0))
    else:
        results = measure(args)
    if args.figure:
        from bcgc_sim.plots import plot_system_model

        panels = {name: r["schemes"] for name, r in results.items()}
        print(f"figure: {plot_system_model(panels, Path(args.figure))}")


def measure(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-system-"))
    results = {}
    for name in args.settings:
        overrides = [*SETTINGS[name], f"run.iterations={args.iterations}", f"run.output='{root}'"]
        load = os.getloadavg()[0]
        result = calibrate(None, overrides, root / name, log=lambda text: None)
        result["load_average_before"] = load
        result["load_average_after"] = os.getloadavg()[0]
        for key in LOCAL_KEYS:  # where this run's files went: nothing to keep beside the figure
            result.pop(key, None)
        results[name] = result
        print_setting(name, result, load)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(f"\nruns (calibration files, figures, every iteration): {root}")
    return results


if __name__ == "__main__":
    main()
