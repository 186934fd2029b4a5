"""Recompute the BCGC papers' numerical results with our code (spec/bcgc.md §8.1 and §8.2).

For every point of the authors' three tables (R vs N, vs mu, vs L; the other parameters at the
paper point N = 20, L = 2e4, mu = 1e-3, t0 = 50, M = 50, C = 1) every scheme is planned with
bcgc_sim and its raw runtime R = E[max_n T_(N-n) S_n(x)] (spec §8: no M C / N factor) is
estimated by Monte Carlo on common random numbers (the evaluation stream, which no scheme sees)
and printed beside the authors' number. Then the Fig. 3 vectors, the quoted reductions (37% at
N = 40, the 44% hypothesis at N = 30, mu = 10^-2.8) and PASS/FAIL checks; the exit code is 1 if
a required check fails. Figures and summary.json are written to --out.

Then the completion-probability tables of spec §8.2 (P(tau <= t) vs N, t, mu, L; L = 4e4,
mu = 0.1, t0 = 1, t = 10^6.5, N = 20 unless varied): exact probabilities of bcgc-cdf-opt,
bcgc-cdf-lg and the four baselines at their best for the deadline, beside the authors' numbers,
with the required check that bcgc-cdf-opt is at least the authors' CDF,st at every point.

    python scripts/reproduce_paper.py                 # full run, about a minute on 2 cores
    python scripts/reproduce_paper.py --quick         # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bcgc_sim.deadline import deadline_baselines, raw_deadline
from bcgc_sim.model import SystemModel
from bcgc_sim.optimize import SubgradientSettings
from bcgc_sim.paper import (
    CDF_COLUMNS,
    PAPER_COLUMNS,
    PAPER_FIG3,
    PAPER_P_VS_L,
    PAPER_P_VS_MU,
    PAPER_P_VS_N,
    PAPER_P_VS_T,
    PAPER_R_VS_L,
    PAPER_R_VS_MU,
    PAPER_R_VS_N,
    SPEC_FERDINAND_HALF_CENTRE,
    SPEC_FERDINAND_HALF_VERTEX,
    SPEC_MINE_OPT,
)
from bcgc_sim.plans import BlockPlan, Plan, TandonPlan
from bcgc_sim.predict import evaluation_samples
from bcgc_sim.runtime import Estimate
from bcgc_sim.schemes import (
    PARTIAL_SCHEMES,
    SCHEMES,
    SYSTEM_SCHEMES,
    SchemeOptions,
    build_plan,
    needs_deadline,
)
from bcgc_sim.stragglers import ShiftedExponential

UNIT = 1e7  # R is printed in units of 1e7 (raw objective, spec §8)
SAMPLES_M = 50  # data-set size M of the figures (spec §8)
CYCLES_C = 1.0  # cycles C per partial derivative per sample (spec §8)
SHIFT_T0 = 50.0  # t0 of the shifted exponential (spec §8.1)
PAPER_N, PAPER_L, PAPER_LOG10_MU = 20, 20_000, -3.0  # the paper point (spec §8.1)
PAPER_MC_SAMPLES = 10_000  # the authors' Monte-Carlo size per evaluation (spec §8)
PAPER_SPSG = "bcgc-opt/paper-SPSG"  # bcgc-opt with the authors' SPSG settings (extra column)

# The authors' numbers (PAPER_*, CDF_COLUMNS, SPEC_*) are in bcgc_sim/paper.py.
BASELINES = ("single-bcgc", "tandon", "ferdinand-L", "ferdinand-L/2")  # the papers' baselines
REQUIRED_2PCT = ("bcgc-t", "bcgc-f", "single-bcgc", "tandon")  # must be within 2% everywhere
TOLERANCE_2PCT = 2.0  # percent
HYPOTHESIS_44 = (30, 20_000, -2.8)  # N, L, log10 mu of the "44%" hypothesis (spec §8.1)


@dataclass(frozen=True)
class Point:
    """One parameter point; t0 = 50, M = 50, C = 1 throughout."""

    n_workers: int
    coordinates: int
    log10_rate: float

    @property
    def rate(self) -> float:
        return 10.0**self.log10_rate

    def model(self) -> SystemModel:
        return SystemModel(
            self.n_workers,
            self.coordinates,
            SAMPLES_M,
            CYCLES_C,
            ShiftedExponential(self.rate, SHIFT_T0),
        )

    def describe(self) -> str:
        return f"N={self.n_workers}, L={self.coordinates:.0e}, mu=10^{self.log10_rate:g}"


@dataclass(frozen=True)
class Sweep:
    """One of the authors' tables: the varied parameter, its points and the authors' rows."""

    key: str
    title: str
    figure: str
    labels: tuple[str, ...]
    axis: tuple[float, ...]
    points: tuple[Point, ...]
    paper: tuple[tuple[float, ...], ...]


@dataclass
class PointResult:
    """Our plans and R estimates (raw units) at one point, all on the same evaluation draws."""

    point: Point
    plans: dict[str, Plan] = field(default_factory=dict)
    estimates: dict[str, Estimate] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    n_samples: int = 0

    def sd(self, scheme: str) -> float:
        """Per-draw standard deviation of R (raw units)."""
        return self.estimates[scheme].stderr * math.sqrt(self.n_samples)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    required: bool
    detail: str = ""


def build_sweeps(quick: bool) -> list[Sweep]:
    """The three tables; --quick keeps two points of each."""

    def keep(keys: list) -> list:
        return keys[:2] if quick else keys

    def rows(table: dict, keys: list) -> tuple[tuple[float, ...], ...]:
        return tuple(table[k] for k in keys)

    n_keys = keep([10, 20, 30, 40, 50])
    mu_keys = [-3.4, -3.0] if quick else [-3.4, -3.2, -3.0, -2.8, -2.6]
    l_keys = keep([10_000, 20_000, 30_000, 40_000, 50_000])
    return [
        Sweep(
            "N",
            "R vs N (mu = 1e-3, L = 2e4)",
            "fig4a_vs_N.png",
            tuple(f"N={n}" for n in n_keys),
            tuple(float(n) for n in n_keys),
            tuple(Point(n, PAPER_L, PAPER_LOG10_MU) for n in n_keys),
            rows(PAPER_R_VS_N, n_keys),
        ),
        Sweep(
            "mu",
            "R vs mu (N = 20, L = 2e4)",
            "fig4b_vs_mu.png",
            tuple(f"mu=10^{m:g}" for m in mu_keys),
            tuple(10.0**m for m in mu_keys),
            tuple(Point(PAPER_N, PAPER_L, m) for m in mu_keys),
            rows(PAPER_R_VS_MU, mu_keys),
        ),
        Sweep(
            "L",
            "R vs L (N = 20, mu = 1e-3)",
            "fig_vs_L.png",
            tuple(f"L={c / 1e4:g}e4" for c in l_keys),
            tuple(float(c) for c in l_keys),
            tuple(Point(PAPER_N, c, PAPER_LOG10_MU) for c in l_keys),
            rows(PAPER_R_VS_L, l_keys),
        ),
    ]


def evaluate_point(
    point: Point, options: SchemeOptions, n_samples: int, paper_spsg: bool
) -> PointResult:
    """Plan every scheme and estimate R on the evaluation stream (as bcgc_sim.predict does)."""
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
        start = time.perf_counter()
        plan = build_plan(scheme, model, opts)
        result.seconds[label] = time.perf_counter() - start
        result.plans[label] = plan
        result.estimates[label] = Estimate.of(plan.raw_runtime(samples))
    return result


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
    theirs = result.sd("bcgc-opt") / math.sqrt(PAPER_MC_SAMPLES) / UNIT
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
    for label, point, paper_row in zip(sweep.labels, sweep.points, sweep.paper, strict=True):
        result = results[point]
        paper = dict(zip(PAPER_COLUMNS, paper_row, strict=True))
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
        for label, point, paper_row in zip(sweep.labels, sweep.points, sweep.paper, strict=True):
            paper = dict(zip(PAPER_COLUMNS, paper_row, strict=True))
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
    point = Point(40, PAPER_L, PAPER_LOG10_MU)
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


def evaluate_paper_opt_vector(result: PointResult, options: SchemeOptions) -> Estimate:
    """R of the authors' stored x^(E,opt) on our evaluation draws."""
    model = result.point.model()
    samples = evaluation_samples(model, options.seed, result.n_samples)
    return Estimate.of(BlockPlan("paper-x-opt", PAPER_FIG3["bcgc-opt"]).raw_runtime(samples))


def worst_relative_diff(
    scheme: str,
    pairs: list[tuple[Sweep, str, Point, dict[str, float]]],
    results: dict[Point, PointResult],
) -> tuple[float, str]:
    """The largest |ours - paper| / paper over all table points (percent, signed) and where."""
    worst, where = 0.0, ""
    for sweep, label, point, paper in pairs:
        diff = rel_diff(results[point].estimates[scheme].mean / UNIT, paper[scheme])
        if abs(diff) >= abs(worst):
            worst, where = diff, f"{sweep.key}-table {label}"
    return worst, where


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
    checks = [
        Check(
            f"Fig. 3: R1-rounded {name} equals {target} exactly",
            fig3[name] == PAPER_FIG3[name],
            True,
            vector_diff(fig3[name], PAPER_FIG3[name]),
        )
        for name, target in (("bcgc-t", "x^(E,t)"), ("bcgc-f", "x^(E,f)"))
    ]
    pairs = [
        (sweep, label, point, dict(zip(PAPER_COLUMNS, row, strict=True)))
        for sweep in sweeps
        for label, point, row in zip(sweep.labels, sweep.points, sweep.paper, strict=True)
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
    worst, where = worst_relative_diff("ferdinand-L/2", pairs, results)
    checks.append(
        Check(
            "ferdinand-L/2 within 2% of the authors (NOT required, see note)",
            abs(worst) <= TOLERANCE_2PCT,
            False,
            f"worst {worst:+.1f}% at {where}",
        )
    )
    l_points = [p for sweep in sweeps if sweep.key == "L" for p in sweep.points]
    per_l = [results[p].estimates["ferdinand-L/2"].mean / p.coordinates for p in l_points]
    spread = 100.0 * (max(per_l) / min(per_l) - 1.0)
    cells = ", ".join(
        f"{p.coordinates / 1e4:g}e4: {v * 1e4 / UNIT:.3f}"
        for p, v in zip(l_points, per_l, strict=True)
    )
    checks.append(
        Check(
            "ferdinand-L/2 R/L constant across the L-table within 1% (the LP depends "
            "on j/r only, so x scales with L)",
            spread <= 1.0,
            False,
            f"R/L per 1e4 (1e7): {cells}; spread {spread:.1f}%",
        )
    )
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


FERDINAND_NOTE = """\
Note on ferdinand-L/2 (spec §7.3, §10.10): for r = L/2 layers the Ferdinand-Draper LP is
degenerate: u* = N/r is attained on a whole face of s vectors, so the partition (and R) depends
on which optimal point the solver returns. The authors' MATLAB solver picked some point we cannot
identify; our rule is the analytic centre of the optimal face (bcgc_sim/ferdinand.py), for which
spec §8.1 gives R = 3.18, 4.16, 5.10, 6.04, 7.01 (N = 10..50); a HiGHS vertex gives 4.47, 5.65,
6.72, 7.76, 8.78; the authors report 2.86, 5.28, 6.35, 5.86, 6.95 (not even monotone in N).
So this column is reported but not required to match."""


def print_ferdinand_half(results: dict[Point, PointResult]) -> None:
    print("\n" + FERDINAND_NOTE)
    cells = []
    for n, centre, vertex in zip(
        (10, 20, 30, 40, 50), SPEC_FERDINAND_HALF_CENTRE, SPEC_FERDINAND_HALF_VERTEX, strict=True
    ):
        point = Point(n, PAPER_L, PAPER_LOG10_MU)
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
    """Write the PNG figures; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    colours = {name: f"C{i}" for i, name in enumerate(PAPER_COLUMNS)}
    colours["uncoded"] = "C7"
    colours[PAPER_SPSG] = colours["bcgc-opt"]
    written = []

    fig, ax = plt.subplots(figsize=(8, 5))
    n = np.arange(PAPER_N)
    for name, label in (
        ("bcgc-opt", "opt x^(E,opt)"),
        ("bcgc-t", "x-bar x^(E,t)"),
        ("bcgc-f", "x-tilde x^(E,f)"),
    ):
        ax.plot(n, fig3[name], "-", color=colours[name], label=f"{label}, ours")
        ax.plot(
            n, PAPER_FIG3[name], "o", mfc="none", color=colours[name], label=f"{label}, authors"
        )
    if PAPER_SPSG in fig3:
        ax.plot(
            n,
            fig3[PAPER_SPSG],
            "--",
            color=colours["bcgc-opt"],
            label="opt with the authors' SPSG settings, ours",
        )
    ax.set(
        xlabel="n (number of stragglers tolerated by block n)",
        ylabel="x_n (coordinates)",
        title="Fig. 3: partitions at N=20, L=2e4, mu=1e-3, t0=50",
        xticks=n,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    written.append(out / "fig3_partition.png")
    fig.savefig(written[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    for sweep in sweeps:
        fig, ax = plt.subplots(figsize=(8, 5))
        names = [*PAPER_COLUMNS, "uncoded"]
        if PAPER_SPSG in results[sweep.points[0]].estimates:
            names.append(PAPER_SPSG)
        for name in names:
            ours = [results[p].estimates[name].mean / UNIT for p in sweep.points]
            style = {PAPER_SPSG: ":", "ferdinand-L": "--"}.get(name, "-")  # ferd-L = single
            ax.plot(sweep.axis, ours, style, color=colours[name], label=f"{name} (ours)")
            if name in PAPER_COLUMNS:
                paper = [row[PAPER_COLUMNS.index(name)] for row in sweep.paper]
                ax.plot(sweep.axis, paper, "o", mfc="none", color=colours[name])
        ax.plot([], [], "o", mfc="none", color="k", label="authors' tables (markers)")
        if sweep.key == "mu":
            ax.set_xscale("log")
            ax.set_xticks(sweep.axis, [f"$10^{{{math.log10(m):.1f}}}$" for m in sweep.axis])
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if sweep.key in ("mu", "L"):  # the authors' mu- and L-figures use a log y axis
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.set(
            xlabel={
                "N": "N (workers)",
                "mu": "mu (rate of the shifted exponential)",
                "L": "L (coordinates)",
            }[sweep.key],
            ylabel="R = E[max_n T_(N-n) S_n(x)]  (1e7)",
            title=sweep.title + ", t0 = 50",
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        written.append(out / sweep.figure)
        fig.savefig(written[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return written


# ---------------------------------------------------------------------------------------------
# Spec §8.2: completion probability P(tau <= t) (journal only). Parameters [C]: L = 4e4,
# mu = 0.1, t0 = 1, t = 10^6.5, N = 20, M = 50, C = 1 unless varied; t in model time units, so
# the raw deadline is r = t N / (M C). The authors' numbers (PAPER_P_VS_*, in CDF_COLUMNS order)
# are in bcgc_sim/paper.py.
# ---------------------------------------------------------------------------------------------
CDF_PAPER_LABELS = ("CDF,st", "CDF,lg", "Single", "Tandon", "Ferd. r=L", "Ferd. r=L/2")
CDF_N, CDF_L, CDF_LOG10_MU, CDF_LOG10_T, CDF_SHIFT_T0 = 20, 40_000, -1.0, 6.5, 1.0
# Cases where spec §8.2 itself records that the analytic value differs from the table.
CDF_KNOWN_MISMATCHES = {("single-bcgc", "mu", "mu=10^-0.7")}  # analytic 0.957, paper 0.935
# Info checks: the authors' own tables disagree by up to 0.003 at the shared point N = 20,
# t = 10^6.5, mu = 0.1, L = 4e4 (Tandon 0.692 vs 0.689, Single 0.688 vs 0.686): Monte-Carlo noise.
CDF_TOLERANCE = 0.003
CDF_HIGH = 0.9  # x^(CDF,lg) is expected to match only where the paper's value is at least this
CDF_LG_TOLERANCE = 0.012  # ... and then only roughly: spec §8.2 itself has 0.928 vs 0.939 at N = 30


@dataclass(frozen=True)
class CdfPoint:
    """One point of the §8.2 tables; t0 = 1, M = 50, C = 1 throughout."""

    n_workers: int
    coordinates: int
    log10_rate: float
    log10_deadline: float

    @property
    def deadline(self) -> float:
        """t in model time units."""
        return 10.0**self.log10_deadline

    def model(self) -> SystemModel:
        dist = ShiftedExponential(10.0**self.log10_rate, CDF_SHIFT_T0)
        return SystemModel(self.n_workers, self.coordinates, SAMPLES_M, CYCLES_C, dist)


@dataclass(frozen=True)
class CdfSweep:
    key: str
    title: str
    labels: tuple[str, ...]
    axis: tuple[float, ...]
    points: tuple[CdfPoint, ...]
    paper: tuple[tuple[float, ...], ...]


@dataclass
class CdfResult:
    """Exact P(tau <= t) of every CDF column at one point, with the plans and planning times."""

    point: CdfPoint
    probability: dict[str, float] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def build_cdf_sweeps(quick: bool) -> list[CdfSweep]:
    """The four §8.2 tables; --quick keeps the first two points of each."""

    def keep(keys: list) -> list:
        return keys[:2] if quick else keys

    n_keys = keep(list(PAPER_P_VS_N))
    t_keys = keep(list(PAPER_P_VS_T))
    mu_keys = keep(list(PAPER_P_VS_MU))
    l_keys = keep(list(PAPER_P_VS_L))
    return [
        CdfSweep(
            "N",
            "P(tau <= t) vs N (t = 10^6.5, mu = 0.1, L = 4e4)",
            tuple(f"N={n}" for n in n_keys),
            tuple(float(n) for n in n_keys),
            tuple(CdfPoint(n, CDF_L, CDF_LOG10_MU, CDF_LOG10_T) for n in n_keys),
            tuple(PAPER_P_VS_N[k] for k in n_keys),
        ),
        CdfSweep(
            "t",
            "P(tau <= t) vs t (N = 20, mu = 0.1, L = 4e4)",
            tuple(f"t=10^{k:.2f}" for k in t_keys),
            tuple(10.0**k for k in t_keys),
            tuple(CdfPoint(CDF_N, CDF_L, CDF_LOG10_MU, k) for k in t_keys),
            tuple(PAPER_P_VS_T[k] for k in t_keys),
        ),
        CdfSweep(
            "mu",
            "P(tau <= t) vs mu (N = 20, t = 10^6.5, L = 4e4)",
            tuple(f"mu=10^{k:g}" for k in mu_keys),
            tuple(10.0**k for k in mu_keys),
            tuple(CdfPoint(CDF_N, CDF_L, k, CDF_LOG10_T) for k in mu_keys),
            tuple(PAPER_P_VS_MU[k] for k in mu_keys),
        ),
        CdfSweep(
            "L",
            "P(tau <= t) vs L (N = 20, t = 10^6.5, mu = 0.1)",
            tuple(f"L={k / 1e4:g}e4" for k in l_keys),
            tuple(float(k) for k in l_keys),
            tuple(CdfPoint(CDF_N, k, CDF_LOG10_MU, CDF_LOG10_T) for k in l_keys),
            tuple(PAPER_P_VS_L[k] for k in l_keys),
        ),
    ]


def evaluate_cdf_point(point: CdfPoint, options: SchemeOptions) -> CdfResult:
    """Plan bcgc-cdf-opt and bcgc-cdf-lg for the deadline, and the baselines at their best for it
    (bcgc_sim.deadline.deadline_baselines); every probability is exact (DP or closed form)."""
    model = point.model()
    raw = raw_deadline(model, point.deadline)
    result = CdfResult(point)
    deadline_options = dataclasses.replace(options, deadline=point.deadline)
    for name in ("bcgc-cdf-opt", "bcgc-cdf-lg"):
        start = time.perf_counter()
        plan = build_plan(name, model, deadline_options)
        result.seconds[name] = time.perf_counter() - start
        result.plans[name] = plan
        result.probability[name] = plan.completion_probability(raw, model.distribution)
    start = time.perf_counter()
    baselines = deadline_baselines(model, point.deadline, options.tandon_alpha)
    result.seconds["baselines"] = time.perf_counter() - start
    for name, found in baselines.items():
        result.plans[name] = found.plan
        result.probability[name] = found.probability
    return result


def cdf_plan_note(plan: Plan) -> str:
    if isinstance(plan, TandonPlan):
        return f"s={plan.stragglers}"
    nonzero = [n for n, v in enumerate(plan.x) if v > 0]
    return f"s={nonzero[0]}" if len(nonzero) == 1 else f"{len(nonzero)} blocks"


def print_cdf_sweep(sweep: CdfSweep, results: dict[CdfPoint, CdfResult]) -> None:
    """One §8.2 table: per point, ours (exact) and the authors' value of each column."""
    print(f"\n=== {sweep.title}, t0 = 1, M = 50, C = 1 ===")
    print(
        "cell = ours (exact P) / authors; ours bcgc-cdf-opt is compared with the authors' "
        "CDF,st (CSSCA); single-bcgc and tandon use the s maximising P"
    )
    names = [f"{name} [{label}]" for name, label in zip(CDF_COLUMNS, CDF_PAPER_LABELS, strict=True)]
    print(f"{'point':>11} | " + " | ".join(f"{n:<23}" for n in names))
    for label, point, paper in zip(sweep.labels, sweep.points, sweep.paper, strict=True):
        result = results[point]
        cells = []
        for name, theirs in zip(CDF_COLUMNS, paper, strict=True):
            note = ""
            if name in ("single-bcgc", "tandon"):
                note = f" {cdf_plan_note(result.plans[name])}"
            cells.append(f"{result.probability[name]:.4f} / {theirs:.3f}{note}".ljust(23))
        print(f"{label:>11} | " + " | ".join(cells))


def cdf_checks(sweeps: list[CdfSweep], results: dict[CdfPoint, CdfResult]) -> list[Check]:
    """The required check (bcgc-cdf-opt >= CDF,st everywhere) and informational ones."""
    rows = [
        (sweep, label, results[point], dict(zip(CDF_COLUMNS, paper, strict=True)))
        for sweep in sweeps
        for label, point, paper in zip(sweep.labels, sweep.points, sweep.paper, strict=True)
    ]
    failures, margins = [], []
    for sweep, label, result, paper in rows:
        ours, theirs = result.probability["bcgc-cdf-opt"], paper["bcgc-cdf-opt"]
        margins.append((ours - theirs, f"{sweep.key}-table {label} ({ours:.5f} vs {theirs:.3f})"))
        if ours < theirs - 0.0005:
            failures.append(f"{sweep.key}-table {label}: {ours:.4f} < {theirs:.3f}")
    smallest = min(margins)
    checks = [
        Check(
            "bcgc-cdf-opt (exact) >= the authors' CDF,st at every §8.2 point (ours rounded to 3 "
            "decimals, as the tables are)",
            not failures,
            True,
            "; ".join(failures) or f"smallest margin {smallest[0]:+.5f} at {smallest[1]}",
        )
    ]
    for name, where, extra, tolerance in (
        ("single-bcgc", "every point except spec-noted cases", None, CDF_TOLERANCE),
        ("tandon", "every point", None, CDF_TOLERANCE),
        ("ferdinand-L", "every point", None, CDF_TOLERANCE),
        ("bcgc-cdf-lg", f"points where the paper has >= {CDF_HIGH}", CDF_HIGH, CDF_LG_TOLERANCE),
    ):
        worst, at, off = 0.0, "", []
        for sweep, label, result, paper in rows:
            if extra is not None and paper[name] < extra:
                continue
            diff = result.probability[name] - paper[name]
            if (name, sweep.key, label) in CDF_KNOWN_MISMATCHES:
                off.append(f"{sweep.key}-table {label} {diff:+.4f} (noted in the spec)")
                continue
            if abs(diff) >= abs(worst):
                worst, at = diff, f"{sweep.key}-table {label}"
        detail = f"worst {worst:+.4f} at {at}" + (f"; excluded: {', '.join(off)}" if off else "")
        checks.append(
            Check(
                f"{name} within +-{tolerance} of the authors at {where}",
                abs(worst) <= tolerance,
                False,
                detail,
            )
        )
    low = [
        (result.probability["bcgc-cdf-lg"], paper["bcgc-cdf-lg"], label)
        for sweep, label, result, paper in rows
        if sweep.key == "N" and paper["bcgc-cdf-lg"] < CDF_HIGH
    ]
    if low:
        checks.append(
            Check(
                "bcgc-cdf-lg at low probability (N-table) does NOT match the authors, as spec "
                "§8.2 and §10.12 report",
                all(abs(ours - theirs) > CDF_TOLERANCE for ours, theirs, _ in low),
                False,
                "; ".join(f"{label} {ours:.3f} vs {theirs:.3f}" for ours, theirs, label in low),
            )
        )
    return checks


def print_cdf_ferdinand_half(sweeps: list[CdfSweep], results: dict[CdfPoint, CdfResult]) -> None:
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


def plot_cdf_vs_n(
    sweeps: list[CdfSweep], results: dict[CdfPoint, CdfResult], out: Path
) -> Path | None:
    """PNG of P(tau <= t) vs N: our exact values (lines) and the authors' tables (markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = next((s for s in sweeps if s.key == "N"), None)
    if sweep is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, label) in enumerate(zip(CDF_COLUMNS, CDF_PAPER_LABELS, strict=True)):
        ours = [results[p].probability[name] for p in sweep.points]
        theirs = [row[i] for row in sweep.paper]
        style = "--" if name == "ferdinand-L" else "-"
        ax.plot(sweep.axis, ours, style, color=f"C{i}", label=f"{name} (ours, exact)")
        ax.plot(sweep.axis, theirs, "o", mfc="none", color=f"C{i}", label=f"{label} (authors)")
    ax.set(
        xlabel="N (workers)",
        ylabel="P(tau <= t)",
        title=sweep.title + ", t0 = 1, M = 50, C = 1",
        xticks=sweep.axis,
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    path = out / "fig_cdf_vs_N.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def run_cdf_part(
    quick: bool, options: SchemeOptions, out: Path
) -> tuple[list[Check], dict, list[Path]]:
    """Spec §8.2: tables, checks, figure; returns (checks, summary, figures)."""
    sweeps = build_cdf_sweeps(quick)
    points = list(dict.fromkeys(p for s in sweeps for p in s.points))
    print(
        f"\n\n##### Spec §8.2: completion probability, {len(points)} distinct points, exact "
        "(no Monte Carlo) #####"
    )
    results = {point: evaluate_cdf_point(point, options) for point in points}
    for sweep in sweeps:
        print_cdf_sweep(sweep, results)
    print_cdf_ferdinand_half(sweeps, results)
    base = CdfPoint(CDF_N, CDF_L, CDF_LOG10_MU, CDF_LOG10_T)
    if base in results:
        print(
            "\nbcgc-cdf-opt at the N = 20 paper point: x = "
            f"{list(results[base].plans['bcgc-cdf-opt'].x)}"
        )
    planning = [r.seconds["bcgc-cdf-opt"] for r in results.values()]
    slowest = max(results.values(), key=lambda r: r.seconds["bcgc-cdf-opt"])
    print(
        f"bcgc-cdf-opt planning: {sum(planning):.1f} s in total, slowest {max(planning):.2f} s "
        f"(N = {slowest.point.n_workers})"
    )
    checks = cdf_checks(sweeps, results)
    figure = plot_cdf_vs_n(sweeps, results, out)
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
            "columns": list(CDF_PAPER_LABELS),
            "N": {str(k): v for k, v in PAPER_P_VS_N.items()},
            "log10_t": {str(k): v for k, v in PAPER_P_VS_T.items()},
            "log10_mu": {str(k): v for k, v in PAPER_P_VS_MU.items()},
            "L": {str(k): v for k, v in PAPER_P_VS_L.items()},
        },
    }
    return checks, summary, [figure] if figure else []


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


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction; 0 if every required check passes, else 1."""
    args = parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    options = SchemeOptions(seed=args.seed)
    paper_spsg = not args.quick
    sweeps = build_sweeps(args.quick)
    paper_point = Point(PAPER_N, PAPER_L, PAPER_LOG10_MU)
    points = list(dict.fromkeys([paper_point, *(p for s in sweeps for p in s.points)]))
    print(
        f"bcgc-sim reproduction of spec §8.1: {len(points)} distinct points, "
        f"{args.samples} evaluation draws each (stream STREAM_EVALUATION, seed {args.seed}), "
        f"common random numbers across schemes{'; QUICK mode' if args.quick else ''}"
    )
    results: dict[Point, PointResult] = {}
    for point in points:
        results[point] = evaluate_point(point, options, args.samples, paper_spsg)
    for sweep in sweeps:
        print_sweep(sweep, results)

    paper_result = results[paper_point]
    fig3 = print_fig3(paper_result)
    paper_opt = evaluate_paper_opt_vector(paper_result, options)
    print(
        f"the authors' stored x^(E,opt) evaluated on our draws: R = {paper_opt.mean / UNIT:.3f} "
        f"+- {paper_opt.stderr / UNIT:.3f} (their tables: 2.87 / 2.88 / 2.86; ours "
        f"{paper_result.estimates['bcgc-opt'].mean / UNIT:.3f})\n"
    )

    reductions = print_reductions(sweeps, results)
    red37 = print_37(results)
    red44 = None
    if not args.quick:
        point44 = Point(*HYPOTHESIS_44)
        results[point44] = evaluate_point(point44, options, args.samples, paper_spsg=False)
        red44 = print_44(results[point44])
    print_ferdinand_half(results)

    checks = run_checks(sweeps, results, fig3, red44)
    figures = plot_figures(sweeps, results, fig3, args.out)
    cdf_checks_, cdf_summary, cdf_figures = run_cdf_part(args.quick, options, args.out)
    checks += cdf_checks_
    figures += cdf_figures
    print("\n=== Checks ===")
    print(f"bcgc-opt rule: {RULE_OPT}")
    for check in checks:
        status = "PASS" if check.passed else "FAIL"
        kind = "required" if check.required else "info    "
        print(f"{status} [{kind}] {check.name}: {check.detail}")
    failed = [c for c in checks if c.required and not c.passed]

    opt_seconds = sum(r.seconds.get("bcgc-opt", 0.0) for r in results.values())
    spsg_seconds = sum(r.seconds.get(PAPER_SPSG, 0.0) for r in results.values())
    wall = time.perf_counter() - start
    summary = {
        "samples": args.samples,
        "seed": args.seed,
        "quick": args.quick,
        "unit": UNIT,
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
        "completion_probability": cdf_summary,
        "checks": [dataclasses.asdict(c) for c in checks],
        "figures": [str(p) for p in figures],
        "wall_seconds": wall,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nfigures and summary.json written to {args.out}/")
    print(
        f"wall time {wall:.1f} s (bcgc-opt planning {opt_seconds:.1f} s, "
        f"authors' SPSG {spsg_seconds:.1f} s)"
    )
    if failed:
        print(f"{len(failed)} required check(s) FAILED")
        return 1
    print("all required checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
