"""The master's session driven through an in-process fake link (master/link.py's interface): no
sockets, no processes. Each rank answers an ITERATE at once with its real coded blocks
(workers/compute.py); a per-test script kills a rank, silences one, repeats or poisons a block,
and each case finishes in milliseconds with its real outcome checked."""

from __future__ import annotations

import collections
import csv
import time

import numpy as np
import pytest
from test_liveness import SimCluster

from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.stragglers import ShiftedExponential
from bcgc_sim.model.system import SystemModel
from bcgc_sim.problems import full_gradient, prepare_data
from bcgc_sim.results import RunRecorder
from bcgc_sim.schemes import build_plan
from bcgc_sim.wire.protocol import (
    BLOCK_HEADER,
    SLOTS_SETUP_HEADER,
    MessageType,
    check,
)
from master.bcgc_session import SchemeSession
from master.errors import RunError
from master.settings import SessionSettings

N = 4


class FakeLink(SimCluster):
    """The Link a session needs, with N workers simulated in-process (tests/test_liveness.py's
    SimCluster) whose SETUP and BLOCK headers are checked against the schemas both ends share.
    `script(rank, iteration, blocks)` returns the (slot, values) a rank sends for an ITERATE;
    a rank in `exited` has exited (the cluster reports it gone)."""

    def __init__(self, n: int, script=lambda rank, iteration, blocks: blocks) -> None:
        super().__init__(n)
        self.tamper = script

    def send(self, rank, kind, header, array=None):
        if kind is MessageType.SETUP:
            check(header, SLOTS_SETUP_HEADER)  # what a worker checks first
        super().send(rank, kind, header, array)

    def push(self, rank, kind, header, array=None):
        if kind is MessageType.BLOCK:
            check(header, BLOCK_HEADER)
        super().push(rank, kind, header, array)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return prepare_data("least-squares", "synthetic", 40, 12, 0.1, 1, str(folder))


def session_on(link, data, tmp_path, scheme, **settings):
    model = SystemModel(N, data.coordinates, data.rows, 1.0, ShiftedExponential(1e-3, 50.0))
    plan = build_plan(scheme, model)
    options = dict(seed=1, time_scale=1e-9, check=True, learning_rate=0.0) | settings
    recorder = RunRecorder(tmp_path / scheme)
    session = SchemeSession(
        link, scheme, plan, layout_for(plan, data.rows), model, data, CodeBook(N, 1),
        SessionSettings(**options), recorder, link.dead_ranks,
    )  # fmt: skip
    session.setup(1.0)
    return session, recorder


def rows(recorder, name):
    recorder.flush()
    with open(recorder.folder / name) as handle:
        return list(csv.DictReader(handle))


THETA = np.linspace(-1, 1, 12)


def uncoded_gradient(data):
    return full_gradient(data, THETA)[0]


def test_a_duplicate_block_is_counted_and_the_gradient_is_the_uncoded_one(data, tmp_path):
    def twice(rank, iteration, blocks):
        return blocks + blocks[:1] if rank == 1 else blocks  # rank 1 repeats slot 0

    link = FakeLink(N, twice)
    session, recorder = session_on(link, data, tmp_path, "uncoded")
    start = time.monotonic()
    result, gradient = session.iterate(0, THETA)
    assert time.monotonic() - start < 0.5
    np.testing.assert_allclose(gradient, uncoded_gradient(data), rtol=1e-12, atol=1e-12)
    assert link.peers.rejections.counts["duplicate"] == 1
    statuses = collections.Counter(
        (r["worker"], r["status"]) for r in rows(recorder, "messages.csv")
    )
    slots = len(session.layout.slots)
    assert statuses == {("0", "used"): slots, ("1", "used"): slots, ("1", "duplicate"): 1,
                        ("2", "used"): slots, ("3", "used"): slots}  # fmt: skip
    (row,) = rows(recorder, "iterations.csv")
    assert int(row["messages_used"]) == N * slots and float(row["gradient_rel_error"]) < 1e-12
    assert float(row["measured_s"]) == pytest.approx(result.measured_s)
    assert len(rows(recorder, "blocks.csv")) == slots


def test_a_non_finite_block_is_rejected_and_the_slot_decoded_from_the_others(data, tmp_path):
    def poison(rank, iteration, blocks):
        if rank != 0:
            return blocks
        return [(index, np.full_like(values, np.nan)) for index, values in blocks]

    link = FakeLink(N, poison)
    session, recorder = session_on(link, data, tmp_path, "single-bcgc")  # any one worker decodes
    _, gradient = session.iterate(0, THETA)
    assert np.isfinite(gradient).all()
    np.testing.assert_allclose(gradient, uncoded_gradient(data), rtol=1e-9, atol=1e-12)
    assert link.peers.rejections.counts["non-finite"] == len(session.layout.slots)
    assert session.events == [
        {"iteration": 0, "rank": 0, "event": "died", "how": "sent non-finite values"}
    ]
    assert {r["status"] for r in rows(recorder, "messages.csv") if r["worker"] == "0"} == {
        "rejected"
    }


def test_a_killed_rank_ends_the_run_with_one_line_naming_it_and_the_block(data, tmp_path):
    link = FakeLink(N)
    session, recorder = session_on(link, data, tmp_path, "uncoded")  # every worker needed
    session.iterate(0, THETA)
    link.exited.add(2)  # its process exits
    start = time.monotonic()
    with pytest.raises(RunError) as caught:
        session.iterate(1, THETA)
    assert time.monotonic() - start < 0.5  # seen by the 20 ms rank check, not a timeout
    message = str(caught.value)
    assert message.startswith("uncoded, iteration 1: worker(s) 2 died and block 0 (s = 0)")
    assert "worker 2: its process exited" in message and "\n" not in message
    assert [e["event"] for e in session.events] == ["died"]
    assert len(rows(recorder, "iterations.csv")) == 1  # the lost iteration is not recorded


def test_a_silent_live_rank_ends_the_run_at_the_stall_limit(data, tmp_path):
    link = FakeLink(N, lambda rank, iteration, blocks: [] if rank == 3 else blocks)
    session, _ = session_on(link, data, tmp_path, "uncoded", stall_timeout_s=0.05)
    start = time.monotonic()
    with pytest.raises(RunError, match=r"iteration 0: no usable message for 0.05 s although "
                       r"worker\(s\) \[3\] are live and owe blocks"):  # fmt: skip
        session.iterate(0, THETA)
    assert 0.05 <= time.monotonic() - start < 0.5
    assert session.events == [] and not link.dead
