"""Natural mode: measured runtime against the papers' model and the calibrated system model.

For each setting, `bcgc calibrate` measures this machine (uncoded + probe runs, kernels,
decoding, fitted message costs, per-worker laws), then runs every scheme and bcgc-sys-opt in
natural mode. Printed per setting and scheme: measured mean, paper-predicted mean (fitted
shifted exponential), system-predicted mean, measured / system and the KS distance of the
measured runtimes to the system model's simulated ones; then the checks of issue 16: every
scheme within 10% of the system prediction, the model's order where measured means differ by
more than 10%, bcgc-sys-opt within 3% of the best scheme.

    python scripts/bench_system_model.py [--iterations 60] [--settings n8 burner ...]

Run it alone on the machine (the schemes run one after the other, not in alternating rounds,
so a change of load during a setting shows up as a model error).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from master.calibrate import calibrate

SETTINGS = {
    "n8": [],
    "burner": ["natural.burners=[1]", "model.samples=4000", "model.coordinates=1000"],
    "n2": ["cluster.workers=2"],
    "wide": ["model.samples=800", "model.coordinates=10000"],
    "slowdown": ["natural.slowdown=[1,1,1,1,1,1,2,3]"],
}


def checks(schemes: dict[str, dict]) -> list[str]:
    out = []
    worst = max(abs(s["system_ratio"] - 1) for s in schemes.values())
    out.append(f"worst |measured / system - 1| = {worst:.3f} (target <= 0.10)")
    wrong = [
        (a, b)
        for (a, sa), (b, sb) in itertools.combinations(schemes.items(), 2)
        if abs(sa["measured_mean_s"] / sb["measured_mean_s"] - 1) > 0.10
        and (sa["measured_mean_s"] < sb["measured_mean_s"])
        != (sa["system_predicted_mean_s"] < sb["system_predicted_mean_s"])
    ]
    out.append(f"pairs ordered differently (measured gap > 10%): {wrong or 'none'}")
    best = min(s["measured_mean_s"] for s in schemes.values())
    if "bcgc-sys-opt" in schemes:
        ratio = schemes["bcgc-sys-opt"]["measured_mean_s"] / best
        out.append(f"bcgc-sys-opt / best measured = {ratio:.3f} (target <= 1.03)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-system-"))
    for name in args.settings:
        overrides = [*SETTINGS[name], f"run.iterations={args.iterations}", f"run.output='{root}'"]
        result = calibrate(None, overrides, root / name, log=lambda text: None)
        print(f"\n## {name}: {' '.join(SETTINGS[name]) or 'defaults (N = 8, M = 800, L = 400)'}")
        print(
            f"{'scheme':<14} {'measured ms':>11} {'paper ms':>9} {'system ms':>9} "
            f"{'meas/sys':>8} {'KS sys':>6}  plan"
        )
        for scheme, s in result["schemes"].items():
            print(
                f"{scheme:<14} {1e3 * s['measured_mean_s']:>11.3f} {1e3 * s['predicted_mean_s']:>9.3f} "
                f"{1e3 * s['system_predicted_mean_s']:>9.3f} {s['system_ratio']:>8.3f} "
                f"{s['system_ks_distance']:>6.2f}  {s['plan'][:40]}"
            )
        for line in checks(result["schemes"]):
            print("  " + line)
    print(f"\nruns: {root}")


if __name__ == "__main__":
    main()
