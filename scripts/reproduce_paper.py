"""Recompute the BCGC papers' numerical results with our code (spec/bcgc.md §8.1 and §8.2).

Two parts, each printing its tables beside the authors' numbers and returning its PASS/FAIL
checks, summary and figures (bcgc_sim/paper/):
  * expectation (§8.1): for every point of the authors' three tables (R vs N, vs mu, vs L; the
    paper point N = 20, L = 2e4, mu = 1e-3, t0 = 50, M = 50, C = 1) every scheme's raw runtime
    R = E[max_n T_(N-n) S_n(x)] by Monte Carlo on common random numbers (the evaluation stream,
    which no scheme sees); the Fig. 3 vectors and the quoted reductions (37% at N = 40, the 44%
    hypothesis at N = 30, mu = 10^-2.8);
  * completion (§8.2): P(tau <= t) vs N, t, mu, L (L = 4e4, mu = 0.1, t0 = 1, t = 10^6.5, N = 20
    unless varied), exact, for bcgc-cdf-opt, bcgc-cdf-lg and the four baselines at their best for
    the deadline, with the required check that bcgc-cdf-opt is at least the authors' CDF,st.
Then every check; the exit code is 1 if a required check fails. Figures and summary.json are
written to --out.

    python scripts/reproduce_paper.py                 # full run, about a minute on 2 cores
    python scripts/reproduce_paper.py --quick         # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from bcgc_sim.paper import completion, expectation
from bcgc_sim.paper.common import Check
from bcgc_sim.schemes import SchemeOptions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="Monte-Carlo draws per point (default 100000; 20000 with --quick)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/paper"),
        help="folder for the figures and summary.json (default results/paper)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: two points per table, fewer draws, no extra columns",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of all Monte-Carlo streams")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 20_000 if args.quick else 100_000
    if args.samples < 2:
        parser.error("--samples must be >= 2")
    return args


def print_checks(rules: list[str], checks: list[Check]) -> None:
    print("\n=== Checks ===")
    for rule in rules:
        print(rule)
    for check in checks:
        status = "PASS" if check.passed else "FAIL"
        kind = "required" if check.required else "info    "
        print(f"{status} [{kind}] {check.name}: {check.detail}")


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction; 0 if every required check passes, else 1."""
    args = parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    options = SchemeOptions(seed=args.seed)
    runtime = expectation.run(args.quick, options, args.samples, args.out)
    probability = completion.run(args.quick, options, args.out)
    checks = runtime.checks + probability.checks
    print_checks(runtime.rules + probability.rules, checks)
    wall = time.perf_counter() - start
    summary = {
        "samples": args.samples,
        "seed": args.seed,
        "quick": args.quick,
        "unit": expectation.UNIT,
        **runtime.summary,
        "completion_probability": probability.summary,
        "checks": [dataclasses.asdict(c) for c in checks],
        "figures": [str(p) for p in runtime.figures + probability.figures],
        "wall_seconds": wall,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nfigures and summary.json written to {args.out}/")
    planning = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in runtime.planning.items())
    print(f"wall time {wall:.1f} s ({planning})")
    failed = [c for c in checks if c.required and not c.passed]
    if failed:
        print(f"{len(failed)} required check(s) FAILED")
        return 1
    print("all required checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
