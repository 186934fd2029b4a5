"""The fair comparison of spec/partial-gc.md §5.3: BCGC vs partial-straggler GC vs original GC.

Same storage (cyclic, delta partitions per worker), same work unit (one partition's full
gradient), same straggler draws (common random numbers, the evaluation stream), same uplink
(d floats per worker for l = 1). Prints the expected time to the exact gradient of every scheme
(chunk-gradient units at unit cycle time) and writes partial_gc_comparison.png (and .pdf) to --out:
(a) the CDF of the time to the exact gradient, (b) mean time against l (Latin vs random order
vs original GC, spec Fig. 3b / appendix), (c) NMSE against the deadline T (spec Fig. 3a).

    python scripts/compare_partial_gc.py --out results/partial_gc
    python scripts/compare_partial_gc.py --quick --out /tmp/pgc
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from bcgc_sim.comparison import fair_comparison
from bcgc_sim.model.stragglers import FailureMixture, ShiftedExponential, monte_carlo_cycle_times
from bcgc_sim.model.streams import STREAM_EVALUATION
from bcgc_sim.partial.assignment import Assignment, positions
from bcgc_sim.partial.original_gc import original_code, original_exact_times, original_nmse_at
from bcgc_sim.partial.timing import (
    exact_times,
    expected_nmse,
    nmse_at,
    random_positions,
    speed_finish_times,
)
from bcgc_sim.style import PAGE_IN, new_figure, save_figure, scheme_colour, styled


def print_table(rows, title: str) -> None:
    print(f"\n{title}")
    print(
        f"  {'scheme':<17} {'detail':<34} {'stor.':>5} {'uplink/d':>8} "
        f"{'E[time] +- se':>16} {'std':>6} {'p90':>6} {'done':>7}"
    )
    for r in rows:
        est = r.estimate
        mean = f"{est.mean:7.3f} +- {est.stderr:.3f}" if math.isfinite(est.mean) else "inf"
        detail = r.detail if len(r.detail) <= 34 else r.detail[:31] + "..."
        uplink = "-" if math.isnan(r.uplink) else f"{r.uplink:.2f}"
        print(
            f"  {r.scheme:<17} {detail:<34} {r.storage:>5} {uplink:>8} "
            f"{mean:>16} {r.std:6.2f} {r.p90:6.2f} {100 * r.finished:6.2f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG")
    parser.add_argument("--cases", default="10x3,20x4", help="N x delta pairs, comma-separated")
    parser.add_argument("--rate", type=float, default=1.0, help="mu of T = t0 + Exp(mu)")
    parser.add_argument("--shift", type=float, default=1.0, help="t0 of T = t0 + Exp(mu)")
    parser.add_argument("--failure", type=float, default=0.0, help="p_fail per worker")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--oracle-samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="few samples, no oracle")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.oracle_samples = 500, 0
    law = ShiftedExponential(args.rate, args.shift)
    dist = FailureMixture(law, args.failure) if args.failure > 0 else law
    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    print(f"straggler law: {dist.describe()}; {args.samples} common draws (seed {args.seed})")
    print("time unit: one partition's full gradient at unit cycle time (model time units)")
    last = None
    for n, delta in cases:
        start = time.perf_counter()
        rows = fair_comparison(
            n,
            delta,
            dist,
            parts=tuple(range(1, delta)),
            samples=args.samples,
            seed=args.seed,
            oracle_samples=args.oracle_samples,
        )
        title = f"N = m = {n}, cyclic storage delta = {delta} ({time.perf_counter() - start:.1f} s)"
        print_table(rows, title)
        last = (n, delta, rows)
    plot(args, dist, last)


def plot(args, dist, last) -> None:
    """partial_gc_comparison.png (and .pdf): three panels for the last (N, delta) of the run."""
    path = save_figure(figure(args, dist, last), args.out / "partial_gc_comparison.png")
    print(f"\nwrote {path}")


@styled
def figure(args, dist, last):
    n, delta, rows = last
    a = Assignment.cyclic(n, delta)
    t = monte_carlo_cycle_times(dist, args.seed, args.samples, n, STREAM_EVALUATION)
    finish = speed_finish_times(t, a.loads)
    latin = positions(a, a.natural)
    shuffled = random_positions(a, np.random.default_rng(args.seed), args.samples)
    fig = new_figure(2 * PAGE_IN, 4.2, layout="constrained")
    axes = fig.subplots(1, 3)
    plot_completion(axes[0], rows, n, delta)
    plot_exact_against_l(axes[1], a, latin, shuffled, finish, delta)
    plot_nmse(axes[2], args, dist, a, latin, shuffled, finish, delta)
    return fig


COMPARISON_SCHEMES = {  # bcgc_sim.comparison's row names -> the scheme whose colour they take
    "uncoded": "uncoded",
    "original GC": "original-gc",
    "BCGC capped": "bcgc-capped",
    "BCGC (bcgc-opt)": "bcgc-opt",
}


def plot_completion(ax, rows, n: int, delta: int) -> None:
    """(a) the CDF of the time to the exact gradient of every scheme but the oracle; partial GC
    in its colour, the line telling l (solid 1, dashed 2, ...) and the order (thin: random)."""
    for r in rows:
        if r.scheme == "oracle bound":
            continue
        t = np.sort(r.times[np.isfinite(r.times)])
        label = f"{r.scheme} ({r.detail[:18]})"
        style = {}
        if r.scheme.startswith("partial GC l="):
            l = int(r.scheme.split("=")[1])
            style = {
                "color": scheme_colour("partial-gc"),
                "ls": ("-", "--", "-.", ":")[(l - 1) % 4],
                "lw": 0.8 if "random" in r.detail else 1.6,
            }
        elif r.scheme in COMPARISON_SCHEMES:
            style = {"color": scheme_colour(COMPARISON_SCHEMES[r.scheme])}
        ax.plot(t, np.arange(1, t.size + 1) / r.times.size, label=label, **style)
    ax.set(
        xlabel="time to exact gradient (chunk units)",
        ylabel="P(done by t)",
        title=f"(a) N = {n}, delta = {delta}",
    )
    ax.legend(fontsize=6)


def plot_exact_against_l(ax, a, latin, shuffled, finish, delta: int) -> None:
    """(b) mean time to the exact gradient against l: Latin, random order, original GC."""
    ls = np.arange(1, delta)
    curves = {
        "partial GC, Latin order": [exact_times(a, latin, finish, l) for l in ls],
        "partial GC, random order": [exact_times(a, shuffled, finish, l) for l in ls],
        "original GC (s = delta - l)": [
            original_exact_times(finish, a.loads, delta - l) for l in ls
        ],
    }
    styles = (
        {"color": scheme_colour("partial-gc"), "lw": 1.6},
        {"color": scheme_colour("partial-gc"), "lw": 0.8, "ls": ":"},
        {"color": scheme_colour("original-gc")},
    )
    for (label, values), style in zip(curves.items(), styles, strict=True):
        finite = [v[np.isfinite(v)] for v in values]
        ax.errorbar(
            ls,
            [v.mean() for v in finite],
            yerr=[v.std() for v in finite],
            capsize=3,
            label=label,
            **style,
        )
    ax.set(
        xlabel="l (parts of the upload; every chunk needs l copies)",
        ylabel="E[time to exact gradient] +- std (chunk units)",
        title="(b) exact GC",
    )
    ax.set_xticks(ls)
    ax.legend()


def plot_nmse(ax, args, dist, a, latin, shuffled, finish, delta: int) -> None:
    """(c) NMSE against the deadline T for l = 1, 2: partial GC (MC, exact E) and original GC,
    each in its scheme's colour; l = 1 thick, l = 2 thin."""
    deadlines = np.linspace(1, 10, 37) * args.shift if args.shift > 0 else np.linspace(0.25, 10, 40)
    few = finish[: min(500, args.samples)]
    partial, original = scheme_colour("partial-gc"), scheme_colour("original-gc")
    for l in np.arange(1, delta)[:2]:
        width = 1.6 if l == 1 else 0.8
        ax.semilogy(
            deadlines,
            np.maximum(nmse_at(a, latin, finish, l, deadlines).mean(axis=0), 1e-9),
            color=partial,
            lw=width,
            label=f"partial GC l={l}, Latin (MC)",
        )
        if not isinstance(dist, FailureMixture):
            ax.semilogy(
                deadlines,
                np.maximum(expected_nmse(a, latin, dist, l, deadlines), 1e-9),
                ":",
                color=partial,
                lw=width,
                label=f"partial GC l={l}, exact E",
            )
        ax.semilogy(
            deadlines,
            np.maximum(nmse_at(a, shuffled, finish, l, deadlines).mean(axis=0), 1e-9),
            "--",
            color=partial,
            lw=width,
            label=f"partial GC l={l}, random (MC)",
        )
        code = original_code(a.n_workers, delta, l, seed=args.seed)
        ax.semilogy(
            deadlines,
            np.maximum(original_nmse_at(code, few, a.loads, deadlines).mean(axis=0), 1e-9),
            "-.",
            color=original,
            lw=width,
            label=f"original GC l={l} ({code.name})",
        )
    ax.set(
        xlabel="deadline T (chunk units)",
        ylabel="NMSE (coefficient level)",
        title="(c) approximate GC",
    )
    ax.set_ylim(1e-9, 2)
    ax.legend(fontsize=6)


if __name__ == "__main__":
    main()
