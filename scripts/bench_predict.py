"""How long `bcgc predict` takes: plan + prediction of every scheme, per N.

For each N (the other settings are the demo's: L = 400, M = 800, 100000 Monte-Carlo draws,
exact E[tau]; with --deadline also P(tau <= T) and the two deadline schemes) it times
`bcgc_sim.prediction.predict` for each scheme alone, then for all of them in one call (the way
`bcgc predict` runs them: shared draws). Wall-clock seconds, one run each, in the order given.

    python scripts/bench_predict.py [--workers 10 30 40 100] [--deadline 6e7] [--schemes ...]
"""

from __future__ import annotations

import argparse
import sys
import time

from bcgc_sim.config import load_config
from bcgc_sim.prediction import predict
from bcgc_sim.schemes import SCHEMES, needs_deadline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 30, 40, 100])
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES))
    parser.add_argument("--samples", type=int, default=100_000, help="predict.samples")
    parser.add_argument("--deadline", type=float, default=None, help="T in model time units")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args(argv)
    schemes = [s for s in args.schemes if args.deadline is not None or not needs_deadline(s)]
    print(f"seconds of plan + prediction; predict.samples = {args.samples}, exact E[tau] on")
    width = max(len(s) for s in [*schemes, "all in one call"])
    print(f"{'scheme':<{width}} " + " ".join(f"{'N = ' + str(n):>10}" for n in args.workers))
    times: dict[str, list[float]] = {name: [] for name in [*schemes, "all in one call"]}
    for n in args.workers:
        overrides = [*args.overrides, f"cluster.workers={n}", f"predict.samples={args.samples}"]
        if args.deadline is not None:
            overrides.append(f"predict.deadline={args.deadline!r}")
        config = load_config(None, overrides)
        model, options = config.system_model(), config.scheme_options()
        for name in [*schemes, "all in one call"]:
            names = schemes if name == "all in one call" else [name]
            start = time.perf_counter()
            predict(model, names, options, config.predict.samples, True)
            times[name].append(time.perf_counter() - start)
            print(f"  N = {n:>5} {name:<{width}} {times[name][-1]:8.2f} s", file=sys.stderr)
    for name, values in times.items():
        print(f"{name:<{width}} " + " ".join(f"{v:>10.2f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
