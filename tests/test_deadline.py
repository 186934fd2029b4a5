"""Completion probability of every scheme for a deadline, and the deadline schemes (spec §6, §7, §9 B)."""

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

from bcgc_sim.entry.cli import main
from bcgc_sim.errors import UserError
from bcgc_sim.model.deadline import (
    CompletionModel,
    best_single_level,
    best_tandon,
    cdf_large_t,
    cdf_large_t_relaxed,
    deadline_baselines,
    ferdinand_cdf_partition,
    maximise_completion_probability,
    raw_deadline,
    single_level_completion_probability,
    union_bound,
)
from bcgc_sim.model.ferdinand import ferdinand_partition
from bcgc_sim.model.optimize import SubgradientSettings
from bcgc_sim.model.plans import BlockPlan, TandonPlan
from bcgc_sim.model.runtime import block_completion_probability, block_raw_runtime
from bcgc_sim.model.stragglers import (
    Empirical,
    FailureMixture,
    Pareto,
    ShiftedExponential,
    monte_carlo_cycle_times,
)
from bcgc_sim.model.streams import STREAM_EVALUATION
from bcgc_sim.model.system import SystemModel
from bcgc_sim.schemes import (
    PARTIAL_SCHEMES,
    SCHEMES,
    SYSTEM_SCHEMES,
    SchemeOptions,
    build_plan,
    needs_deadline,
)

# spec §9 Test B: N = 3, mu = 1, t0 = 1, L = 12, M = 3, C = 1, so M C / N = 1 and r = t
B_DIST = ShiftedExponential(1.0, 1.0)
B_MODEL = SystemModel(3, 12, 3, 1.0, B_DIST)
ALPHA = 6.0
MC_SAMPLES = 200_000


@pytest.fixture(scope="module")
def b_samples():
    return monte_carlo_cycle_times(B_DIST, 7, MC_SAMPLES, 3, STREAM_EVALUATION)


def within_3_se(p_exact: float, hits: np.ndarray) -> bool:
    """The Monte-Carlo proportion is within 3 standard errors of a binomial proportion."""
    se = math.sqrt(max(p_exact * (1 - p_exact), 1e-12) / hits.size)
    return abs(hits.mean() - p_exact) <= 3 * se


# --- spec §9 Test B completion probabilities -------------------------------------------------


@pytest.mark.parametrize(
    "x, t, expected",
    [
        ((8, 2, 2), 20, 0.1392066),
        ((8, 2, 2), 30, 0.6924025),
        ((8, 2, 2), 40, 0.9118765),
        ((12, 0, 0), 20, 0.1152048),
        ((12, 0, 0), 30, 0.4688617),
        ((12, 0, 0), 40, 0.7363829),
    ],
)
def test_b_values_by_the_differentiable_dp(x, t, expected):
    model = CompletionModel(3, raw_deadline(B_MODEL, t), B_DIST)
    assert model.probability(np.array(x, float)) == pytest.approx(expected, abs=5e-8)


def test_b_uncoded_closed_form():
    # (1 - e^{-2/3})^3: all three workers below c = 20 / 12
    p = single_level_completion_probability(0, 12, 20.0, B_DIST, 3)
    assert p == pytest.approx((1 - math.exp(-2 / 3)) ** 3, rel=1e-12)
    assert p == pytest.approx(0.1152048, abs=5e-8)


@pytest.mark.parametrize("t", [12.0, 20.0, 30.0, 40.0, 75.0])
@pytest.mark.parametrize("level", [0, 1, 2])
def test_single_level_formula_equals_dp_and_monte_carlo(level, t, b_samples):
    p = single_level_completion_probability(level, 12, t, B_DIST, 3)
    x = [0, 0, 0]
    x[level] = 12
    plan = BlockPlan("single-bcgc", tuple(x))
    assert p == pytest.approx(plan.completion_probability(t, B_DIST), abs=1e-14)
    assert within_3_se(p, plan.raw_runtime(b_samples) <= t)


@pytest.mark.parametrize("t", [12.0, 20.0, 30.0, 40.0])
@pytest.mark.parametrize("s", [0, 1, 2])
def test_tandon_probability_against_monte_carlo(s, t, b_samples):
    plan = TandonPlan("tandon", 3, 12, s, ALPHA)
    p = plan.completion_probability(t, B_DIST)
    assert within_3_se(p, plan.raw_runtime(b_samples) <= t)


def test_best_levels_are_the_argmax():
    for t in (20.0, 30.0, 40.0):
        level, p = best_single_level(B_MODEL, t)
        values = [single_level_completion_probability(s, 12, t, B_DIST, 3) for s in range(3)]
        assert p == max(values) and level == int(np.argmax(values))
        s, q = best_tandon(B_MODEL, t, ALPHA)
        tandon = [
            TandonPlan("t", 3, 12, k, ALPHA).completion_probability(t, B_DIST) for k in range(3)
        ]
        assert q == max(tandon) and s == int(np.argmax(tandon))


# --- Ferdinand & Draper, CDF-part mapping (spec §7.3, §10.11) --------------------------------


@pytest.mark.parametrize("n, coordinates", [(3, 12), (5, 7), (10, 400), (20, 4000), (7, 1)])
def test_ferdinand_cdf_mapping(n, coordinates):
    full = ferdinand_partition(n, coordinates, coordinates, part="cdf")
    assert full.tolist() == [0] * (n - 1) + [coordinates]  # r = L forces s_j = N - 1
    layers = max(1, coordinates // 2)
    x = ferdinand_partition(n, coordinates, layers, part="cdf")
    assert x.sum() == coordinates and x.min() >= 0
    # layer j holds N - s_j coordinates: block n is a whole number of layers of size N - n
    sizes = n - np.arange(n)
    assert np.all(x % sizes == 0)
    assert int((x // sizes).sum()) == layers
    # the expectation mapping is unchanged by the new parameter
    assert np.array_equal(
        ferdinand_partition(n, coordinates, layers),
        ferdinand_partition(n, coordinates, layers, s_min=1, part="expectation"),
    )


def test_baselines_at_test_b_against_monte_carlo(b_samples):
    for t in (20.0, 30.0, 40.0):
        found = deadline_baselines(B_MODEL, t, ALPHA)
        assert set(found) == {"single-bcgc", "tandon", "ferdinand-L", "ferdinand-L/2"}
        assert found["ferdinand-L"].plan.x == (0, 0, 12)
        assert found["ferdinand-L/2"].plan.x == tuple(
            int(v) for v in ferdinand_cdf_partition(B_MODEL, 6)
        )
        for name, result in found.items():
            assert within_3_se(result.probability, result.plan.raw_runtime(b_samples) <= t), name
            assert result.probability == pytest.approx(
                result.plan.completion_probability(t, B_DIST), abs=1e-14
            )


# --- x^(CDF,lg) (spec §6, §9 B) --------------------------------------------------------------


def test_b_cdf_large_t_closed_form():
    x = cdf_large_t_relaxed(3, 12)
    np.testing.assert_allclose(x, [72 / 11, 36 / 11, 24 / 11], rtol=1e-14)  # 12 / (H_3 (n+1))
    np.testing.assert_allclose(x, [6.5455, 3.2727, 2.1818], atol=5e-5)
    assert block_completion_probability(x, 30.0, B_DIST) == pytest.approx(0.6662418, abs=5e-8)
    assert CompletionModel(3, 30.0, B_DIST).probability(x) == pytest.approx(0.6662418, abs=5e-8)
    assert tuple(cdf_large_t(3, 12)) == (7, 3, 2)  # R1
    plan = build_plan("bcgc-cdf-lg", B_MODEL, SchemeOptions(deadline=30.0))
    assert plan.x == (7, 3, 2)


def test_cdf_large_t_equalises_loads_per_straggler():
    x = cdf_large_t_relaxed(20, 4e4)
    loads = np.cumsum(np.arange(1, 21) * x)
    np.testing.assert_allclose(loads / np.arange(1, 21), 4e4 / np.sum(1 / np.arange(1, 21)))


# --- the differentiable DP ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "dist",
    [B_DIST, ShiftedExponential(0.1, 1.0), Pareto(2.5, 1.0), FailureMixture(B_DIST, 0.05)],
    ids=["B", "paper-cdf", "pareto", "failures"],
)
def test_completion_model_matches_reference_dp_and_finite_differences(dist):
    rng = np.random.default_rng(3)
    n = 6
    for trial in range(6):
        x = rng.dirichlet(np.ones(n)) * 50
        empty = int(rng.integers(1, n)) if trial % 2 else None
        if empty is not None:
            x[empty] = 0.0
        # a deadline near the median of R(x), so that P is neither 0 nor 1
        raw = float(np.median(block_raw_runtime(x, dist.sample(rng, (400, n)))))
        model = CompletionModel(n, raw, dist)
        p, grad = model.evaluate(x)
        assert p == pytest.approx(block_completion_probability(x, raw, dist), abs=1e-12)
        assert 0.0 < p < 1.0
        direction = rng.normal(size=n)
        direction -= direction.mean()  # stay on sum x = L
        h = 1e-5
        if empty is None:  # central difference
            numeric = model.probability(x + h * direction) - model.probability(x - h * direction)
            numeric /= 2 * h
        else:  # the empty block can only grow: one-sided difference
            direction[empty] = abs(direction[empty]) + 0.5
            direction -= np.where(np.arange(n) == empty, 0.0, direction.sum() / (n - 1))
            h = 1e-7
            numeric = (model.probability(x + h * direction) - p) / h
        assert grad @ direction == pytest.approx(numeric, rel=1e-3, abs=1e-8)


@pytest.mark.parametrize(
    "x",
    [(0, 0, 5, 3, 2, 0), (0, 4, 0, 0, 6, 0), (10, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 10)],
)
def test_completion_model_with_leading_empty_blocks_and_failures(x):
    # a leading empty block (S_0 = 0) puts no constraint on the slowest workers (spec §3)
    dist = FailureMixture(ShiftedExponential(1.0, 1.0), 0.1)
    for raw in (15.0, 30.0, 60.0):
        expected = block_completion_probability(np.array(x, float), raw, dist)
        assert CompletionModel(6, raw, dist).probability(np.array(x, float)) == pytest.approx(
            expected, abs=1e-13
        )


def test_union_bound_is_an_upper_bound_of_the_failure_probability():
    rng = np.random.default_rng(5)
    dist = ShiftedExponential(0.1, 1.0)
    for _ in range(10):
        x = rng.dirichlet(np.ones(8)) * 1000
        raw = float(rng.uniform(1e3, 1e5))
        bound, _ = union_bound(x, raw, dist)
        assert bound >= 1 - block_completion_probability(x, raw, dist) - 1e-12


# --- bcgc-cdf-opt ------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [20.0, 30.0, 40.0])
def test_b_cdf_opt_is_the_best_integer_partition(t):
    best = max(
        block_completion_probability(np.array(x), t, B_DIST)
        for x in itertools.product(range(13), repeat=3)
        if sum(x) == 12
    )
    plan = build_plan("bcgc-cdf-opt", B_MODEL, SchemeOptions(deadline=t))
    assert plan.completion_probability(t, B_DIST) == pytest.approx(best, abs=1e-12)


SMALL = [
    (SystemModel(3, 12, 3, 1.0, B_DIST), 30.0),
    (SystemModel(5, 60, 50, 1.0, ShiftedExponential(0.1, 1.0)), 10**3.3),
    (SystemModel(8, 400, 800, 1.0, ShiftedExponential(1e-3, 50.0)), 6e7),
    (SystemModel(6, 90, 6, 1.0, Pareto(2.5, 1.0)), 400.0),
    (SystemModel(4, 30, 4, 1.0, FailureMixture(ShiftedExponential(1.0, 1.0), 0.05)), 150.0),
    (SystemModel(6, 100, 6, 2.0, Empirical((1.0, 2.0, 2.0, 7.0))), 600.0),
]


@pytest.mark.parametrize("model, deadline", SMALL, ids=lambda v: getattr(v, "n_workers", v))
def test_cdf_opt_beats_every_baseline(model, deadline):
    raw = raw_deadline(model, deadline)
    options = SchemeOptions(deadline=deadline)
    opt = build_plan("bcgc-cdf-opt", model, options)
    assert sum(opt.x) == model.coordinates and min(opt.x) >= 0
    p = opt.completion_probability(raw, model.distribution)
    lg = build_plan("bcgc-cdf-lg", model, options).completion_probability(raw, model.distribution)
    assert p >= lg - 1e-12
    for name, found in deadline_baselines(model, deadline, ALPHA).items():
        assert p >= found.probability - 1e-12, name
    e_plans = ("uncoded",) if model.distribution.failure_probability > 0 else ("bcgc-t", "uncoded")
    for name in e_plans:  # the E[tau] plans, at this deadline
        other = build_plan(name, model, options).completion_probability(raw, model.distribution)
        assert p >= other - 1e-12, name


def test_cdf_opt_reaches_0990_at_the_paper_point():
    # spec §8.2 / §6 'Caveat': N = 20, L = 4e4, mu = 0.1, t0 = 1, t = 10^6.5; paper CSSCA 0.905
    model = SystemModel(20, 40_000, 50, 1.0, ShiftedExponential(0.1, 1.0))
    t = 10**6.5
    plan = build_plan("bcgc-cdf-opt", model, SchemeOptions(deadline=t))
    p = plan.completion_probability(raw_deadline(model, t), model.distribution)
    assert p >= 0.990
    x, q = maximise_completion_probability(20, 40_000, t * 20 / 50, model.distribution)
    assert tuple(int(v) for v in x) == plan.x and q == pytest.approx(p, abs=1e-12)


# --- options, errors, and the E[tau] schemes ----------------------------------------------------


def test_registry_marks_the_deadline_schemes():
    assert {name for name in SCHEMES if needs_deadline(name)} == {"bcgc-cdf-lg", "bcgc-cdf-opt"}


@pytest.mark.parametrize("name", ["bcgc-cdf-lg", "bcgc-cdf-opt"])
@pytest.mark.parametrize("deadline", [None, 0.0, -1.0, math.nan, math.inf])
def test_deadline_scheme_without_valid_deadline_is_a_user_error(name, deadline):
    with pytest.raises(UserError, match="deadline") as info:
        build_plan(name, B_MODEL, SchemeOptions(deadline=deadline))
    assert "\n" not in str(info.value)


def test_expectation_schemes_ignore_the_deadline():
    fast = SchemeOptions(
        optimizer=SubgradientSettings(iterations=40, batch=500), tuning_samples=2000
    )
    model = SystemModel(5, 60, 50, 1.0, ShiftedExponential(1e-3, 50.0))
    for name in SCHEMES:
        if not needs_deadline(name) and name not in SYSTEM_SCHEMES:
            plain = build_plan(name, model, fast)
            timed = build_plan(name, model, dataclasses.replace(fast, deadline=1e5))
            assert plain == timed, name


# --- CLI -------------------------------------------------------------------------------------

CLI_SMALL = [
    "--set", "predict.samples=2000", "--set", "cluster.workers=5",
    "--set", "model.coordinates=60", "--set", "model.samples=50",
    "--set", "straggler.rate=0.1", "--set", "straggler.shift=1.0",
]  # fmt: skip
CLI_DEADLINE = 10**3.3  # model time units; M C / N = 10


def _one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("bcgc: error:"), err
    return err


def test_cli_plan_json_with_deadline(capsys):
    argv = ["plan", "--json", "--scheme", "bcgc-cdf-opt", "--deadline", str(CLI_DEADLINE)]
    assert main([*argv, *CLI_SMALL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"scheme", "description", "x", "deadline", "completion_probability"}
    assert out["scheme"] == "bcgc-cdf-opt" and out["deadline"] == pytest.approx(CLI_DEADLINE)
    assert 0 < out["completion_probability"] <= 1
    assert len(out["x"]) == 5 and sum(out["x"]) == 60


def test_cli_predict_json_with_deadline(capsys):
    assert main(["predict", "--json", "--deadline", str(CLI_DEADLINE), *CLI_SMALL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deadline"] == pytest.approx(CLI_DEADLINE)
    schemes = out["schemes"]
    assert set(schemes) == set(SCHEMES) - set(SYSTEM_SCHEMES)  # deadline schemes included
    model = SystemModel(5, 60, 50, 1.0, ShiftedExponential(0.1, 1.0))
    raw = raw_deadline(model, CLI_DEADLINE)
    blocks = {k: v for k, v in schemes.items() if k not in PARTIAL_SCHEMES}
    for name, r in schemes.items():
        p = r["completion_probability"]
        assert 0.0 <= p <= 1.0, name
        if name in blocks and name != "tandon":
            expected = block_completion_probability(np.array(r["x"]), raw, model.distribution)
            assert p == pytest.approx(expected, abs=1e-12), name
    best = schemes["bcgc-cdf-opt"]["completion_probability"]  # best among block partitions
    assert all(best >= r["completion_probability"] - 1e-12 for r in blocks.values())


def test_cli_predict_text_has_the_probability_column(capsys):
    argv = ["predict", "--deadline", str(CLI_DEADLINE), "--scheme", "bcgc-cdf-lg", *CLI_SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "P(tau<=T)" in out and "bcgc-cdf-lg" in out


def test_cli_predict_without_deadline_skips_the_deadline_schemes(capsys):
    assert main(["predict", "--json", *CLI_SMALL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["schemes"]) == {
        name for name in SCHEMES if not needs_deadline(name) and name not in SYSTEM_SCHEMES
    }
    assert all("completion_probability" not in r for r in out["schemes"].values())


def test_cli_config_deadline_and_override(capsys):
    argv = ["predict", "--json", "--scheme", "uncoded", *CLI_SMALL]
    assert main([*argv, "--set", "predict.deadline=2000"]) == 0
    from_config = json.loads(capsys.readouterr().out)
    assert from_config["deadline"] == 2000.0
    assert main([*argv, "--set", "predict.deadline=2000", "--deadline", "3000"]) == 0
    overridden = json.loads(capsys.readouterr().out)
    assert overridden["deadline"] == 3000.0
    p2000 = from_config["schemes"]["uncoded"]["completion_probability"]
    assert overridden["schemes"]["uncoded"]["completion_probability"] > p2000


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--scheme", "bcgc-cdf-opt"],
        ["plan", "--scheme", "bcgc-cdf-lg"],
        ["predict", "--scheme", "uncoded", "--deadline", "0"],
        ["predict", "--scheme", "uncoded", "--deadline", "-5"],
        ["predict", "--scheme", "uncoded", "--set", "predict.deadline=-1"],
    ],
)
def test_cli_deadline_errors_are_one_line(argv, capsys):
    assert main([*argv, *CLI_SMALL]) == 2
    assert "deadline" in _one_error_line(capsys)
