"""Part two of the papers' reproduction: the completion probability P(tau <= t) (spec/bcgc.md §8.2).

The journal's four tables (P vs N, t, mu, L; L = 4e4, mu = 0.1, t0 = 1, t = 10^6.5, N = 20,
M = 50, C = 1 unless varied; t in model time units, so the raw deadline is r = t N / (M C)):
exact probabilities of bcgc-cdf-opt, bcgc-cdf-lg and the four baselines at their best for the
deadline, beside the authors' numbers (PAPER_P_VS_*, in CDF_COLUMNS order, in
bcgc_sim/paper/numbers.py), with the required check that bcgc-cdf-opt is at least the authors'
CDF,st at every point. No Monte Carlo: every probability is exact.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..model.deadline import deadline_baselines, raw_deadline
from ..model.plans import BlockPlan, Plan, TandonPlan
from ..schemes import SchemeOptions
from ..style import PAGE_IN, new_figure, save_figure, scheme_colour, styled
from .common import (
    Check,
    Part,
    Point,
    PointResult,
    Sweep,
    keep,
    largest_difference,
    table_rows,
)
from .numbers import CDF_COLUMNS, PAPER_P_VS_L, PAPER_P_VS_MU, PAPER_P_VS_N, PAPER_P_VS_T

PAPER_LABELS = ("CDF,st", "CDF,lg", "Single", "Tandon", "Ferd. r=L", "Ferd. r=L/2")
PAPER_N, PAPER_L, PAPER_LOG10_MU, PAPER_LOG10_T, SHIFT_T0 = 20, 40_000, -1.0, 6.5, 1.0
# Cases where spec §8.2 itself records that the analytic value differs from the table.
KNOWN_MISMATCHES = {("single-bcgc", "mu", "mu=10^-0.7")}  # analytic 0.957, paper 0.935
# Info checks: the authors' own tables disagree by up to 0.003 at the shared point N = 20,
# t = 10^6.5, mu = 0.1, L = 4e4 (Tandon 0.692 vs 0.689, Single 0.688 vs 0.686): Monte-Carlo noise.
TOLERANCE = 0.003
HIGH = 0.9  # x^(CDF,lg) is expected to match only where the paper's value is at least this
LG_TOLERANCE = 0.012  # ... and then only roughly: spec §8.2 itself has 0.928 vs 0.939 at N = 30


def point_at(n_workers: int, coordinates: int, log10_rate: float, log10_deadline: float) -> Point:
    """A point of the §8.2 tables (t0 = 1)."""
    return Point(n_workers, coordinates, log10_rate, SHIFT_T0, log10_deadline)


PAPER_POINT = point_at(PAPER_N, PAPER_L, PAPER_LOG10_MU, PAPER_LOG10_T)


def run(quick: bool, options: SchemeOptions, out: Path) -> Part:
    """Spec §8.2: tables, checks, figure; returns (checks, summary, figures)."""
    sweeps = build_sweeps(quick)
    points = list(dict.fromkeys(p for s in sweeps for p in s.points))
    print(
        f"\n\n##### Spec §8.2: completion probability, {len(points)} distinct points, exact "
        "(no Monte Carlo) #####"
    )
    results = {point: evaluate_point(point, options) for point in points}
    for sweep in sweeps:
        print_sweep(sweep, results)
    print_ferdinand_half(sweeps, results)
    if PAPER_POINT in results:
        print(
            "\nbcgc-cdf-opt at the N = 20 paper point: x = "
            f"{list(results[PAPER_POINT].plans['bcgc-cdf-opt'].x)}"
        )
    planning = [r.seconds["bcgc-cdf-opt"] for r in results.values()]
    slowest = max(results.values(), key=lambda r: r.seconds["bcgc-cdf-opt"])
    print(
        f"bcgc-cdf-opt planning: {sum(planning):.1f} s in total, slowest {max(planning):.2f} s "
        f"(N = {slowest.point.n_workers})"
    )
    checks = run_checks(sweeps, results)
    figure = plot_vs_n(sweeps, results, out)
    summary = {
        "points": [
            {
                "N": r.point.n_workers,
                "L": r.point.coordinates,
                "log10_mu": r.point.log10_rate,
                "log10_t": r.point.log10_deadline,
                "P": dict(r.probability),
                "x": {k: list(p.x) for k, p in r.plans.items() if isinstance(p, BlockPlan)},
                "tandon_s": r.plans["tandon"].stragglers,
                "seconds": dict(r.seconds),
            }
            for r in results.values()
        ],
        "paper": {
            "columns": list(PAPER_LABELS),
            "N": {str(k): v for k, v in PAPER_P_VS_N.items()},
            "log10_t": {str(k): v for k, v in PAPER_P_VS_T.items()},
            "log10_mu": {str(k): v for k, v in PAPER_P_VS_MU.items()},
            "L": {str(k): v for k, v in PAPER_P_VS_L.items()},
        },
    }
    return Part(checks, summary, [figure] if figure else [])


def build_sweeps(quick: bool) -> list[Sweep]:
    """The four §8.2 tables; --quick keeps the first two points of each."""

    return [
        Sweep.over(
            "N",
            "P(tau <= t) vs N (t = 10^6.5, mu = 0.1, L = 4e4)",
            keep(list(PAPER_P_VS_N), quick),
            lambda n: f"N={n}",
            float,
            lambda n: point_at(n, PAPER_L, PAPER_LOG10_MU, PAPER_LOG10_T),
            PAPER_P_VS_N,
        ),
        Sweep.over(
            "t",
            "P(tau <= t) vs t (N = 20, mu = 0.1, L = 4e4)",
            keep(list(PAPER_P_VS_T), quick),
            lambda k: f"t=10^{k:.2f}",
            lambda k: 10.0**k,
            lambda k: point_at(PAPER_N, PAPER_L, PAPER_LOG10_MU, k),
            PAPER_P_VS_T,
        ),
        Sweep.over(
            "mu",
            "P(tau <= t) vs mu (N = 20, t = 10^6.5, L = 4e4)",
            keep(list(PAPER_P_VS_MU), quick),
            lambda k: f"mu=10^{k:g}",
            lambda k: 10.0**k,
            lambda k: point_at(PAPER_N, PAPER_L, k, PAPER_LOG10_T),
            PAPER_P_VS_MU,
        ),
        Sweep.over(
            "L",
            "P(tau <= t) vs L (N = 20, t = 10^6.5, mu = 0.1)",
            keep(list(PAPER_P_VS_L), quick),
            lambda k: f"L={k / 1e4:g}e4",
            float,
            lambda k: point_at(PAPER_N, k, PAPER_LOG10_MU, PAPER_LOG10_T),
            PAPER_P_VS_L,
        ),
    ]


def evaluate_point(point: Point, options: SchemeOptions) -> PointResult:
    """Plan bcgc-cdf-opt and bcgc-cdf-lg for the deadline, and the baselines at their best for it
    (bcgc_sim.model.deadline.deadline_baselines); every probability is exact (DP or closed form)."""
    model = point.model()
    raw = raw_deadline(model, point.deadline)
    result = PointResult(point)
    deadline_options = dataclasses.replace(options, deadline=point.deadline)
    for name in ("bcgc-cdf-opt", "bcgc-cdf-lg"):
        plan = result.plan(name, name, model, deadline_options)
        result.probability[name] = plan.completion_probability(raw, model.distribution)
    start = time.perf_counter()
    baselines = deadline_baselines(model, point.deadline, options.tandon_alpha)
    result.seconds["baselines"] = time.perf_counter() - start
    for name, found in baselines.items():
        result.plans[name] = found.plan
        result.probability[name] = found.probability
    return result


def plan_note(plan: Plan) -> str:
    """Tandon's s, single-level s, or the number of blocks."""
    if isinstance(plan, TandonPlan):
        return f"s={plan.stragglers}"
    nonzero = [n for n, v in enumerate(plan.x) if v > 0]
    return f"s={nonzero[0]}" if len(nonzero) == 1 else f"{len(nonzero)} blocks"


def print_sweep(sweep: Sweep, results: dict[Point, PointResult]) -> None:
    """One §8.2 table: per point, ours (exact) and the authors' value of each column."""
    print(f"\n=== {sweep.title}, t0 = 1, M = 50, C = 1 ===")
    print(
        "cell = ours (exact P) / authors; ours bcgc-cdf-opt is compared with the authors' "
        "CDF,st (CSSCA); single-bcgc and tandon use the s maximising P"
    )
    names = [f"{name} [{label}]" for name, label in zip(CDF_COLUMNS, PAPER_LABELS, strict=True)]
    print(f"{'point':>11} | " + " | ".join(f"{n:<23}" for n in names))
    for label, point, paper in zip(sweep.labels, sweep.points, sweep.paper, strict=True):
        result = results[point]
        cells = []
        for name, theirs in zip(CDF_COLUMNS, paper, strict=True):
            note = ""
            if name in ("single-bcgc", "tandon"):
                note = f" {plan_note(result.plans[name])}"
            cells.append(f"{result.probability[name]:.4f} / {theirs:.3f}{note}".ljust(23))
        print(f"{label:>11} | " + " | ".join(cells))


Row = tuple[Sweep, str, PointResult, dict[str, float]]  # table, point label, ours, the authors'


def run_checks(sweeps: list[Sweep], results: dict[Point, PointResult]) -> list[Check]:
    """The required check (bcgc-cdf-opt >= CDF,st everywhere) and informational ones."""
    rows = [
        (sweep, label, results[point], paper)
        for sweep, label, point, paper in table_rows(sweeps, CDF_COLUMNS)
    ]
    checks = [cdf_opt_check(rows)]
    for name, where, extra, tolerance in (
        ("single-bcgc", "every point except spec-noted cases", None, TOLERANCE),
        ("tandon", "every point", None, TOLERANCE),
        ("ferdinand-L", "every point", None, TOLERANCE),
        ("bcgc-cdf-lg", f"points where the paper has >= {HIGH}", HIGH, LG_TOLERANCE),
    ):
        checks.append(agreement_check(rows, name, where, extra, tolerance))
    low = [
        (result.probability["bcgc-cdf-lg"], paper["bcgc-cdf-lg"], label)
        for sweep, label, result, paper in rows
        if sweep.key == "N" and paper["bcgc-cdf-lg"] < HIGH
    ]
    if low:
        checks.append(
            Check(
                "bcgc-cdf-lg at low probability (N-table) does NOT match the authors, as spec "
                "§8.2 and §10.12 report",
                all(abs(ours - theirs) > TOLERANCE for ours, theirs, _ in low),
                False,
                "; ".join(f"{label} {ours:.3f} vs {theirs:.3f}" for ours, theirs, label in low),
            )
        )
    return checks


def cdf_opt_check(rows: list[Row]) -> Check:
    """Required: our exact bcgc-cdf-opt, rounded as the tables are, >= the authors' CDF,st."""
    failures, margins = [], []
    for sweep, label, result, paper in rows:
        ours, theirs = result.probability["bcgc-cdf-opt"], paper["bcgc-cdf-opt"]
        margins.append((ours - theirs, f"{sweep.key}-table {label} ({ours:.5f} vs {theirs:.3f})"))
        if ours < theirs - 0.0005:
            failures.append(f"{sweep.key}-table {label}: {ours:.4f} < {theirs:.3f}")
    smallest = min(margins)
    return Check(
        "bcgc-cdf-opt (exact) >= the authors' CDF,st at every §8.2 point (ours rounded to 3 "
        "decimals, as the tables are)",
        not failures,
        True,
        "; ".join(failures) or f"smallest margin {smallest[0]:+.5f} at {smallest[1]}",
    )


def agreement_check(
    rows: list[Row], name: str, where: str, least: float | None, tolerance: float
) -> Check:
    """Info: `name` within `tolerance` of the authors (at the points where their value is at
    least `least`, if given), the spec's known mismatches excluded and listed."""
    compared = [
        (result.probability[name] - paper[name], sweep.key, label)
        for sweep, label, result, paper in rows
        if least is None or paper[name] >= least
    ]
    off = [
        f"{key}-table {label} {diff:+.4f} (noted in the spec)"
        for diff, key, label in compared
        if (name, key, label) in KNOWN_MISMATCHES
    ]
    worst, at = largest_difference(
        (diff, f"{key}-table {label}")
        for diff, key, label in compared
        if (name, key, label) not in KNOWN_MISMATCHES
    )
    detail = f"worst {worst:+.4f} at {at}" + (f"; excluded: {', '.join(off)}" if off else "")
    return Check(
        f"{name} within +-{tolerance} of the authors at {where}",
        abs(worst) <= tolerance,
        False,
        detail,
    )


def print_ferdinand_half(sweeps: list[Sweep], results: dict[Point, PointResult]) -> None:
    """ferdinand-L/2 in the N-table, ours beside the authors' (not expected to match)."""
    cells = [
        f"{label}: ours {results[point].probability['ferdinand-L/2']:.3f} vs {paper[-1]:.3f}"
        for sweep in sweeps
        if sweep.key == "N"
        for label, point, paper in zip(sweep.labels, sweep.points, sweep.paper, strict=True)
    ]
    print(
        "\nferdinand-L/2 (CDF mapping, analytic centre of the degenerate LP) is not expected to "
        "match\nthe authors (spec §7.3, §10.10): " + "; ".join(cells)
    )


def plot_vs_n(sweeps: list[Sweep], results: dict[Point, PointResult], out: Path) -> Path | None:
    """P(tau <= t) vs N (PNG and PDF): our exact values (lines), the authors' tables (markers)."""
    sweep = next((s for s in sweeps if s.key == "N"), None)
    if sweep is None:
        return None
    return save_figure(vs_n_figure(sweep, results), out / "fig_cdf_vs_N.png")


@styled
def vs_n_figure(sweep: Sweep, results: dict[Point, PointResult]):
    fig = new_figure(PAGE_IN, 3.8, layout="constrained")
    ax = fig.subplots()
    for i, (name, label) in enumerate(zip(CDF_COLUMNS, PAPER_LABELS, strict=True)):
        ours = [results[p].probability[name] for p in sweep.points]
        theirs = [row[i] for row in sweep.paper]
        line = "--" if name == "ferdinand-L" else "-"
        colour = scheme_colour(name)
        ax.plot(sweep.axis, ours, line, color=colour, label=f"{name} (ours, exact)")
        ax.plot(sweep.axis, theirs, "o", mfc="none", color=colour, label=f"{label} (authors)")
    ax.set(
        xlabel="N (workers)",
        ylabel="P(tau <= t)",
        title=sweep.title + ", t0 = 1, M = 50, C = 1",
    )
    ax.set_xticks(sweep.axis, [f"{n:g}" for n in sweep.axis])
    ax.legend(ncol=2)
    return fig
