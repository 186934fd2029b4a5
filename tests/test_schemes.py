"""Schemes and baselines (spec/bcgc.md §4, §5, §7, §8.1, §9 B and C)."""

import dataclasses
import math
from functools import cache

import numpy as np
import pytest

from bcgc_sim.model.optimize import SubgradientSettings, deterministic_optimum, round_r1
from bcgc_sim.model.plans import BlockPlan, TandonPlan
from bcgc_sim.model.runtime import Estimate, block_loads
from bcgc_sim.model.stragglers import Empirical, Pareto, ShiftedExponential, monte_carlo_cycle_times
from bcgc_sim.model.streams import STREAM_EVALUATION
from bcgc_sim.model.system import SystemModel
from bcgc_sim.paper.numbers import PAPER_FIG3
from bcgc_sim.partial.plan import PartialPlan
from bcgc_sim.schemes import (
    SCHEMES,
    SYSTEM_SCHEMES,
    SchemeOptions,
    build_plan,
    needs_deadline,
    theorem2_relaxed,
    theorem3_relaxed,
)

# --- spec §9 Test B ----------------------------------------------------------------------------

B_DIST = ShiftedExponential(1.0, 1.0)
B_MODEL = SystemModel(n_workers=3, coordinates=12, samples=3, cycles=1.0, distribution=B_DIST)


def test_b_theorem2_closed_form():
    np.testing.assert_allclose(theorem2_relaxed(B_MODEL), np.array([352, 96, 68]) / 43, rtol=1e-12)


def test_b_problem4_value():
    # every term t-bar_{N-n} S_n equals lambda = L / D(t-bar) = 2992/129 (MC/N = 1)
    means = B_DIST.order_stat_means(3)
    terms = means[::-1] * block_loads(theorem2_relaxed(B_MODEL))
    np.testing.assert_allclose(terms, 2992 / 129, rtol=1e-12)
    d = sum(1 / ((n + 1) * (n + 2) * means[2 - n]) for n in range(2)) + 1 / (3 * means[0])
    assert d == pytest.approx(387 / 748, rel=1e-12)
    assert B_MODEL.scale * 12 / d == pytest.approx(2992 / 129, rel=1e-12)


def test_b_theorem3_closed_form_and_problem5_value():
    x = theorem3_relaxed(B_MODEL)
    np.testing.assert_allclose(x, [8.651240, 1.998066, 1.350694], atol=1e-6)
    assert x.sum() == pytest.approx(12.0, rel=1e-14)
    phi = B_DIST.order_stat_inverse_means(3)
    terms = block_loads(x) / phi[::-1]
    np.testing.assert_allclose(terms, 21.239336, atol=1e-6)


def test_b_r1_rounding():
    assert tuple(round_r1(theorem2_relaxed(B_MODEL), 12)) == (8, 2, 2)
    assert tuple(round_r1(theorem3_relaxed(B_MODEL), 12)) == (9, 2, 1)
    assert build_plan("bcgc-t", B_MODEL).x == (8, 2, 2)
    assert build_plan("bcgc-f", B_MODEL).x == (9, 2, 1)


def test_b_bcgc_opt_finds_best_integer_partition():
    # (8, 2, 2) is the best integer partition (spec §9 B)
    assert build_plan("bcgc-opt", B_MODEL).x == (8, 2, 2)


def test_b_single_bcgc_and_uncoded():
    # E[R] of L e_s: 34, 44, 48 -> s = 0
    assert build_plan("single-bcgc", B_MODEL).x == (12, 0, 0)
    assert build_plan("uncoded", B_MODEL).x == (12, 0, 0)


def test_deterministic_optimum_equalises_terms():
    rng = np.random.default_rng(4)
    for n in (2, 5, 9):
        t = np.sort(rng.uniform(1.0, 10.0, n))
        x = deterministic_optimum(t, 100.0)
        assert np.all(x >= 0) and x.sum() == pytest.approx(100.0, rel=1e-13)
        terms = t[::-1] * block_loads(x)
        np.testing.assert_allclose(terms, terms[0], rtol=1e-12)
        # and no other feasible point does better (the value is a lower bound for any x)
        for _ in range(20):
            y = rng.dirichlet(np.ones(n)) * 100.0
            assert np.max(t[::-1] * block_loads(y)) >= terms[0] * (1 - 1e-12)


# --- spec §9 Test C: paper scale ---------------------------------------------------------------

PAPER_DIST = ShiftedExponential(1e-3, 50.0)
PAPER = SystemModel(
    n_workers=20, coordinates=20_000, samples=50, cycles=1.0, distribution=PAPER_DIST
)
FIG3_XBAR = PAPER_FIG3["bcgc-t"]  # spec §8.1 Fig. 3, the authors' stored vectors
FIG3_XTILDE = PAPER_FIG3["bcgc-f"]
EVAL_SAMPLES = 200_000


def with_deadline(name, model, options):
    """Deadline schemes get T = E[tau] of uncoded, (M C / N) L E[T_(N)]; the others as given."""
    if not needs_deadline(name):
        return options
    t = model.scale * model.coordinates * model.distribution.order_stat_means(model.n_workers)[-1]
    return dataclasses.replace(options, deadline=float(t))


@cache
def paper_plan(name):
    return build_plan(name, PAPER, with_deadline(name, PAPER, SchemeOptions()))


@cache
def evaluation():
    """Out-of-sample cycle times (a stream no scheme tunes on), shape (2e5, 20)."""
    return monte_carlo_cycle_times(PAPER_DIST, 12345, EVAL_SAMPLES, 20, STREAM_EVALUATION)


def _estimate(name):
    return Estimate.of(paper_plan(name).raw_runtime(evaluation()))


def test_c_fig3_vectors():
    assert paper_plan("bcgc-t").x == FIG3_XBAR
    assert paper_plan("bcgc-f").x == FIG3_XTILDE


@pytest.mark.parametrize("name, target", [("bcgc-t", 3.153e7), ("bcgc-f", 3.137e7)])
def test_c_closed_form_runtimes(name, target):
    e = _estimate(name)
    assert abs(e.mean - target) <= 3 * e.stderr + 0.002e7, (e.mean, e.stderr)
    exact = paper_plan(name).exact_expected_raw_runtime(PAPER_DIST)
    assert abs(exact - target) <= 0.002e7
    assert abs(e.mean - exact) <= 3 * e.stderr


def test_c_single_bcgc():
    plan = paper_plan("single-bcgc")
    assert plan.x == (0,) * 19 + (20_000,)
    # L (s+1) E[T_(N-s)] = 2e4 * 20 * E[T_(1)] = 2e4 * 20 * 100 = 4e7
    means = PAPER_DIST.order_stat_means(20)
    formula = [20_000 * (s + 1) * means[19 - s] for s in range(20)]
    assert int(np.argmin(formula)) == 19
    assert formula[19] == pytest.approx(4.000e7, rel=1e-13)
    assert plan.exact_expected_raw_runtime(PAPER_DIST) == pytest.approx(4.0e7, rel=1e-9)


def test_c_tandon():
    plan = paper_plan("tandon")
    assert isinstance(plan, TandonPlan)
    assert plan.stragglers == 15 and plan.alpha == 6.0
    e = _estimate("tandon")
    assert abs(e.mean - 5.63e7) <= 3 * e.stderr + 0.01e7, (e.mean, e.stderr)
    assert plan.exact_expected_raw_runtime(PAPER_DIST) == pytest.approx(5.63e7, rel=5e-3)


def test_c_bcgc_opt_out_of_sample():
    plan = paper_plan("bcgc-opt")
    e = _estimate("bcgc-opt")
    print(f"bcgc-opt out-of-sample R = {e.mean:.5g} +- {e.stderr:.2g} ({EVAL_SAMPLES} samples)")
    assert e.mean <= 2.87e7
    # better than both closed forms on the same samples (common random numbers)
    diff_t = paper_plan("bcgc-t").raw_runtime(evaluation()) - plan.raw_runtime(evaluation())
    assert Estimate.of(diff_t).mean > 3 * Estimate.of(diff_t).stderr
    assert plan.exact_expected_raw_runtime(PAPER_DIST) <= 2.87e7
    # the U shape of Fig. 3: the first and last blocks hold most coordinates
    x = np.array(plan.x)
    assert x[0] > 3000 and x[-1] > 3000 and x[0] + x[-1] > 0.5 * x.sum()


def test_c_ferdinand_full_is_full_replication():
    assert paper_plan("ferdinand-L").x == (0,) * 19 + (20_000,)
    small = build_plan("ferdinand-L", B_MODEL)
    assert small.x == (0, 0, 12)


def test_c_ferdinand_half():
    r = paper_plan("ferdinand-L/2").exact_expected_raw_runtime(PAPER_DIST)
    assert r == pytest.approx(4.16e7, rel=0.01)


@pytest.mark.parametrize(
    "n_workers, expected", [(10, 3.18e7), (20, 4.16e7), (30, 5.10e7), (40, 6.04e7), (50, 7.01e7)]
)
def test_ferdinand_half_vs_n(n_workers, expected):
    # spec §8.1: "analytic centre 3.18, 4.16, 5.10, 6.04, 7.01" (R x 1e7, L = 2e4, mu = 1e-3)
    model = SystemModel(n_workers, 20_000, 50, 1.0, PAPER_DIST)
    plan = build_plan("ferdinand-L/2", model)
    assert sum(plan.x) == 20_000 and min(plan.x) >= 0
    assert plan.exact_expected_raw_runtime(PAPER_DIST) == pytest.approx(expected, rel=0.01)


def test_c_uncoded():
    # L E[T_(N)] = 2e4 (50 + H_20 / 1e-3)
    harmonic = sum(1 / j for j in range(1, 21))
    assert paper_plan("uncoded").exact_expected_raw_runtime(PAPER_DIST) == pytest.approx(
        2e4 * (50 + harmonic * 1e3), rel=1e-9
    )


# --- every scheme: integer x >= 0 summing to L ------------------------------------------------

FAST = SchemeOptions(optimizer=SubgradientSettings(iterations=60, batch=1000), tuning_samples=4000)
SMALL_MODELS = [
    SystemModel(2, 1, 2, 1.0, ShiftedExponential(1.0, 1.0)),
    SystemModel(3, 12, 3, 1.0, ShiftedExponential(1.0, 1.0)),
    SystemModel(5, 7, 50, 1.0, ShiftedExponential(1e-3, 50.0)),
    SystemModel(20, 1, 50, 1.0, ShiftedExponential(1e-3, 50.0)),
    SystemModel(4, 30, 4, 1.0, Pareto(2.5, 1.0)),
    SystemModel(6, 100, 6, 2.0, Empirical((1.0, 2.0, 2.0, 7.0))),
]


def _partition(plan):
    return plan.block_partition() if isinstance(plan, TandonPlan) else plan.x


def _check_partition(x, model):
    assert len(x) == model.n_workers
    assert all(isinstance(v, int) for v in x)
    assert all(v >= 0 for v in x)
    assert sum(x) == model.coordinates


def _check_partial(plan, model):
    """A PartialPlan has no block partition: check its storage, order and runtime instead."""
    assert 1 <= plan.storage <= model.n_workers and 1 <= plan.parts <= plan.storage
    assert sorted(c for order in plan.ordering for c in order) == sorted(
        list(range(model.n_workers)) * plan.storage
    )
    assert plan.coordinates == model.coordinates
    t = monte_carlo_cycle_times(model.distribution, 1, 200, model.n_workers, STREAM_EVALUATION)
    assert np.all(np.isfinite(plan.raw_runtime(t)))
    assert plan.exact_expected_raw_runtime(model.distribution) is None  # Monte Carlo only


PLANNED_WITHOUT_CALIBRATION = [name for name in SCHEMES if name not in SYSTEM_SCHEMES]


@pytest.mark.parametrize("name", PLANNED_WITHOUT_CALIBRATION)
def test_every_scheme_paper_point(name):
    plan = paper_plan(name)
    assert plan.scheme == name
    if isinstance(plan, PartialPlan):
        _check_partial(plan, PAPER)
        return
    _check_partition(_partition(plan), PAPER)
    if isinstance(plan, BlockPlan):
        assert plan.coordinates == 20_000


@pytest.mark.parametrize("name", PLANNED_WITHOUT_CALIBRATION)
@pytest.mark.parametrize("model", SMALL_MODELS, ids=lambda m: f"N{m.n_workers}-L{m.coordinates}")
def test_every_scheme_small_models(name, model):
    plan = build_plan(name, model, with_deadline(name, model, FAST))
    if isinstance(plan, PartialPlan):
        _check_partial(plan, model)
        return
    _check_partition(_partition(plan), model)
    assert math.isfinite(plan.exact_expected_raw_runtime(model.distribution))


def test_registry_is_complete():
    assert set(SCHEMES) == {
        "bcgc-opt",
        "bcgc-t",
        "bcgc-f",
        "single-bcgc",
        "tandon",
        "ferdinand-L",
        "ferdinand-L/2",
        "uncoded",
        "bcgc-cdf-lg",
        "bcgc-cdf-opt",
        "partial-gc",
        "partial-gc-approx",
        "bcgc-sys-opt",
    }


def test_theorem3_without_shift_degenerates_to_full_replication():
    """t0 = 0: E[1/T_(1)] is infinite and x-tilde becomes L e_{N-1} (spec §10.8)."""
    model = SystemModel(4, 10, 8, 1.0, ShiftedExponential(1e-3, 0.0))
    np.testing.assert_array_equal(theorem3_relaxed(model), [0, 0, 0, 10])
    assert build_plan("bcgc-f", model).x == (0, 0, 0, 10)
