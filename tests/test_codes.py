"""Cyclic-repetition gradient codes B(s) and decoding vectors a_F (spec/bcgc.md §2, §2.1, §9 A)."""

import itertools

import numpy as np
import pytest

from bcgc_sim.model.codes import CodeBook, cyclic_support, decoding_vector, encoding_matrix

# --- spec §9 Test A ----------------------------------------------------------------------------

H = np.array([[2.0, -1.0, -1.0]])
B1 = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [0.5, 0.0, 1.0]])
# per-subset partial derivatives g[k][l], k = subsets 1..3 (rows), l = coordinates 1..4
G = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]])
S = (0, 1, 1, 2)
T = np.array([2.0, 1.0, 4.0])


def _test_a_matrices():
    return {0: encoding_matrix(3, 0), 1: encoding_matrix(3, 1, h=H), 2: encoding_matrix(3, 2)}


def test_a_encoding_matrices():
    b = _test_a_matrices()
    np.testing.assert_allclose(b[1], B1, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(b[0], np.eye(3))
    np.testing.assert_array_equal(b[2], np.ones((3, 3)))
    # every row lies in null(H); 1_N too
    np.testing.assert_allclose(H @ b[1].T, 0.0, atol=1e-15)


@pytest.mark.parametrize(
    "fastest, expected",
    [([0, 1], [1.0, -1.0]), ([1, 2], [1.0, 2.0]), ([0, 2], [0.5, 1.0])],
)
def test_a_decoding_vectors(fastest, expected):
    a = decoding_vector(B1, fastest)
    np.testing.assert_allclose(a, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a @ B1[fastest], np.ones(3), atol=1e-14)


def test_a_worker_messages_and_decoding():
    b = _test_a_matrices()
    # coded message of worker n for coordinate l: sum_i B[n, n+i] g[n+i, l] = (B(s_l) @ g[:, l])_n
    messages = np.column_stack([b[s] @ G[:, l] for l, s in enumerate(S)])
    expected = np.array([[1, 14, 17, 24], [5, -4, -4, 24], [9, 11, 12.5, 24]])
    np.testing.assert_allclose(messages, expected, rtol=0, atol=1e-13)
    # each worker only touches its cyclic support
    for s in (0, 1, 2):
        for n in range(3):
            outside = np.setdiff1d(np.arange(3), cyclic_support(n, s, 3))
            assert np.all(b[s][n, outside] == 0.0)
            assert b[s][n, n] == 1.0
    # the master decodes coordinate l from the N - s_l fastest workers (T = (2, 1, 4))
    order = np.argsort(T, kind="stable")
    decoded = []
    for l, s in enumerate(S):
        fastest = sorted(order[: 3 - s].tolist())
        decoded.append(decoding_vector(b[s], fastest) @ messages[fastest, l])
    np.testing.assert_allclose(decoded, [15.0, 18.0, 21.0, 24.0], rtol=1e-13)
    np.testing.assert_allclose(decoded, G.sum(axis=0), rtol=1e-13)


def test_cyclic_support():
    np.testing.assert_array_equal(cyclic_support(0, 0, 4), [0])
    np.testing.assert_array_equal(cyclic_support(2, 2, 4), [2, 3, 0])
    np.testing.assert_array_equal(cyclic_support(3, 3, 4), [3, 0, 1, 2])


# --- every N, every s, every F ----------------------------------------------------------------


@pytest.mark.parametrize("n_workers", range(2, 9))
def test_every_straggler_set_decodes(n_workers):
    book = CodeBook(n_workers, seed=17)
    rng = np.random.default_rng(n_workers)
    g = rng.standard_normal((n_workers, 5)) * 10.0 ** rng.uniform(-2, 2, (n_workers, 1))
    truth = g.sum(axis=0)
    checked = 0
    for s in range(n_workers):
        b = book.matrix(s)
        assert b.shape == (n_workers, n_workers)
        for n in range(n_workers):
            outside = np.setdiff1d(np.arange(n_workers), cyclic_support(n, s, n_workers))
            assert np.all(b[n, outside] == 0.0)
            assert b[n, n] == 1.0
        coded = b @ g
        for fastest in itertools.combinations(range(n_workers), n_workers - s):
            a = book.decoder(s, fastest)
            assert a.shape == (n_workers - s,)
            decoded = a @ coded[list(fastest)]
            err = np.max(np.abs(decoded - truth)) / np.max(np.abs(truth))
            assert err <= 1e-9, (n_workers, s, fastest, err)
            checked += 1
    # sum over s of C(N, N-s) = 2^N - 1 sets
    assert checked == 2**n_workers - 1


@pytest.mark.parametrize("n_workers", [2, 3, 5, 8])
def test_extreme_redundancies(n_workers):
    book = CodeBook(n_workers, seed=3)
    np.testing.assert_array_equal(book.matrix(0), np.eye(n_workers))
    np.testing.assert_array_equal(book.matrix(n_workers - 1), np.ones((n_workers, n_workers)))
    np.testing.assert_array_equal(
        encoding_matrix(n_workers, n_workers - 1), np.ones((n_workers, n_workers))
    )
    # s = N-1: the single fastest worker, weight 1; s = 0: all workers, weight 1
    for w in range(n_workers):
        np.testing.assert_allclose(book.decoder(n_workers - 1, [w]), [1.0], rtol=1e-14)
    np.testing.assert_allclose(book.decoder(0, range(n_workers)), np.ones(n_workers), rtol=1e-14)


def test_codebook_is_deterministic_for_a_seed():
    a, b, c = CodeBook(7, seed=42), CodeBook(7, seed=42), CodeBook(7, seed=43)
    for s in range(1, 6):
        np.testing.assert_array_equal(a.matrix(s), b.matrix(s))
        assert not np.allclose(a.matrix(s), c.matrix(s))
    np.testing.assert_array_equal(a.decoder(3, [0, 2, 5, 6]), b.decoder(3, [0, 2, 5, 6]))


def test_codebook_caches_and_sorts_sets():
    book = CodeBook(5, seed=1)
    assert book.matrix(2) is book.matrix(2)
    # the decoder is that of the sorted set F, whatever order F is given in
    np.testing.assert_array_equal(book.decoder(2, [4, 0, 2]), book.decoder(2, [0, 2, 4]))


def test_encoding_matrix_rejects_bad_redundancy():
    with pytest.raises(ValueError):
        encoding_matrix(4, 4)
    with pytest.raises(ValueError):
        encoding_matrix(4, -1)


def test_random_encoding_matrix_rows_span_ones():
    # rows(B) lie in null(H), dimension N - s, which contains 1_N; any N - s rows span it
    rng = np.random.default_rng(0)
    b = encoding_matrix(6, 2, rng=rng)
    assert np.linalg.matrix_rank(b) == 4
    for fastest in ([0, 1, 2, 3], [1, 3, 4, 5], [0, 2, 3, 5]):
        a = decoding_vector(b, fastest)
        np.testing.assert_allclose(a @ b[fastest], np.ones(6), atol=1e-10)
