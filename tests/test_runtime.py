"""Runtime model: eq. (2), eq. (5), E[R], completion probability (spec/bcgc.md §3, §6, §7.2, §9)."""

import itertools
import math

import numpy as np
import pytest
from helpers import coordinate_raw_runtime

from bcgc_sim.model.plans import BlockPlan, TandonPlan
from bcgc_sim.model.runtime import (
    Estimate,
    block_completion_probability,
    block_loads,
    block_raw_runtime,
    expected_from_cdf,
    runtime_scale,
    tandon_completion_probability,
    tandon_raw_runtime,
)
from bcgc_sim.model.stragglers import Empirical, FailureMixture, Pareto, ShiftedExponential

# --- spec §9 Test A: N = 3, M = 6, C = 1, L = 4, s = (0, 1, 1, 2), T = (2, 1, 4) ---------------

A_S = np.array([0, 1, 1, 2])
A_X = np.array([1, 2, 1])
A_T = np.array([2.0, 1.0, 4.0])
A_SCALE = runtime_scale(samples=6, cycles=1.0, n_workers=3)


def test_a_scale_and_loads():
    assert A_SCALE == 2.0
    np.testing.assert_array_equal(block_loads(A_X), [1, 5, 8])
    assert np.array_equal(np.bincount(A_S, minlength=3), A_X)


def test_a_eq2_and_eq5_give_tau_20():
    tau_coord = A_SCALE * coordinate_raw_runtime(A_S, A_T)
    tau_block = A_SCALE * block_raw_runtime(A_X, A_T)
    assert tau_coord.shape == (1,) and tau_block.shape == (1,)
    assert tau_coord[0] == 20.0
    assert tau_block[0] == 20.0
    # eq. (5) by hand: 2 * max(4*1, 2*5, 1*8)
    assert tau_block[0] == 2 * max(4 * 1, 2 * 5, 1 * 8)


def test_a_worker_finish_and_master_recovery_times():
    cumulative = A_SCALE * np.cumsum(A_S + 1)  # cycles per worker, in model time per unit T
    np.testing.assert_array_equal(cumulative, [2, 6, 10, 16])
    finish = A_T[:, None] * cumulative[None, :]  # rows = workers
    np.testing.assert_array_equal(finish, [[4, 12, 20, 32], [2, 6, 10, 16], [8, 24, 40, 64]])
    # coordinate l is recovered when the (N - s_l)-th fastest worker has sent it
    recovery = np.array([np.sort(finish[:, l])[3 - A_S[l] - 1] for l in range(4)])
    np.testing.assert_array_equal(recovery, [8, 12, 20, 16])
    # eq. (2) on every prefix of the coordinates is the running maximum of the recovery times
    prefixes = [A_SCALE * coordinate_raw_runtime(A_S[: l + 1], A_T)[0] for l in range(4)]
    np.testing.assert_array_equal(prefixes, np.maximum.accumulate(recovery))
    # the fastest sets: {2} for s = 2, {1, 2} for s = 1 (1-based), {1, 2, 3} for s = 0
    order = np.argsort(A_T)
    assert set(order[:1]) == {1} and set(order[:2]) == {0, 1}


@pytest.mark.parametrize(
    "x, s, tau",
    [
        ((4, 0, 0), (0, 0, 0, 0), 32.0),
        ((0, 4, 0), (1, 1, 1, 1), 32.0),
        ((0, 0, 4), (2, 2, 2, 2), 24.0),
    ],
)
def test_a_other_codings(x, s, tau):
    assert A_SCALE * block_raw_runtime(np.array(x), A_T)[0] == tau
    assert A_SCALE * coordinate_raw_runtime(np.array(s), A_T)[0] == tau


def test_a_block_plan_layout():
    plan = BlockPlan("test-a", (1, 2, 1))
    blocks = plan.blocks()
    assert [(b.stragglers, b.start, b.stop, b.load) for b in blocks] == [
        (0, 0, 1, 1),
        (1, 1, 3, 5),
        (2, 3, 4, 8),
    ]
    assert plan.coordinates == 4 and plan.n_workers == 3
    assert plan.raw_runtime(A_T[None, :])[0] == 10.0
    # empty blocks are skipped
    assert [b.stragglers for b in BlockPlan("gap", (2, 0, 3)).blocks()] == [0, 2]


def test_block_runtime_vectorised_over_realisations():
    t = np.array([[2.0, 1.0, 4.0], [1.0, 1.0, 1.0], [3.0, 5.0, 4.0]])
    r = block_raw_runtime(A_X, t)
    np.testing.assert_array_equal(r, [10.0, 8.0, max(5 * 1, 4 * 5, 3 * 8)])


# --- spec §9 Test B: N = 3, mu = 1, t0 = 1, L = 12, M = 3, C = 1 (MC/N = 1) -------------------

B_DIST = ShiftedExponential(rate=1.0, shift=1.0)
B_XBAR = np.array([352.0, 96.0, 68.0]) / 43.0
B_XTILDE = np.array([8.651240, 1.998066, 1.350694])


def _exact(x, dist=B_DIST):
    x = np.asarray(x, dtype=float)
    loads = block_loads(x)[x > 0]
    return expected_from_cdf(lambda r: block_completion_probability(x, r, dist), dist, loads)


def test_b_scale_is_one():
    assert runtime_scale(3, 1.0, 3) == 1.0


@pytest.mark.parametrize(
    "x, expected",
    [
        (B_XBAR, 27.971183),
        ((8, 2, 2), 27.837658),
        ((8, 1, 3), 28.104236),
        ((12, 0, 0), 34.0),
        ((0, 12, 0), 44.0),
        ((0, 0, 12), 48.0),
    ],
)
def test_b_exact_expected_runtime(x, expected):
    if all(float(v).is_integer() for v in x):
        value = BlockPlan("b", tuple(int(v) for v in x)).exact_expected_raw_runtime(B_DIST)
    else:
        value = _exact(x)
    assert value == pytest.approx(expected, abs=1e-6)


def test_b_exact_expected_runtime_x_tilde():
    # x-tilde is given to 6 decimals; E[R] is flat there, so the stated value holds to ~1e-6
    assert _exact(B_XTILDE) == pytest.approx(28.144575, abs=2e-6)


def test_b_relaxed_optimum_value():
    assert _exact((8.113, 1.745, 2.142)) == pytest.approx(27.8189, abs=1e-3)


def test_b_best_integer_partition():
    # (8, 2, 2) is the best of all 91 integer partitions of L = 12, then (8, 1, 3)
    values = {
        (a, b, 12 - a - b): BlockPlan("b", (a, b, 12 - a - b)).exact_expected_raw_runtime(B_DIST)
        for a in range(13)
        for b in range(13 - a)
    }
    ranked = sorted(values, key=values.get)
    assert ranked[:2] == [(8, 2, 2), (8, 1, 3)]


def test_b_single_bcgc_closed_form():
    # E[R] of x = L e_s is L (s+1) E[T_(N-s)] (spec §7.1)
    means = B_DIST.order_stat_means(3)
    for s in range(3):
        x = [0, 0, 0]
        x[s] = 12
        exact = BlockPlan("single", tuple(x)).exact_expected_raw_runtime(B_DIST)
        assert exact == pytest.approx(12 * (s + 1) * means[2 - s], rel=1e-9)


@pytest.mark.parametrize(
    "x, deadline, expected",
    [
        ((8, 2, 2), 20.0, 0.1392066),
        ((8, 2, 2), 30.0, 0.6924025),
        ((8, 2, 2), 40.0, 0.9118765),
        ((12, 0, 0), 20.0, 0.1152048),
        ((12, 0, 0), 30.0, 0.4688617),
        ((12, 0, 0), 40.0, 0.7363829),
    ],
)
def test_b_completion_probability(x, deadline, expected):
    value = BlockPlan("b", x).completion_probability(deadline, B_DIST)
    assert value == pytest.approx(expected, abs=1e-7)


def test_b_completion_probability_uncoded_closed_form():
    assert block_completion_probability(np.array([12, 0, 0]), 20.0, B_DIST) == pytest.approx(
        (1 - math.exp(-2 / 3)) ** 3, rel=1e-12
    )


def test_b_completion_probability_large_t_solution():
    harmonic = 1 + 1 / 2 + 1 / 3
    x_lg = 12.0 / (harmonic * np.arange(1, 4))  # (6.5455, 3.2727, 2.1818)
    np.testing.assert_allclose(x_lg, [6.5455, 3.2727, 2.1818], atol=5e-5)
    assert block_completion_probability(x_lg, 30.0, B_DIST) == pytest.approx(0.6662418, abs=1e-7)


def test_completion_probability_edges():
    x = np.array([8, 2, 2])
    assert block_completion_probability(x, 0.0, B_DIST) == 0.0
    # R >= t0 * S_2 = 18 surely (every T >= t0 = 1)
    assert block_completion_probability(x, 17.9, B_DIST) == 0.0
    assert block_completion_probability(x, 18.5, B_DIST) > 0.0
    assert block_completion_probability(x, 1e6, B_DIST) == pytest.approx(1.0, abs=1e-12)
    grid = [block_completion_probability(x, r, B_DIST) for r in np.linspace(15, 80, 40)]
    assert np.all(np.diff(grid) >= -1e-15)


# --- the exact DP against brute force ----------------------------------------------------------


def _catalan_vectors(n_workers):
    """Count vectors k (slowest interval I_0 first) with prefix sums k_1+..+k_n <= n, total N."""
    out = []
    for k in itertools.product(range(n_workers + 1), repeat=n_workers):
        if sum(k) == n_workers and all(sum(k[:i]) <= i for i in range(1, n_workers + 1)):
            out.append(k)
    return out


def _brute_force_probability(x, deadline, dist):
    """Enumerate which interval each labelled worker falls into; check every block directly.

    Intervals: (-inf, c_{N-1}], (c_{n+1}, c_n] for n = N-2..0, and (c_0, inf] (incl. failures),
    with c_n = deadline / S_n over ALL n (empty blocks included).
    """
    x = np.asarray(x, dtype=float)
    n_workers = x.size
    c = deadline / block_loads(x)  # non-increasing, may be inf where S_n = 0
    edges = np.concatenate([[0.0], np.asarray(dist.cdf(c[::-1]), dtype=float), [1.0]])
    edges = np.maximum.accumulate(edges)
    mass = np.diff(edges)  # mass[i]: interval i, i = 0 fastest .. N slowest
    total = 0.0
    for assignment in itertools.product(range(n_workers + 1), repeat=n_workers):
        a = np.array(assignment)
        ok = all(np.sum(a <= n_workers - 1 - n) >= n_workers - n for n in range(n_workers))
        if ok:
            total += float(np.prod(mass[a]))
    return total


def test_catalan_counts():
    assert len(_catalan_vectors(3)) == 5
    assert len(_catalan_vectors(4)) == 14


def test_catalan_formula_matches_dp():
    """Spec §6 formula: sum over K of N!/prod k_i! prod q_i^k_i, I_0 = (c_1, c_0] first."""
    rng = np.random.default_rng(3)
    for n_workers in (3, 4):
        for _ in range(3):
            x = rng.integers(1, 10, n_workers).astype(float)
            deadline = float(
                rng.uniform(0.8, 2.5) * B_DIST.order_stat_means(n_workers)[1] * block_loads(x)[-1]
            )
            c = deadline / block_loads(x)
            cdf = np.asarray(B_DIST.cdf(c), dtype=float)
            q = np.append(cdf[:-1] - cdf[1:], cdf[-1])  # q_n = mass of I_n, n = 0..N-1
            total = 0.0
            for k in _catalan_vectors(n_workers):
                ways = math.factorial(n_workers) / math.prod(math.factorial(v) for v in k)
                total += ways * math.prod(q[i] ** k[i] for i in range(n_workers))
            dp = block_completion_probability(x, deadline, B_DIST)
            assert dp == pytest.approx(total, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n_workers", [3, 4])
@pytest.mark.parametrize(
    "dist",
    [
        ShiftedExponential(1.0, 1.0),
        Pareto(2.0, 1.0),
        FailureMixture(ShiftedExponential(0.5, 0.2), 0.15),
        Empirical((1.0, 1.5, 3.0)),
    ],
    ids=["shifted-exp", "pareto", "failures", "empirical"],
)
def test_dp_matches_labelled_enumeration(n_workers, dist):
    rng = np.random.default_rng(100 + n_workers)
    for trial in range(4):
        x = rng.integers(0, 6, n_workers)
        if trial == 0:
            x[1] = 0  # an empty block in the middle
        if x.sum() == 0:
            x[0] = 1
        loads = block_loads(x)
        for factor in (0.9, 1.1, 1.3, 2.0, 3.5):
            deadline = factor * float(loads[-1])  # c_{N-1} = factor: a typical cycle time
            brute = _brute_force_probability(x, deadline, dist)
            dp = block_completion_probability(x.astype(float), deadline, dist)
            assert dp == pytest.approx(brute, rel=1e-12, abs=1e-14), (x, deadline)


def test_dp_matches_direct_monte_carlo():
    rng = np.random.default_rng(8)
    x = np.array([5.0, 0.0, 3.0, 2.0])
    t = B_DIST.sample(rng, (200_000, 4))
    r = block_raw_runtime(x, t)
    for deadline in (18.0, 25.0, 35.0):
        hits = r <= deadline
        p = block_completion_probability(x, deadline, B_DIST)
        assert abs(hits.mean() - p) <= 3 * math.sqrt(p * (1 - p) / hits.size)


# --- Monte Carlo E[R] against the exact value --------------------------------------------------


@pytest.mark.parametrize("x", [(8, 2, 2), (12, 0, 0), (0, 12, 0), (3, 5, 4), (0, 7, 5)])
def test_monte_carlo_expected_runtime_matches_exact(x):
    t = B_DIST.sample(np.random.default_rng(sum(x) * 31 + x[0]), (200_000, 3))
    plan = BlockPlan("b", x)
    estimate = Estimate.of(plan.raw_runtime(t))
    exact = plan.exact_expected_raw_runtime(B_DIST)
    assert abs(estimate.mean - exact) <= 3 * estimate.stderr


def test_monte_carlo_x_bar():
    t = B_DIST.sample(np.random.default_rng(2023), (200_000, 3))
    estimate = Estimate.of(block_raw_runtime(B_XBAR, t))
    assert abs(estimate.mean - 27.971183) <= 3 * estimate.stderr


def test_pareto_exact_expected_runtime_matches_monte_carlo():
    dist = Pareto(shape=3.0, scale=1.0)
    plan = BlockPlan("p", (4, 3, 0, 2))
    t = dist.sample(np.random.default_rng(5), (200_000, 4))
    estimate = Estimate.of(plan.raw_runtime(t))
    assert abs(estimate.mean - plan.exact_expected_raw_runtime(dist)) <= 3 * estimate.stderr


def test_empirical_exact_expected_runtime_is_exact_enumeration():
    values = (1.0, 2.0, 3.5)
    dist = Empirical(values)
    t = np.array(list(itertools.product(values, repeat=3)))  # all 27 equally likely tuples
    for x in [(1, 2, 1), (4, 0, 0), (0, 3, 3), (2, 0, 5)]:
        plan = BlockPlan("e", x)
        assert plan.exact_expected_raw_runtime(dist) == pytest.approx(
            float(plan.raw_runtime(t).mean()), rel=1e-12
        )


def test_estimate_of():
    e = Estimate.of(np.array([1.0, 2.0, 3.0, 4.0]))
    assert e.mean == 2.5
    assert e.stderr == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-14)
    s = e.scaled(2.0)
    assert (s.mean, s.stderr) == (5.0, e.stderr * 2.0)


# --- Tandon et al. ------------------------------------------------------------------------------


def test_tandon_runtime_formula():
    # R = L alpha (s+1)/(s+alpha) max(T_(N-s), T_(N)/alpha); Test A's T: T_(2) = 2, T_(3) = 4
    r = tandon_raw_runtime(1, 6.0, 4, A_T)
    assert r.shape == (1,)
    assert r[0] == pytest.approx(4 * 6 * 2 / 7 * 2.0, rel=1e-15)
    # alpha small: the slowest worker dominates
    assert tandon_raw_runtime(1, 1.5, 4, A_T)[0] == pytest.approx(4 * 1.5 * 2 / 2.5 * 4 / 1.5)


@pytest.mark.parametrize("stragglers", [1, 2])
def test_tandon_exact_matches_monte_carlo(stragglers):
    plan = TandonPlan("tandon", 4, 12, stragglers, 6.0)
    t = B_DIST.sample(np.random.default_rng(40 + stragglers), (200_000, 4))
    r = plan.raw_runtime(t)
    estimate = Estimate.of(r)
    assert abs(estimate.mean - plan.exact_expected_raw_runtime(B_DIST)) <= 3 * estimate.stderr
    for q in (0.2, 0.5, 0.8):
        deadline = float(np.quantile(r, q))
        p = plan.completion_probability(deadline, B_DIST)
        assert abs(np.mean(r <= deadline) - p) <= 3 * math.sqrt(p * (1 - p) / r.size)


def test_tandon_completion_probability_limits():
    assert tandon_completion_probability(1, 6.0, 12, 1e-9, B_DIST, 4) == 0.0
    assert tandon_completion_probability(1, 6.0, 12, 1e9, B_DIST, 4) == pytest.approx(1.0)


# --- failures (full stragglers) -----------------------------------------------------------------


FAIL = FailureMixture(ShiftedExponential(1.0, 1.0), probability=0.1)


def test_failure_mixture_expected_runtime_is_infinite():
    for x in [(12, 0, 0), (8, 2, 2), (0, 0, 12)]:
        assert BlockPlan("f", x).exact_expected_raw_runtime(FAIL) == math.inf
    assert TandonPlan("tandon", 3, 12, 1, 6.0).exact_expected_raw_runtime(FAIL) == math.inf
    t = FAIL.sample(np.random.default_rng(1), (20_000, 3))
    assert Estimate.of(block_raw_runtime(np.array([8, 2, 2]), t)).mean == math.inf


def test_failure_mixture_completion_probability_limits():
    p = 0.1
    # full replication survives unless all 3 workers fail; uncoded needs all 3 alive
    assert block_completion_probability(np.array([0, 0, 12]), 1e9, FAIL) == pytest.approx(
        1 - p**3, rel=1e-12
    )
    assert block_completion_probability(np.array([12, 0, 0]), 1e9, FAIL) == pytest.approx(
        (1 - p) ** 3, rel=1e-12
    )
    # block 1 needs 2 of 3 alive
    assert block_completion_probability(np.array([0, 12, 0]), 1e9, FAIL) == pytest.approx(
        (1 - p) ** 3 + 3 * p * (1 - p) ** 2, rel=1e-12
    )
