"""Part one of the papers' reproduction: the expected runtime R (spec/bcgc.md §8.1).

For every point of the authors' three tables (R vs N, vs mu, vs L; the other parameters at the
paper point N = 20, L = 2e4, mu = 1e-3, t0 = 50, M = 50, C = 1) every scheme is planned with
bcgc_sim and its raw runtime R = E[max_n T_(N-n) S_n(x)] (spec §8: no M C / N factor) is
estimated by Monte Carlo on common random numbers (the evaluation stream, which no scheme sees)
and printed beside the authors' number. Then the Fig. 3 vectors, the quoted reductions (37% at
N = 40, the 44% hypothesis at N = 30, mu = 10^-2.8) and the PASS/FAIL checks. The authors'
numbers (PAPER_*, SPEC_*) are in bcgc_sim/paper/numbers.py.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from ..model.optimize import SubgradientSettings
from ..model.plans import BlockPlan, Plan, TandonPlan
from ..model.runtime import Estimate
from ..prediction import evaluation_samples
from ..schemes import PARTIAL_SCHEMES, SCHEMES, SYSTEM_SCHEMES, SchemeOptions, needs_deadline
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
from .numbers import (
    PAPER_COLUMNS,
    PAPER_FIG3,
    PAPER_R_VS_L,
    PAPER_R_VS_MU,
    PAPER_R_VS_N,
    SPEC_FERDINAND_HALF_CENTRE,
    SPEC_FERDINAND_HALF_VERTEX,
    SPEC_MINE_OPT,
)

UNIT = 1e7  # R is printed in units of 1e7 (raw objective, spec §8)
SHIFT_T0 = 50.0  # t0 of the shifted exponential (spec §8.1)
PAPER_N, PAPER_L, PAPER_LOG10_MU = 20, 20_000, -3.0  # the paper point (spec §8.1)
PAPER_MC_SAMPLES = 10_000  # the authors' Monte-Carlo size per evaluation (spec §8)
PAPER_SPSG = "bcgc-opt/paper-SPSG"  # bcgc-opt with the authors' SPSG settings (extra column)
BASELINES = ("single-bcgc", "tandon", "ferdinand-L", "ferdinand-L/2")  # the papers' baselines
REQUIRED_2PCT = ("bcgc-t", "bcgc-f", "single-bcgc", "tandon")  # must be within 2% everywhere
TOLERANCE_2PCT = 2.0  # percent
HYPOTHESIS_44 = (30, 20_000, -2.8)  # N, L, log10 mu of the "44%" hypothesis (spec §8.1)


def point_at(n_workers: int, coordinates: int, log10_rate: float) -> Point:
    """A point of the §8.1 tables (t0 = 50)."""
    return Point(n_workers, coordinates, log10_rate, SHIFT_T0)


PAPER_POINT = point_at(PAPER_N, PAPER_L, PAPER_LOG10_MU)


def run(quick: bool, options: SchemeOptions, n_samples: int, out: Path) -> Part:
    """Spec §8.1: tables, Fig. 3, reductions, checks, figures; nothing written but the PNGs."""
    sweeps = build_sweeps(quick)
    paper_spsg = not quick
    points = list(dict.fromkeys([PAPER_POINT, *(p for s in sweeps for p in s.points)]))
    print(
        f"bcgc-sim reproduction of spec §8.1: {len(points)} distinct points, "
        f"{n_samples} evaluation draws each (stream STREAM_EVALUATION, seed {options.seed}), "
        f"common random numbers across schemes{'; QUICK mode' if quick else ''}"
    )
    results = {point: evaluate_point(point, options, n_samples, paper_spsg) for point in points}
    for sweep in sweeps:
        print_sweep(sweep, results)
    fig3 = print_fig3(results[PAPER_POINT])
    print_paper_opt_vector(results[PAPER_POINT], options)
    reductions = print_reductions(sweeps, results)
    red37 = print_37(results)
    red44 = None
    if not quick:
        point44 = point_at(*HYPOTHESIS_44)
        results[point44] = evaluate_point(point44, options, n_samples, paper_spsg=False)
        red44 = print_44(results[point44])
    print_ferdinand_half(results)
    checks = run_checks(sweeps, results, fig3, red44)
    figures = plot_figures(sweeps, results, fig3, out)
    summary = {
        "points": [
            {
                "N": r.point.n_workers,
                "L": r.point.coordinates,
                "log10_mu": r.point.log10_rate,
                "R": {k: e.mean for k, e in r.estimates.items()},
                "stderr": {k: e.stderr for k, e in r.estimates.items()},
                "x": {k: list(p.x) for k, p in r.plans.items() if isinstance(p, BlockPlan)},
            }
            for r in results.values()
        ],
        "fig3": {k: list(v) for k, v in fig3.items()},
        "reductions": reductions,
        "reduction_N40": red37,
        "reduction_44_hypothesis": red44,
    }
    planning = {
        "bcgc-opt planning": sum(r.seconds.get("bcgc-opt", 0.0) for r in results.values()),
        "authors' SPSG": sum(r.seconds.get(PAPER_SPSG, 0.0) for r in results.values()),
    }
    return Part(checks, summary, figures, [f"bcgc-opt rule: {RULE_OPT}"], planning)


def build_sweeps(quick: bool) -> list[Sweep]:
    """The three tables; --quick keeps two points of each."""
    mu_keys = [-3.4, -3.0] if quick else [-3.4, -3.2, -3.0, -2.8, -2.6]
    return [
        Sweep.over(
            "N",
            "R vs N (mu = 1e-3, L = 2e4)",
            keep([10, 20, 30, 40, 50], quick),
            lambda n: f"N={n}",
            float,
            lambda n: point_at(n, PAPER_L, PAPER_LOG10_MU),
            PAPER_R_VS_N,
            figure="fig4a_vs_N.png",
        ),
        Sweep.over(
            "mu",
            "R vs mu (N = 20, L = 2e4)",
            mu_keys,
            lambda m: f"mu=10^{m:g}",
            lambda m: 10.0**m,
            lambda m: point_at(PAPER_N, PAPER_L, m),
            PAPER_R_VS_MU,
            figure="fig4b_vs_mu.png",
        ),
        Sweep.over(
            "L",
            "R vs L (N = 20, mu = 1e-3)",
            keep([10_000, 20_000, 30_000, 40_000, 50_000], quick),
            lambda c: f"L={c / 1e4:g}e4",
            float,
            lambda c: point_at(PAPER_N, c, PAPER_LOG10_MU),
            PAPER_R_VS_L,
            figure="fig_vs_L.png",
        ),
    ]


def evaluate_point(
    point: Point, options: SchemeOptions, n_samples: int, paper_spsg: bool
) -> PointResult:
    """Plan every scheme and estimate R on the evaluation stream (as bcgc_sim.prediction does)."""
    model = point.model()
    samples = evaluation_samples(model, options.seed, n_samples)
    result = PointResult(point, n_samples=n_samples)
    jobs: list[tuple[str, str, SchemeOptions]] = [
        (name, name, options)
        for name in SCHEMES
        if not needs_deadline(name)
        and name not in PARTIAL_SCHEMES + SYSTEM_SCHEMES  # not in the BCGC paper
    ]
    if paper_spsg:
        paper = dataclasses.replace(options, optimizer=SubgradientSettings.paper())
        jobs.append((PAPER_SPSG, "bcgc-opt", paper))
    for label, scheme, opts in jobs:
        plan = result.plan(label, scheme, model, opts)
        result.estimates[label] = Estimate.of(plan.raw_runtime(samples))
    return result


def sd(result: PointResult, scheme: str) -> float:
    """Per-draw standard deviation of R (raw units)."""
    return result.estimates[scheme].stderr * math.sqrt(result.n_samples)


def plan_note(plan: Plan) -> str:
    """A short description of a plan for the tables."""
    if isinstance(plan, TandonPlan):
        return f"s={plan.stragglers}, alpha={plan.alpha:g}"
    nonzero = [n for n, v in enumerate(plan.x) if v > 0]
    if len(nonzero) == 1:
        return f"x = L e_{nonzero[0]}"
    return f"{len(nonzero)} non-empty blocks, x_0={plan.x[0]}, x_N-1={plan.x[-1]}"


def rel_diff(ours: float, paper: float) -> float:
    """(ours - paper) / paper in percent."""
    return 100.0 * (ours - paper) / paper


def half_unit(value: float) -> float:
    """Half a unit in the last digit of a table entry printed to 3 significant figures."""
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - 2)


def opt_allowance(result: PointResult, paper: float) -> float:
    """Slack (units of 1e7) for 'ours no worse than the authors' opt' (the rule in RULE_OPT)."""
    ours = result.estimates["bcgc-opt"].stderr / UNIT
    theirs = sd(result, "bcgc-opt") / math.sqrt(PAPER_MC_SAMPLES) / UNIT
    return half_unit(paper) + 3.0 * math.hypot(ours, theirs)


RULE_OPT = (
    "ours <= paper + half a unit in the paper's last digit + 3 * sqrt(se_ours^2 + se_paper^2), "
    "se_ours from our draws, se_paper = (our per-draw sd of R) / sqrt(1e4) (the authors' "
    "evaluation size)"
)


def print_sweep(sweep: Sweep, results: dict[Point, PointResult]) -> None:
    """The table of one sweep: per point and scheme, the authors' R, ours and the difference."""
    print(f"\n=== {sweep.title}, t0 = 50, M = 50, C = 1 ===")
    print("R = E[max_n T_(N-n) S_n(x)] in units of 1e7 (E[tau] = (M C / N) R model time units)")
    header = f"{'point':>11} | {'scheme':<20} {'paper':>6} {'ours':>8} {'stderr':>7} {'diff %':>7}"
    print(header + " | plan")
    print("-" * (len(header) + 30))
    for label, point, paper in sweep.rows(PAPER_COLUMNS):
        result = results[point]
        paper[PAPER_SPSG] = paper["bcgc-opt"]
        for name, est in result.estimates.items():
            ours, se = est.mean / UNIT, est.stderr / UNIT
            if name in paper:
                diff = rel_diff(ours, paper[name])
                cells = f"{paper[name]:>6.2f} {ours:>8.3f} {se:>7.3f} {diff:>+7.2f}"
            else:
                cells = f"{'-':>6} {ours:>8.3f} {se:>7.3f} {'-':>7}"
            print(f"{label:>11} | {name:<20} {cells} | {plan_note(result.plans[name])}")
        print()


def best_baseline(values: dict[str, float]) -> tuple[str, float]:
    """The smallest R among the papers' four baselines."""
    name = min(BASELINES, key=lambda b: values[b])
    return name, values[name]


def reduction(opt: float, baseline: float) -> float:
    """Percentage reduction of opt over a baseline."""
    return 100.0 * (1.0 - opt / baseline)


def ours_by_scheme(result: PointResult) -> dict[str, float]:
    return {name: est.mean / UNIT for name, est in result.estimates.items()}


def print_reductions(sweeps: list[Sweep], results: dict[Point, PointResult]) -> dict:
    """Reduction of bcgc-opt over the best baseline at each point, ours vs the authors'."""
    print("\n=== Reduction of bcgc-opt over the best baseline (spec §8.1 'Quoted reductions') ===")
    print("best baseline = smallest R among single-bcgc, tandon, ferdinand-L, ferdinand-L/2")
    print(
        f"{'point':>11} | {'paper: opt  best baseline':<35} {'red.%':>6} | "
        f"{'ours: opt  best baseline':<35} {'red.%':>6}"
    )
    out: dict[str, list] = {}
    for sweep in sweeps:
        rows = []
        for label, point, paper in sweep.rows(PAPER_COLUMNS):
            p_name, p_base = best_baseline(paper)
            ours = ours_by_scheme(results[point])
            o_name, o_base = best_baseline(ours)
            p_red, o_red = reduction(paper["bcgc-opt"], p_base), reduction(ours["bcgc-opt"], o_base)
            paper_cell = f"{paper['bcgc-opt']:.2f} vs {p_base:.2f} ({p_name})"
            ours_cell = f"{ours['bcgc-opt']:.3f} vs {o_base:.3f} ({o_name})"
            print(f"{label:>11} | {paper_cell:<35} {p_red:>6.1f} | {ours_cell:<35} {o_red:>6.1f}")
            rows.append(
                {
                    "point": label,
                    "paper": p_red,
                    "paper_baseline": p_name,
                    "ours": o_red,
                    "ours_baseline": o_name,
                }
            )
        out[sweep.key] = rows
        print()
    print(
        "Note: R(x, T) is linear in x, so the optimum and every baseline scale with L and the "
        "reduction\ncannot depend on L. The authors' falling L-row reflects their SPSG: a 1/k "
        "step on the raw\nsubgradient moves x by an L-independent amount, so at large L it "
        "stays near its start x-bar\n(compare bcgc-opt/paper-SPSG in the L-table).\n"
    )
    return out


def print_37(results: dict[Point, PointResult]) -> dict | None:
    """The 37% of conference Fig. 4(a): N = 40 (authors: 3.68 vs 5.86, Ferdinand r = L/2)."""
    point = point_at(40, PAPER_L, PAPER_LOG10_MU)
    if point not in results:
        return None
    ours = ours_by_scheme(results[point])
    paper = dict(zip(PAPER_COLUMNS, PAPER_R_VS_N[40], strict=True))
    o_name, o_base = best_baseline(ours)
    print("=== The quoted 37% (conference Fig. 4(a), N = 40, mu = 1e-3, L = 2e4) ===")
    print(
        f"authors: opt {paper['bcgc-opt']:.2f} vs ferdinand-L/2 {paper['ferdinand-L/2']:.2f} "
        f"-> {reduction(paper['bcgc-opt'], paper['ferdinand-L/2']):.1f}%"
    )
    print(
        f"ours:    opt {ours['bcgc-opt']:.3f} vs {o_name} {o_base:.3f} "
        f"-> {reduction(ours['bcgc-opt'], o_base):.1f}%"
    )
    print(
        f"ours vs the authors' 5.86: {reduction(ours['bcgc-opt'], 5.86):.1f}%; the authors' opt "
        f"vs our best baseline: {reduction(paper['bcgc-opt'], o_base):.1f}%"
    )
    print(
        "(the 5.86 is the authors' ferdinand-L/2, which nobody reproduces: see the note below; "
        "against single-bcgc, their own table gives "
        f"{reduction(paper['bcgc-opt'], paper['single-bcgc']):.1f}%)"
    )
    return {
        "paper": reduction(paper["bcgc-opt"], paper["ferdinand-L/2"]),
        "ours": reduction(ours["bcgc-opt"], o_base),
        "ours_baseline": o_name,
    }


def print_44(result: PointResult) -> float:
    """The 44% hypothesis of spec §8.1: N = 30, mu = 10^-2.8 (spec: 43.5-44.0%)."""
    ours = ours_by_scheme(result)
    o_name, o_base = best_baseline(ours)
    red = reduction(ours["bcgc-opt"], o_base)
    print(
        "\n=== The quoted 44% (conference Fig. 4(b)): hypothesis N = 30, mu = 10^-2.8, L = 2e4 ==="
    )
    print(
        "spec §8.1: 2.381 vs best baseline 4.21-4.25 -> 43.5-44.0% (not in the journal "
        "mu-table, which has N = 20)"
    )
    for name in ("bcgc-opt", "bcgc-t", "bcgc-f", *BASELINES, "uncoded"):
        est = result.estimates[name]
        print(
            f"  {name:<15} R = {est.mean / UNIT:.3f} +- {est.stderr / UNIT:.3f}  "
            f"({plan_note(result.plans[name])})"
        )
    print(f"ours: {ours['bcgc-opt']:.3f} vs {o_name} {o_base:.3f} -> {red:.1f}% reduction")
    return red


def vector_diff(ours: tuple[int, ...], theirs: tuple[int, ...]) -> str:
    """'exact match' or the differing entries."""
    if tuple(ours) == tuple(theirs):
        return "exact match"
    diffs = [
        f"n={n}: ours {a} vs {b}"
        for n, (a, b) in enumerate(zip(ours, theirs, strict=True))
        if a != b
    ]
    return f"{len(diffs)} differ: " + "; ".join(diffs)


def print_fig3(result: PointResult) -> dict[str, tuple[int, ...]]:
    """Our partitions at the paper point beside the authors' Fig. 3 vectors."""
    vectors = {
        name: tuple(int(v) for v in result.plans[name].x)
        for name in ("bcgc-t", "bcgc-f", "bcgc-opt", PAPER_SPSG)
        if name in result.plans
    }
    print("\n=== Fig. 3: x_n vs n at the paper point (N = 20, L = 2e4, mu = 1e-3, t0 = 50) ===")
    cols = [
        ("x-bar ours", vectors["bcgc-t"]),
        ("x-bar paper", PAPER_FIG3["bcgc-t"]),
        ("x-til ours", vectors["bcgc-f"]),
        ("x-til paper", PAPER_FIG3["bcgc-f"]),
        ("opt ours", vectors["bcgc-opt"]),
    ]
    if PAPER_SPSG in vectors:
        cols.append(("opt paperSPSG", vectors[PAPER_SPSG]))
    cols.append(("opt paper", PAPER_FIG3["bcgc-opt"]))
    print(f"{'n':>3} " + " ".join(f"{c:>13}" for c, _ in cols))
    for n in range(PAPER_N):
        print(f"{n:>3} " + " ".join(f"{v[n]:>13}" for _, v in cols))
    print("sum " + " ".join(f"{sum(v):>13}" for _, v in cols))
    for name, theorem, target in (("bcgc-t", 2, "x^(E,t)"), ("bcgc-f", 3, "x^(E,f)")):
        match = vector_diff(vectors[name], PAPER_FIG3[name])
        print(f"{name} (R1-rounded Theorem {theorem}) vs {target}: {match}")
    ours_opt, paper_opt = np.array(vectors["bcgc-opt"]), np.array(PAPER_FIG3["bcgc-opt"])
    print(
        f"bcgc-opt vs x^(E,opt) (noisy SPSG output, not expected to match): "
        f"max |diff| = {int(np.max(np.abs(ours_opt - paper_opt)))}, "
        f"L1 distance / L = {np.abs(ours_opt - paper_opt).sum() / PAPER_L:.3f}"
    )
    if PAPER_SPSG in vectors:
        spec = np.array(SPEC_MINE_OPT)
        print(
            f"{PAPER_SPSG} vs the spec author's SPSG vector (spec §8.1 'Mine'): L1 distance / L "
            f"= {np.abs(np.array(vectors[PAPER_SPSG]) - spec).sum() / PAPER_L:.3f}"
        )
    return vectors


def print_paper_opt_vector(result: PointResult, options: SchemeOptions) -> None:
    """R of the authors' stored x^(E,opt) on our evaluation draws, beside our bcgc-opt."""
    model = result.point.model()
    samples = evaluation_samples(model, options.seed, result.n_samples)
    paper_opt = Estimate.of(BlockPlan("paper-x-opt", PAPER_FIG3["bcgc-opt"]).raw_runtime(samples))
    print(
        f"the authors' stored x^(E,opt) evaluated on our draws: R = {paper_opt.mean / UNIT:.3f} "
        f"+- {paper_opt.stderr / UNIT:.3f} (their tables: 2.87 / 2.88 / 2.86; ours "
        f"{result.estimates['bcgc-opt'].mean / UNIT:.3f})\n"
    )


def worst_relative_diff(
    scheme: str,
    pairs: list[tuple[Sweep, str, Point, dict[str, float]]],
    results: dict[Point, PointResult],
) -> tuple[float, str]:
    """The largest |ours - paper| / paper over all table points (percent, signed) and where."""
    return largest_difference(
        (
            rel_diff(results[point].estimates[scheme].mean / UNIT, paper[scheme]),
            f"{sweep.key}-table {label}",
        )
        for sweep, label, point, paper in pairs
    )


def opt_check(
    label_opt: str,
    required: bool,
    pairs: list[tuple[Sweep, str, Point, dict[str, float]]],
    results: dict[Point, PointResult],
) -> Check:
    """`label_opt` no worse than the authors' opt at every point, by RULE_OPT."""
    failures, largest = [], -math.inf
    for sweep, label, point, paper in pairs:
        ours = results[point].estimates[label_opt].mean / UNIT
        limit = paper["bcgc-opt"] + opt_allowance(results[point], paper["bcgc-opt"])
        largest = max(largest, rel_diff(ours, paper["bcgc-opt"]))
        if ours > limit:
            failures.append(f"{sweep.key}-table {label}: {ours:.3f} > {limit:.3f}")
    detail = "; ".join(failures) or f"largest (ours - paper) / paper = {largest:+.2f}%"
    return Check(
        f"{label_opt} no worse than the authors' opt (rule above)", not failures, required, detail
    )


def run_checks(
    sweeps: list[Sweep],
    results: dict[Point, PointResult],
    fig3: dict[str, tuple[int, ...]],
    red44: float | None,
) -> list[Check]:
    """All PASS/FAIL checks; `required` ones decide the exit code."""
    pairs = table_rows(sweeps, PAPER_COLUMNS)
    checks = [
        Check(
            f"Fig. 3: R1-rounded {name} equals {target} exactly",
            fig3[name] == PAPER_FIG3[name],
            True,
            vector_diff(fig3[name], PAPER_FIG3[name]),
        )
        for name, target in (("bcgc-t", "x^(E,t)"), ("bcgc-f", "x^(E,f)"))
    ]
    for scheme, required in [*((s, True) for s in REQUIRED_2PCT), ("ferdinand-L", False)]:
        worst, where = worst_relative_diff(scheme, pairs, results)
        checks.append(
            Check(
                f"{scheme} within {TOLERANCE_2PCT:g}% of the authors at every point",
                abs(worst) <= TOLERANCE_2PCT,
                required,
                f"worst {worst:+.2f}% at {where}",
            )
        )
    checks.append(opt_check("bcgc-opt", True, pairs, results))
    if all(PAPER_SPSG in results[p].estimates for _, _, p, _ in pairs):
        checks.append(opt_check(PAPER_SPSG, False, pairs, results))
    checks += ferdinand_half_checks(sweeps, pairs, results)
    if red44 is not None:
        checks.append(
            Check(
                "44% hypothesis: reduction at N = 30, mu = 10^-2.8 in [43, 45]%",
                43.0 <= red44 <= 45.0,
                False,
                f"ours {red44:.1f}%",
            )
        )
    return checks


def ferdinand_half_checks(
    sweeps: list[Sweep],
    pairs: list[tuple[Sweep, str, Point, dict[str, float]]],
    results: dict[Point, PointResult],
) -> list[Check]:
    """Info: ferdinand-L/2 beside the authors (not expected to match: FERDINAND_NOTE), and
    R/L constant along the L-table."""
    worst, where = worst_relative_diff("ferdinand-L/2", pairs, results)
    l_points = [p for sweep in sweeps if sweep.key == "L" for p in sweep.points]
    per_l = [results[p].estimates["ferdinand-L/2"].mean / p.coordinates for p in l_points]
    spread = 100.0 * (max(per_l) / min(per_l) - 1.0)
    cells = ", ".join(
        f"{p.coordinates / 1e4:g}e4: {v * 1e4 / UNIT:.3f}"
        for p, v in zip(l_points, per_l, strict=True)
    )
    return [
        Check(
            "ferdinand-L/2 within 2% of the authors (NOT required, see note)",
            abs(worst) <= TOLERANCE_2PCT,
            False,
            f"worst {worst:+.1f}% at {where}",
        ),
        Check(
            "ferdinand-L/2 R/L constant across the L-table within 1% (the LP depends "
            "on j/r only, so x scales with L)",
            spread <= 1.0,
            False,
            f"R/L per 1e4 (1e7): {cells}; spread {spread:.1f}%",
        ),
    ]


FERDINAND_NOTE = """\
Note on ferdinand-L/2 (spec §7.3, §10.10): for r = L/2 layers the Ferdinand-Draper LP is
degenerate: u* = N/r is attained on a whole face of s vectors, so the partition (and R) depends
on which optimal point the solver returns. The authors' MATLAB solver picked some point we cannot
identify; our rule is the analytic centre of the optimal face (bcgc_sim/model/ferdinand.py), for which
spec §8.1 gives R = 3.18, 4.16, 5.10, 6.04, 7.01 (N = 10..50); a HiGHS vertex gives 4.47, 5.65,
6.72, 7.76, 8.78; the authors report 2.86, 5.28, 6.35, 5.86, 6.95 (not even monotone in N).
So this column is reported but not required to match."""


def print_ferdinand_half(results: dict[Point, PointResult]) -> None:
    print("\n" + FERDINAND_NOTE)
    cells = []
    for n, centre, vertex in zip(
        (10, 20, 30, 40, 50), SPEC_FERDINAND_HALF_CENTRE, SPEC_FERDINAND_HALF_VERTEX, strict=True
    ):
        point = point_at(n, PAPER_L, PAPER_LOG10_MU)
        if point in results:
            ours = results[point].estimates["ferdinand-L/2"].mean / UNIT
            paper = PAPER_R_VS_N[n][PAPER_COLUMNS.index("ferdinand-L/2")]
            cells.append(
                f"  N={n}: ours {ours:.3f} | spec centre {centre:.2f} | "
                f"spec vertex {vertex:.2f} | paper {paper:.2f}"
            )
    print("\n".join(cells))


def plot_figures(
    sweeps: list[Sweep],
    results: dict[Point, PointResult],
    fig3: dict[str, tuple[int, ...]],
    out: Path,
) -> list[Path]:
    """Write the figures (PNG and PDF), Fig. 3 and one per table; returns the PNGs' paths."""
    written = [save_figure(fig3_figure(fig3), out / "fig3_partition.png")]
    for sweep in sweeps:
        written.append(save_figure(sweep_figure(sweep, results), out / sweep.figure))
    return written


@styled
def fig3_figure(fig3: dict[str, tuple[int, ...]]):
    """Our partitions at the paper point (lines) beside the authors' Fig. 3 (markers)."""
    fig = new_figure(PAGE_IN, 3.6, layout="constrained")
    ax = fig.subplots()
    n = np.arange(PAPER_N)
    for name, label in (
        ("bcgc-opt", "opt x^(E,opt)"),
        ("bcgc-t", "x-bar x^(E,t)"),
        ("bcgc-f", "x-tilde x^(E,f)"),
    ):
        colour = scheme_colour(name)
        ax.plot(n, fig3[name], "-", color=colour, label=f"{label}, ours")
        ax.plot(n, PAPER_FIG3[name], "o", mfc="none", color=colour, label=f"{label}, authors")
    if PAPER_SPSG in fig3:
        ax.plot(
            n,
            fig3[PAPER_SPSG],
            "--",
            color=scheme_colour(PAPER_SPSG),
            label="opt with the authors' SPSG settings, ours",
        )
    ax.set(
        xlabel="n (number of stragglers tolerated by block n)",
        ylabel="x_n (coordinates)",
        title="Fig. 3: partitions at N = 20, L = 2e4, mu = 1e-3, t0 = 50",
        xticks=n,
    )
    ax.legend()
    return fig


@styled
def sweep_figure(sweep: Sweep, results: dict[Point, PointResult]):
    """R of every scheme along one table: ours (lines) and the authors' (markers)."""
    from matplotlib import ticker

    fig = new_figure(PAGE_IN, 3.8, layout="constrained")
    ax = fig.subplots()
    names = [*PAPER_COLUMNS, "uncoded"]
    if PAPER_SPSG in results[sweep.points[0]].estimates:
        names.append(PAPER_SPSG)
    for name in names:
        ours = [results[p].estimates[name].mean / UNIT for p in sweep.points]
        line = {PAPER_SPSG: ":", "ferdinand-L": "--"}.get(name, "-")  # ferd-L = single
        ax.plot(sweep.axis, ours, line, color=scheme_colour(name), label=f"{name} (ours)")
        if name in PAPER_COLUMNS:
            paper = [row[PAPER_COLUMNS.index(name)] for row in sweep.paper]
            ax.plot(sweep.axis, paper, "o", mfc="none", color=scheme_colour(name))
    ax.plot([], [], "o", mfc="none", color="k", label="authors' tables (markers)")
    if sweep.key == "mu":
        ax.set_xscale("log")
        ax.set_xticks(sweep.axis, [f"$10^{{{math.log10(m):.1f}}}$" for m in sweep.axis])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.set_xticks(sweep.axis, [f"{v:g}" for v in sweep.axis])  # whole N and L
    if sweep.key in ("mu", "L"):  # the authors' mu- and L-figures use a log y axis
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    ax.set(
        xlabel={
            "N": "N (workers)",
            "mu": "mu (rate of the shifted exponential, per model time unit)",
            "L": "L (coordinates)",
        }[sweep.key],
        ylabel="R = E[max_n T_(N-n) S_n(x)] (1e7 model time units)",
        title=sweep.title + ", t0 = 50",
    )
    ax.legend(ncol=2)
    ax.grid(alpha=0.3, which="both")
    return fig
