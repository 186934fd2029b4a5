"""Scale: N = 64 workers with L = 1e6 coordinates on this machine; completes without deadlock?

Runs bcgc-opt and uncoded for a few iterations on a synthetic least-squares problem of
M = 2 N rows (1 GB of data, memory-mapped once), theta and every block being float64 (8 MB of
theta per worker per iteration), and reports the fidelity (measured / predicted runtime) with
the wall time. The time scale is chosen so that a mean iteration takes --seconds.

    python scripts/bench_scale.py [--workers 64] [--coordinates 1000000] [--iterations 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bcgc_sim.config import load_config
from master.runner import print_summaries, run_testbed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--coordinates", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    folder = Path(args.output or tempfile.mkdtemp(prefix="bcgc-scale-"))
    config = load_config(
        None,
        [
            f"cluster.workers={args.workers}",
            f"model.samples={2 * args.workers}",
            f"model.coordinates={args.coordinates}",
            f"run.iterations={args.iterations}",
            f"run.iteration_seconds={args.seconds}",
            "run.check=true",
            "run.startup_timeout=300",
            "run.schemes=['bcgc-opt', 'uncoded']",
            f"run.output='{folder}'",
        ],
    )
    start = time.monotonic()
    summaries = run_testbed(config, folder / "run", log=lambda text: print(text, file=sys.stderr))
    print(
        f"N = {args.workers}, L = {args.coordinates}: completed in {time.monotonic() - start:.0f} s wall"
    )
    phases = json.loads((folder / "run" / "run.json").read_text())["phases_s"]
    print("where the time went: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    print_summaries(summaries, folder / "run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
