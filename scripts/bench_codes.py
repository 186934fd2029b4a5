"""Measure the decoding accuracy of the gradient codes (bcgc_sim.model.codes) for N up to 64.

For every N and every redundancy s it builds the run's code (seed 0), decodes random partial
derivatives from sets F of N - s workers and reports the worst relative error
max|decoded - true| / max|true| and the worst amplification kappa_F. Every F is tried for
N <= 12 (exhaustive); above that the N cyclic windows plus --sets random sets per s.

    python scripts/bench_codes.py            # N = 4, 8, 12, 16, 24, 32, 48, 64
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np

from bcgc_sim.model.codes import DECODING_TOLERANCE, CodeBook, amplification, decoding_vector


def sets_to_try(n: int, s: int, rng: np.random.Generator, n_random: int) -> list[tuple[int, ...]]:
    k = n - s
    if math.comb(n, k) <= 2000:
        return list(itertools.combinations(range(n), k))
    windows = [tuple(sorted((start + j) % n for j in range(k))) for start in range(n)]
    return windows + [tuple(sorted(rng.choice(n, k, replace=False))) for _ in range(n_random)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32, 48, 64])
    parser.add_argument("--sets", type=int, default=400, help="random sets F per s above N = 12")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(12345)
    print(
        f"{'N':>4} {'sets tried':>10} {'worst rel. error':>17} {'worst kappa_F':>14} {'build s':>8}"
    )
    for n in args.workers:
        start = time.perf_counter()
        book = CodeBook(n, args.seed)
        matrices = [book.matrix(s) for s in range(n)]
        build = time.perf_counter() - start
        worst_err, worst_kappa, tried = 0.0, 0.0, 0
        for s, b in enumerate(matrices):
            for fastest in sets_to_try(n, s, rng, args.sets):
                g = rng.standard_normal((n, 4))  # partial derivatives of the N subsets
                coded = b @ g
                decoded = decoding_vector(b, fastest) @ coded[list(fastest)]
                truth = g.sum(axis=0)
                worst_err = max(
                    worst_err, float(np.max(np.abs(decoded - truth)) / np.max(np.abs(truth)))
                )
                worst_kappa = max(worst_kappa, amplification(b, fastest))
                tried += 1
        flag = "" if n > 32 or worst_err <= DECODING_TOLERANCE else "  ABOVE TOLERANCE"
        print(f"{n:>4} {tried:>10} {worst_err:>17.2e} {worst_kappa:>14.2e} {build:>8.2f}{flag}")


if __name__ == "__main__":
    main()
