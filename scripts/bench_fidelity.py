"""Fidelity of the testbed: measured vs predicted runtime, every scheme, one run.

Default: N = 16 workers on this machine, 30 iterations per scheme, every scheme of the
registry, each on its own local cluster with the time scale chosen so that its predicted mean
iteration takes 0.2 s (the testbed's overhead is a few milliseconds per iteration whatever the
scheme, so a fast scheme under a common time scale would be judged at a shorter iteration).
All schemes see the same seeded cycle times. Prints per scheme the ratio of the mean runtimes
(target 1.00 to 1.05), the median per-iteration ratio (target <= 1.03) and the absolute
overhead per iteration, side by side, and exits 1 if a target is missed.

    python scripts/bench_fidelity.py [--workers 16] [--iterations 30] [--seconds 0.2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bcgc_sim.config import load_config
from bcgc_sim.schemes import PARTIAL_SCHEMES, SCHEMES, SYSTEM_SCHEMES, needs_deadline
from master.runner import run_testbed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=0.2, help="target mean iteration (s)")
    parser.add_argument("--coordinates", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=1600)
    parser.add_argument(
        "--schemes",
        nargs="+",
        default=[
            n
            for n in SCHEMES
            if not needs_deadline(n) and n not in PARTIAL_SCHEMES + SYSTEM_SCHEMES
        ],
        help="default: every scheme that needs no deadline, partial-gc aside (compare_partial_testbed.py)",
    )
    parser.add_argument("--output", default=None)
    parser.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    args = parser.parse_args(argv)
    folder = Path(args.output or tempfile.mkdtemp(prefix="bcgc-fidelity-"))
    overrides = [
        f"cluster.workers={args.workers}",
        f"run.iterations={args.iterations}",
        f"run.iteration_seconds={args.seconds}",
        f"model.coordinates={args.coordinates}",
        f"model.samples={args.samples}",
        "run.check=false",
        f"run.output='{folder}'",
        f"cluster.pin={'false' if args.no_pin else 'true'}",
    ]
    start = time.monotonic()
    summaries = []
    for scheme in args.schemes:
        config = load_config(None, [*overrides, f"run.schemes=['{scheme}']"])
        summaries += run_testbed(
            config, folder / scheme, log=lambda text: print(text, file=sys.stderr)
        )
    wall = time.monotonic() - start
    print(
        f"N = {args.workers} workers, {args.iterations} iterations per scheme, "
        f"target mean iteration {args.seconds} s, wall time {wall:.0f} s"
    )
    print(
        f"{'scheme':<14} {'measured s':>11} {'predicted s':>12} {'mean ratio':>11} {'median ratio':>13} "
        f"{'overhead ms':>12} {'overruns':>9}  verdict"
    )
    ok = True
    for s in summaries:
        good = 1.0 <= s.ratio <= 1.05 and s.median_ratio <= 1.03
        ok &= good
        print(
            f"{s.scheme:<14} {s.measured_mean_s:>11.4f} {s.predicted_mean_s:>12.4f} {s.ratio:>11.4f} "
            f"{s.median_ratio:>13.4f} {1e3 * (s.measured_mean_s - s.predicted_mean_s):>12.2f} "
            f"{s.overruns:>9}  {'ok' if good else 'MISSED'}"
        )
    print("targets: mean ratio in [1.00, 1.05], median ratio <= 1.03")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
