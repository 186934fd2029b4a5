"""Property tests: Lemma 1, eq. (2) = eq. (5), empty blocks, projection, rounding (spec §3-4)."""

import numpy as np
import pytest
from helpers import coordinate_raw_runtime
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bcgc_sim.model.optimize import project_to_simplex, round_r1, round_r2
from bcgc_sim.model.runtime import block_loads, block_raw_runtime

FAST = settings(max_examples=60, deadline=None)

cycle_time = st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False)


@st.composite
def redundancies_and_times(draw, sort=False):
    """(N, s of length L with values 0..N-1, T of shape (K, N))."""
    n = draw(st.integers(2, 6))
    s = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=14))
    if sort:
        s = sorted(s)
    k = draw(st.integers(1, 3))
    t = draw(st.lists(st.lists(cycle_time, min_size=n, max_size=n), min_size=k, max_size=k))
    return n, np.array(s), np.array(t)


def suffix_min(s):
    return np.minimum.accumulate(np.asarray(s)[::-1])[::-1]


@FAST
@given(redundancies_and_times())
def test_lemma1_suffix_min_never_slower(case):
    _, s, t = case
    improved = coordinate_raw_runtime(suffix_min(s), t)
    original = coordinate_raw_runtime(s, t)
    assert np.all(improved <= original * (1 + 1e-12))


@FAST
@given(redundancies_and_times(sort=True))
def test_eq2_equals_eq5_for_non_decreasing_s(case):
    n, s, t = case
    x = np.bincount(s, minlength=n)  # eq. (6)
    np.testing.assert_allclose(
        coordinate_raw_runtime(s, t), block_raw_runtime(x, t), rtol=1e-12, atol=0
    )


@FAST
@given(
    st.integers(2, 7).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 5), min_size=n, max_size=n).filter(lambda v: sum(v) > 0),
            st.lists(st.lists(cycle_time, min_size=n, max_size=n), min_size=1, max_size=3),
        )
    )
)
def test_empty_blocks_max_over_all_n(case):
    x, t = np.array(case[0]), np.array(case[1])
    descending = -np.sort(-t, axis=1)  # column n holds T_(N-n)
    expected = np.max(descending * block_loads(x), axis=1)
    np.testing.assert_allclose(block_raw_runtime(x, t), expected, rtol=1e-14, atol=0)


finite_vector = st.lists(
    st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=25,
)


@FAST
@given(finite_vector, st.floats(min_value=0.5, max_value=1e5), st.integers(0, 2**32 - 1))
def test_projection_onto_simplex(v, total, seed):
    v = np.array(v)
    p = project_to_simplex(v, total)
    assert p.shape == v.shape
    assert np.all(p >= 0)
    assert p.sum() == pytest.approx(total, rel=1e-9, abs=1e-9 * (1 + np.abs(v).sum()))
    rng = np.random.default_rng(seed)
    feasible = rng.dirichlet(np.ones(v.size), size=50) * total
    nearest = np.linalg.norm(p - v)
    assert np.all(np.linalg.norm(feasible - v, axis=1) >= nearest * (1 - 1e-9) - 1e-9)
    # vertices of the simplex too
    vertices = np.eye(v.size) * total
    assert np.all(np.linalg.norm(vertices - v, axis=1) >= nearest * (1 - 1e-9) - 1e-9)


@FAST
@given(finite_vector, st.floats(min_value=0.5, max_value=1e5))
def test_projection_is_idempotent(v, total):
    p = project_to_simplex(np.array(v), total)
    np.testing.assert_allclose(project_to_simplex(p, total), p, rtol=1e-9, atol=1e-9 * total)


@st.composite
def relaxed_points(draw, n_max=12):
    """A relaxed x >= 0 with sum L, L a positive integer, as the schemes produce."""
    n = draw(st.integers(2, n_max))
    total = draw(st.integers(1, 5000))
    w = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)))
    assume(w.sum() > 0)
    return w / w.sum() * total, total


@FAST
@given(relaxed_points())
def test_round_r1_sums_to_total(case):
    x, total = case
    out = round_r1(x, total)
    assert out.dtype.kind == "i"
    assert int(out.sum()) == total
    # at most one entry (the largest) moves by more than rounding, unless a negative residual
    # exceeds it: it then drops to 0 and the next largest entries give up the rest (round_r1)
    if out[np.argmax(x)] > 0:
        assert np.sum(np.abs(out - x) > 0.5 + 1e-9) <= 1


@FAST
@given(relaxed_points())
def test_round_r1_non_negative_when_largest_entry_absorbs_residual(case):
    # |residual| <= N/2, so the largest entry can absorb it when it is >= (N + 1)/2
    x, total = case
    assume(x.max() >= (x.size + 1) / 2)
    assert np.all(round_r1(x, total) >= 0)


def test_round_r1_non_negative_small_total():
    out = round_r1(np.full(5, 0.6), 3)
    assert int(out.sum()) == 3
    assert np.all(out >= 0)


@settings(max_examples=30, deadline=None)
@given(relaxed_points(n_max=8), st.integers(0, 2**32 - 1))
def test_round_r2_integers_summing_to_total(case, seed):
    x, total = case
    samples = np.random.default_rng(seed).exponential(1.0, (200, x.size)) + 0.5
    out = round_r2(x, total, samples)
    assert out.dtype.kind == "i"
    assert np.all(out >= 0)
    assert int(out.sum()) == total
    assert np.all(out >= np.floor(x)) and np.all(out <= np.floor(x) + 1 + (x.size - 1))
