"""Decode cost: the master's decoder state machine vs a plain numpy weighted sum of the same
arrays; target ratio <= 1.5.

One iteration of a BCGC plan: every worker's message for every block is offered to
master.decoder.IterationDecoder in arrival order (the fastest N - s of a block are used, the
rest are late); the baseline is, per block, weights @ np.array(first N - s arrays) with the same
decoding weights. Median over repeated iterations, the decoding vectors being cached after the
first (as in a run, where the fastest set repeats per straggler pattern).

    python scripts/bench_decode.py [--workers 16] [--coordinates 200000]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.stragglers import ShiftedExponential, monte_carlo_cycle_times
from bcgc_sim.model.system import SystemModel
from bcgc_sim.schemes import build_plan
from master.decoder import IterationDecoder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--coordinates", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--scheme", default="bcgc-t")
    args = parser.parse_args(argv)
    n = args.workers
    model = SystemModel(n, args.coordinates, 50, 1.0, ShiftedExponential(1e-3, 50.0))
    plan = build_plan(args.scheme, model)
    layout = layout_for(plan, rows=10 * n)
    codes = CodeBook(n, seed=1)
    rng = np.random.default_rng(0)
    messages = {
        (w, k): rng.standard_normal(slot.stop - slot.start)
        for k, slot in enumerate(layout.slots)
        for w in range(n)
    }
    speed = monte_carlo_cycle_times(model.distribution, 1, 1, n)[0]
    arrivals = [
        (w, k, messages[w, k])
        for w, k in sorted(messages, key=lambda wk: layout.slots[wk[1]].load * speed[wk[0]])
    ]  # (worker, slot, values) in arrival order, as the socket delivers them
    fastest = {k: sorted(np.argsort(speed)[: n - s.stragglers]) for k, s in enumerate(layout.slots)}
    weights = {k: codes.decoder(s.stragglers, fastest[k]) for k, s in enumerate(layout.slots)}

    decoder = IterationDecoder(layout.slots, n, args.coordinates, codes)

    def with_decoder() -> np.ndarray:
        decoder.reset()
        for worker, slot, values in arrivals:
            decoder.offer(worker, slot, values)
        return decoder.gradient

    def with_numpy() -> np.ndarray:
        gradient = np.zeros(args.coordinates)
        for k, slot in enumerate(layout.slots):
            stacked = np.array([messages[w, k] for w in fastest[k]])
            gradient[slot.start : slot.stop] += weights[k] @ stacked
        return gradient

    assert np.allclose(with_decoder(), with_numpy())
    times = {"decoder": [], "numpy": []}
    for _ in range(args.repeats):
        for name, action in (("decoder", with_decoder), ("numpy", with_numpy)):
            start = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - start)
    dec, ref = (1e3 * float(np.median(times[k])) for k in ("decoder", "numpy"))
    print(
        f"N = {n}, L = {args.coordinates}, {args.scheme}: {len(layout.slots)} blocks, "
        f"{len(messages)} messages per iteration"
    )
    print(
        f"decoder {dec:.2f} ms, numpy weighted sum {ref:.2f} ms, ratio {dec / ref:.2f} (target <= 1.5)"
    )
    return 0 if dec / ref <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
