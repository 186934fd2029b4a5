"""Planning time of the closed forms (Theorems 2 and 3) at large N; target < 10 ms at N = 1000.

Each is timed end to end (order statistics, closed form, R1 rounding, quadrature nodes
recomputed every time) as the median of 20 runs, beside a plain numpy pass over N for scale.

    python scripts/bench_closed_forms.py [--workers 100 1000]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bcgc_sim.model.stragglers import ShiftedExponential, _mapped_rule
from bcgc_sim.model.system import SystemModel
from bcgc_sim.schemes import build_plan


def median_ms(action, repeats: int = 20) -> float:
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def plan_cold(scheme: str, model: SystemModel) -> None:
    _mapped_rule.cache_clear()  # nothing cached between runs
    build_plan(scheme, model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args(argv)
    print(f"{'N':>5} {'scheme':<8} {'plan ms':>8} {'numpy cumsum ms':>16}")
    ok = True
    for n in args.workers:
        model = SystemModel(n, 10**6, 50, 1.0, ShiftedExponential(1e-3, 50.0))
        ramp = np.arange(n, dtype=float)
        baseline = median_ms(lambda r=ramp: np.cumsum(r))
        for scheme in ("bcgc-t", "bcgc-f"):
            ms = median_ms(lambda s=scheme, m=model: plan_cold(s, m))
            ok &= n != 1000 or ms < 10
            print(f"{n:>5} {scheme:<8} {ms:>8.2f} {baseline:>16.4f}")
    print("target: < 10 ms at N = 1000:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
