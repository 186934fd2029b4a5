"""The master's decoder state machine: every straggler pattern, late, duplicate and bad messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bcgc_sim.model.codes import CodeBook, cyclic_support
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.plans import BlockPlan, TandonPlan
from master.decoder import IterationDecoder, Outcome

N = 5


def messages(layout, codes, partials):
    """Coded messages by (worker, slot) from per-part partial derivatives.

    partials[name] has shape (N, L): row k = partial derivatives over part k of that partition.
    """
    out = {}
    for index, slot in enumerate(layout.slots):
        matrix = codes.matrix(slot.stragglers)
        for worker in range(N):
            parts = cyclic_support(worker, slot.stragglers, N)
            rows = partials[slot.partition][parts, slot.start : slot.stop]
            out[worker, index] = matrix[worker, parts] @ rows
    return out


def truth(layout, partials, length):
    g = np.zeros(length)
    for slot in layout.slots:
        g[slot.start : slot.stop] += partials[slot.partition][:, slot.start : slot.stop].sum(axis=0)
    return g


@pytest.fixture
def block_case():
    plan = BlockPlan("test", (3, 2, 0, 4, 1))  # levels 0, 1, 3, 4 in use; level 2 empty
    layout = layout_for(plan, rows=50)
    codes = CodeBook(N, seed=3)
    rng = np.random.default_rng(0)
    partials = {"subsets": rng.standard_normal((N, plan.coordinates))}
    return plan, layout, codes, partials


def test_every_straggler_pattern(block_case):
    """Silent workers S: slot k decodes iff |S| <= s_k, and then exactly."""
    plan, layout, codes, partials = block_case
    coded = messages(layout, codes, partials)
    expected = truth(layout, partials, plan.coordinates)
    rng = np.random.default_rng(1)
    for size in range(N):
        for silent in itertools.combinations(range(N), size):
            decoder = IterationDecoder(layout.slots, N, plan.coordinates, codes)
            arrivals = [(w, k) for (w, k) in coded if w not in silent]
            rng.shuffle(arrivals)
            for worker, slot in arrivals:
                assert decoder.offer(worker, slot, coded[worker, slot]) in (
                    Outcome.USED,
                    Outcome.LATE,
                )
            for index, slot in enumerate(layout.slots):
                assert decoder.decoded[index] == (size <= slot.stragglers), (silent, index)
                if decoder.decoded[index]:
                    got = decoder.gradient[slot.start : slot.stop]
                    np.testing.assert_allclose(
                        got, expected[slot.start : slot.stop], rtol=1e-9, atol=1e-9
                    )
            assert decoder.complete == (size <= min(s.stragglers for s in layout.slots))


def test_first_arrivals_are_used_and_the_rest_late(block_case):
    plan, layout, codes, partials = block_case
    coded = messages(layout, codes, partials)
    decoder = IterationDecoder(layout.slots, N, plan.coordinates, codes)
    last = len(layout.slots) - 1  # s = 4: one arrival decodes it
    assert decoder.offer(2, last, coded[2, last]) is Outcome.USED
    assert decoder.decoded[last]
    assert decoder.offer(0, last, coded[0, last]) is Outcome.LATE
    assert decoder.offer(2, last, coded[2, last]) is Outcome.DUPLICATE
    assert decoder.offer(0, last, coded[0, last]) is Outcome.DUPLICATE


@pytest.mark.parametrize(
    "worker, slot, length",
    [(-1, 0, 3), (N, 0, 3), (0, -1, 3), (0, 4, 3), (0, 0, 2), (0, 0, 4)],
)
def test_bad_messages_are_rejected(block_case, worker, slot, length):
    plan, layout, codes, _ = block_case
    decoder = IterationDecoder(layout.slots, N, plan.coordinates, codes)
    assert decoder.offer(worker, slot, np.zeros(length)) is Outcome.REJECTED
    assert not any(decoder.decoded)


def test_reset_forgets_the_previous_iteration(block_case):
    plan, layout, codes, partials = block_case
    coded = messages(layout, codes, partials)
    decoder = IterationDecoder(layout.slots, N, plan.coordinates, codes)
    for (worker, slot), values in coded.items():
        decoder.offer(worker, slot, values)
    assert decoder.complete
    decoder.reset()
    assert not decoder.complete and not decoder.gradient.any()
    assert decoder.offer(0, 0, coded[0, 0]) is Outcome.USED


def test_tandon_needs_all_unique_parts_and_n_minus_s_shared():
    plan = TandonPlan("tandon", N, 7, stragglers=2, alpha=6.0)
    layout = layout_for(plan, rows=60)
    assert [s.stragglers for s in layout.slots] == [0, 2]
    assert layout.slots[0].load == pytest.approx(layout.slots[1].load / 6.0)
    codes = CodeBook(N, seed=5)
    rng = np.random.default_rng(2)
    partials = {"unique": rng.standard_normal((N, 7)), "shared": rng.standard_normal((N, 7))}
    coded = messages(layout, codes, partials)
    decoder = IterationDecoder(layout.slots, N, 7, codes)
    for worker in range(N - 2):  # N - s shared parts
        decoder.offer(worker, 1, coded[worker, 1])
    assert decoder.decoded == [False, True]
    for worker in range(N - 1):  # one unique part missing: not complete
        decoder.offer(worker, 0, coded[worker, 0])
    assert not decoder.complete
    decoder.offer(N - 1, 0, coded[N - 1, 0])
    assert decoder.complete
    np.testing.assert_allclose(decoder.gradient, truth(layout, partials, 7), rtol=1e-10)


def test_tandon_rows_split_one_to_alpha_minus_one():
    """Unique rows per worker : coded shared rows per worker = 1 : alpha - 1 (spec §7.2)."""
    plan = TandonPlan("tandon", 4, 10, stragglers=1, alpha=6.0)
    layout = layout_for(plan, rows=1000)
    unique, shared = layout.partitions["unique"], layout.partitions["shared"]
    per_worker_unique = (unique[-1] - unique[0]) / 4
    per_worker_shared = (plan.stragglers + 1) * (shared[-1] - shared[0]) / 4
    assert per_worker_unique / (per_worker_unique + per_worker_shared) == pytest.approx(
        1 / 6, rel=0.01
    )
    assert shared[-1] == 1000 and unique[0] == 0 and unique[-1] == shared[0]
