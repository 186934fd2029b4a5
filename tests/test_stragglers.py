"""Cycle-time distributions, order statistics, seeded streams (spec/bcgc.md §1, §5, §9 B)."""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, special

from bcgc_sim.errors import UserError
from bcgc_sim.model.stragglers import (
    CycleTimeDistribution,
    Empirical,
    FailureMixture,
    Pareto,
    ShiftedExponential,
    iteration_cycle_times,
    monte_carlo_cycle_times,
    worker_rng,
)
from bcgc_sim.model.streams import STREAM_EVALUATION, STREAM_TUNING

TEST_B = ShiftedExponential(rate=1.0, shift=1.0)
PAPER = ShiftedExponential(rate=1e-3, shift=50.0)

# spec §9 Test B
TEST_B_MEANS = np.array([4 / 3, 11 / 6, 17 / 6])
TEST_B_INVERSE_MEANS = np.array([0.7862512207659539, 0.5954692597974252, 0.40732160640619614])

# E[1/T_(n)] at N = 50, mu = 1e-3, t0 = 50: mpmath, 40 digits (n = 1, 25, 50)
PAPER_N50_INVERSE = {
    1: 0.0151762918242992049589860291409257880003,
    25: 0.001414427016809921371077099003610288491927,
    50: 0.0002359126337228557681636380768301550082934,
}


def _e1_sum(rate: float, shift: float, n_workers: int) -> np.ndarray:
    """Spec eq. (8), the alternating E_1 sum; accurate in float64 only for small N."""
    out = []
    for n in range(1, n_workers + 1):
        coef = (
            rate
            * math.factorial(n_workers)
            / (math.factorial(n - 1) * math.factorial(n_workers - n))
        )
        total = 0.0
        for j in range(n):
            z = (n_workers - n + j + 1) * rate * shift
            total += (-1) ** j * math.comb(n - 1, j) * math.exp(z) * special.exp1(z)
        out.append(coef * total)
    return np.array(out)


# --- shifted exponential: exact forms ---------------------------------------------------------


def test_test_b_order_stat_means():
    np.testing.assert_allclose(TEST_B.order_stat_means(3), TEST_B_MEANS, rtol=1e-12, atol=0)


def test_test_b_order_stat_inverse_means():
    np.testing.assert_allclose(
        TEST_B.order_stat_inverse_means(3), TEST_B_INVERSE_MEANS, rtol=1e-12, atol=0
    )


def test_test_b_inverse_means_match_e1_sum():
    # spec §9 B: "the quadrature and the E_1 sum agree to 1e-14" (small N: no cancellation yet)
    np.testing.assert_allclose(_e1_sum(1.0, 1.0, 3), TEST_B_INVERSE_MEANS, rtol=1e-13)
    np.testing.assert_allclose(TEST_B.order_stat_inverse_means(3), _e1_sum(1.0, 1.0, 3), rtol=1e-13)


def test_renyi_means_paper_point():
    # spec eq. (11): E[T_(n)] = t0 + (H_N - H_{N-n}) / mu; E[T_(1)] = 50 + 1000/20 = 100 at N = 20
    means = PAPER.order_stat_means(20)
    harmonic = [sum(1.0 / j for j in range(1, k + 1)) for k in range(21)]
    expected = [50.0 + (harmonic[20] - harmonic[20 - n]) / 1e-3 for n in range(1, 21)]
    np.testing.assert_allclose(means, expected, rtol=1e-13)
    assert means[0] == pytest.approx(100.0, rel=1e-13)


@pytest.mark.parametrize("n", sorted(PAPER_N50_INVERSE))
def test_inverse_means_n50_against_mpmath(n):
    # the alternating sum of eq. (8) loses every digit here; the implementation must not
    value = PAPER.order_stat_inverse_means(50)[n - 1]
    assert value == pytest.approx(PAPER_N50_INVERSE[n], rel=1e-12, abs=0)


def test_inverse_means_are_decreasing_and_below_inverse_of_mean():
    # Jensen: E[1/T_(n)] >= 1/E[T_(n)], and both decrease in n
    inv = PAPER.order_stat_inverse_means(20)
    means = PAPER.order_stat_means(20)
    assert np.all(np.diff(inv) < 0)
    assert np.all(inv > 1.0 / means)
    assert np.all(inv < 1.0 / PAPER.shift)


# --- generic quadrature fallback (base-class methods) ---------------------------------------


@pytest.mark.parametrize(
    "dist, n_workers",
    [(TEST_B, 3), (PAPER, 20), (PAPER, 50), (ShiftedExponential(0.1, 1.0), 7)],
)
def test_generic_quadrature_matches_exact_shifted_exponential(dist, n_workers):
    generic_means = CycleTimeDistribution.order_stat_means(dist, n_workers)
    generic_inverse = CycleTimeDistribution.order_stat_inverse_means(dist, n_workers)
    np.testing.assert_allclose(generic_means, dist.order_stat_means(n_workers), rtol=1e-9)
    np.testing.assert_allclose(generic_inverse, dist.order_stat_inverse_means(n_workers), rtol=1e-9)


def test_generic_quadrature_matches_exact_pareto():
    dist = Pareto(shape=3.0, scale=2.0)
    np.testing.assert_allclose(
        CycleTimeDistribution.order_stat_means(dist, 5), dist.order_stat_means(5), rtol=1e-8
    )
    np.testing.assert_allclose(
        CycleTimeDistribution.order_stat_inverse_means(dist, 5),
        dist.order_stat_inverse_means(5),
        rtol=1e-8,
    )


def test_generic_inverse_means_need_positive_shift():
    with pytest.raises(UserError):
        CycleTimeDistribution.order_stat_inverse_means(ShiftedExponential(1.0, 0.0), 3)


# --- t0 = 0 ------------------------------------------------------------------------------------


def test_zero_shift_inverse_mean_of_fastest_is_infinite():
    dist = ShiftedExponential(rate=2.0, shift=0.0)
    n_workers = 5
    inv = dist.order_stat_inverse_means(n_workers)
    assert inv[0] == math.inf
    # n >= 2 stays finite: E[1/T_(n)] = mu N!/((n-1)!(N-n)!) int_0^1 (1-u)^(n-1) u^(N-n)/(-ln u)
    for n in range(2, n_workers + 1):
        coef = (
            2.0
            * math.factorial(n_workers)
            / (math.factorial(n - 1) * math.factorial(n_workers - n))
        )
        value, _ = integrate.quad(
            lambda u, n=n: (1 - u) ** (n - 1) * u ** (n_workers - n) / (-math.log(u)),
            0.0,
            1.0,
            epsabs=0.0,
            epsrel=1e-13,
            limit=200,
        )
        assert inv[n - 1] == pytest.approx(coef * value, rel=1e-11)


# --- Pareto ------------------------------------------------------------------------------------


def test_pareto_exact_moments_match_monte_carlo():
    dist = Pareto(shape=4.0, scale=1.5)
    n_workers, k = 5, 200_000
    rng = np.random.default_rng(20240601)
    t = np.sort(dist.sample(rng, (k, n_workers)), axis=1)
    assert np.all(t >= dist.scale)
    for values, exact in (
        (t, dist.order_stat_means(n_workers)),
        (1.0 / t, dist.order_stat_inverse_means(n_workers)),
    ):
        mean = values.mean(axis=0)
        stderr = values.std(axis=0, ddof=1) / math.sqrt(k)
        assert np.all(np.abs(mean - exact) <= 3 * stderr), (mean, exact, stderr)


def test_pareto_closed_forms():
    # N = 1: the plain Pareto moments E[T] = shape scale/(shape-1), E[1/T] = shape/((shape+1) scale)
    dist = Pareto(shape=3.0, scale=2.0)
    assert dist.order_stat_means(1)[0] == pytest.approx(3.0, rel=1e-13)
    assert dist.order_stat_inverse_means(1)[0] == pytest.approx(3.0 / 8.0, rel=1e-13)


def test_pareto_infinite_mean_of_slowest():
    # shape 0.8: E[T_(n)] is finite iff N - n + 1 > 1/shape = 1.25, i.e. all but the maximum
    means = Pareto(shape=0.8, scale=1.0).order_stat_means(4)
    assert np.all(np.isfinite(means[:-1]))
    assert means[-1] == math.inf


# --- Empirical ---------------------------------------------------------------------------------


def test_empirical_exact_matches_brute_force():
    values = (1.0, 2.0, 2.0, 5.0)
    dist = Empirical(values)
    n_workers = 3
    tuples = np.sort(np.array(list(itertools.product(values, repeat=n_workers))), axis=1)
    # every tuple is equally likely (each observation is drawn with probability 1/4)
    np.testing.assert_allclose(dist.order_stat_means(n_workers), tuples.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(
        dist.order_stat_inverse_means(n_workers), (1.0 / tuples).mean(axis=0), rtol=1e-13
    )
    np.testing.assert_allclose(dist.order_stat_means(n_workers), [1.46875, 2.3125, 3.71875])


def test_empirical_samples_only_observed_values(tmp_path):
    path = tmp_path / "times.csv"
    path.write_text("worker,cycle_time\n0,1.5\n1,2.5\n2,4.0\n")
    dist = Empirical.from_csv(path)
    assert sorted(dist.values) == [1.5, 2.5, 4.0]
    draws = dist.sample(np.random.default_rng(1), 1000)
    assert set(np.unique(draws)) == {1.5, 2.5, 4.0}
    assert dist.lower_bound == 1.5


# --- failure mixture ---------------------------------------------------------------------------


def test_failure_mixture_has_infinite_order_stat_means():
    dist = FailureMixture(ShiftedExponential(1.0, 1.0), probability=0.2)
    assert np.all(dist.order_stat_means(4) == math.inf)
    assert dist.failure_probability == 0.2
    assert float(dist.cdf(1e12)) == pytest.approx(0.8, abs=1e-15)


def test_failure_mixture_fraction_of_failures():
    p, k = 0.2, 200_000
    dist = FailureMixture(ShiftedExponential(1.0, 1.0), probability=p)
    t = dist.sample(np.random.default_rng(7), k)
    fraction = float(np.mean(np.isinf(t)))
    assert abs(fraction - p) <= 3 * math.sqrt(p * (1 - p) / k)
    assert np.all(t[np.isfinite(t)] >= 1.0)


def test_failure_mixture_inverse_means_match_monte_carlo():
    # 1/inf = 0: failed workers contribute nothing to E[1/T_(n)]
    dist = FailureMixture(ShiftedExponential(1.0, 1.0), probability=0.2)
    k = 200_000
    inv = 1.0 / np.sort(dist.sample(np.random.default_rng(11), (k, 3)), axis=1)
    mean, stderr = inv.mean(axis=0), inv.std(axis=0, ddof=1) / math.sqrt(k)
    assert np.all(np.abs(mean - dist.order_stat_inverse_means(3)) <= 3 * stderr)


# --- seeded streams ----------------------------------------------------------------------------


def test_worker_rng_reproducible():
    a = worker_rng(5, 3, 2).standard_normal(8)
    b = worker_rng(5, 3, 2).standard_normal(8)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("other", [(6, 3, 2), (5, 4, 2), (5, 3, 1), (5, 2, 3)])
def test_worker_rng_differs_for_other_keys(other):
    a = worker_rng(5, 3, 2).standard_normal(8)
    b = worker_rng(*other).standard_normal(8)
    assert not np.any(a == b)


def test_iteration_cycle_times_reproducible_and_per_worker():
    t1 = iteration_cycle_times(PAPER, seed=9, iteration=4, n_workers=6)
    t2 = iteration_cycle_times(PAPER, seed=9, iteration=4, n_workers=6)
    np.testing.assert_array_equal(t1, t2)
    assert t1.shape == (6,) and np.all(t1 >= PAPER.shift)
    assert np.unique(t1).size == 6
    # each worker can draw its own entry alone
    for w in range(6):
        assert PAPER.sample(worker_rng(9, 4, w), 1)[0] == t1[w]
    assert not np.any(iteration_cycle_times(PAPER, 9, 5, 6) == t1)
    assert not np.any(iteration_cycle_times(PAPER, 10, 4, 6) == t1)


def test_monte_carlo_streams_reproducible_and_distinct():
    a = monte_carlo_cycle_times(TEST_B, 3, 100, 4, STREAM_TUNING)
    b = monte_carlo_cycle_times(TEST_B, 3, 100, 4, STREAM_TUNING)
    c = monte_carlo_cycle_times(TEST_B, 3, 100, 4, STREAM_EVALUATION)
    assert a.shape == (100, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.any(a == c)


def test_sample_mean_matches_distribution():
    t = PAPER.sample(np.random.default_rng(0), 200_000)
    assert t.min() >= 50.0
    assert abs(t.mean() - 1050.0) <= 3 * t.std(ddof=1) / math.sqrt(t.size)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ShiftedExponential(0.0, 1.0),
        lambda: ShiftedExponential(-1.0, 1.0),
        lambda: ShiftedExponential(math.inf, 1.0),
        lambda: ShiftedExponential(1.0, -0.5),
        lambda: FailureMixture(TEST_B, 1.0),
        lambda: Pareto(0.0, 1.0),
        lambda: Empirical(()),
        lambda: Empirical((1.0, -2.0)),
    ],
)
def test_invalid_parameters_raise_user_error(make):
    with pytest.raises(UserError):
        make()
