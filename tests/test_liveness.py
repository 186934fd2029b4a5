"""Liveness without processes: the master's record of every rank (PeerTable), rejected-message
counting and its rate-limited log, the stall limit, the worker's split of the liveness window,
and SchemeSession against workers simulated in-process (dead ranks stay dead across iterations
and schemes, deaths during set-up, replacements, reconnects, non-finite and bad blocks, stalls).
The same cases with real processes: tests/test_reliability.py."""

from __future__ import annotations

import collections
import logging
import time

import numpy as np
import pytest
import zmq

from bcgc_sim.config import load_config
from bcgc_sim.errors import UserError
from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.layout import Slot, layout_for
from bcgc_sim.model.stragglers import ShiftedExponential
from bcgc_sim.model.system import SystemModel
from bcgc_sim.problems import ProblemData, full_gradient, prepare_data
from bcgc_sim.results import RunRecorder
from bcgc_sim.schemes import build_plan
from bcgc_sim.wire.protocol import PROTOCOL_VERSION, Message, MessageType, encode, parse
from master.session import RunError, SchemeSession, SessionSettings, stall_limit_s
from master.transport import PeerState, PeerTable, Received, Rejections, WorkerLink
from workers.compute import SlotComputer
from workers.worker import DownTimes

MS = 1_000_000  # ns
H = 100 * MS  # heartbeat interval of these tests
LIVENESS = 5


def ready(rank=None, token="", **extra) -> dict:
    return {"rank": rank, "pid": 1, "protocol": PROTOCOL_VERSION, "token": token, **extra}


def table(n: int) -> PeerTable:
    peers = PeerTable()
    peers.size = n
    for rank in range(n):
        assert peers.register(bytes([1, rank]), ready(rank, f"token-of-{rank}"), "", 0).rank == rank
    return peers


# -- the record of ranks --------------------------------------------------------------------------


def test_a_reconnected_worker_keeps_its_rank_and_its_old_connection_still_counts():
    peers = table(3)
    peers.by_rank[1].run = "scheme-1"
    peer = peers.register(b"new", ready(-1, "token-of-1", run="scheme-1"), "", 5)
    assert peer is peers.by_rank[1] and peer.identity == b"new" and peer.heard_ns == 5
    assert peers.by_identity[bytes([1, 1])] is peer  # messages still queued on the old one
    assert peers.take_rejoined() == [1] and peers.take_rejoined() == []
    assert peer.run == "scheme-1"


def test_a_connection_renewed_for_new_settings_is_not_a_loss():
    """A remote worker reconnects on purpose to take the master's heartbeat at set-up: nothing
    was lost, so nothing is re-sent, and its SETUP_OK (not the READY) confirms the set-up."""
    peers = table(2)
    peer = peers.register(b"renewed", ready(0, "token-of-0", run="scheme-2", settings=True), "", 1)
    assert peer.identity == b"renewed" and peer.run == "" and peers.take_rejoined() == []


def test_a_reconnect_must_come_from_the_same_curve_key():
    peers = PeerTable()
    peers.size = 1
    peers.register(b"a", ready(0, "secret-token-0"), "KEY-A", 0)
    assert peers.register(b"b", ready(0, "secret-token-0"), "KEY-B", 1) == "wrong-key"
    assert peers.register(b"c", ready(0, "another-token"), "KEY-A", 1) == "surplus-worker"
    assert peers.by_rank[0].identity == b"a"


def test_a_dead_rank_stays_dead_until_a_worker_registers_for_it():
    peers = table(2)
    victim = peers.by_rank[1]
    peers.mark_dead(victim, "its process exited")
    assert peers.dead == {1} and peers.live() == [0]
    replacement = peers.register(b"fresh", ready(1, "token-of-new-1"), "", 9)
    assert replacement is not victim and replacement.replaces
    assert peers.dead == set() and bytes([1, 1]) not in peers.by_identity  # old one forgotten
    assert peers.register(b"late", ready(1, "token-of-1"), "", 10) == "surplus-worker"


def test_the_same_worker_may_come_back_to_its_dead_rank():
    peers = table(2)
    peers.mark_dead(peers.by_rank[0], "silent for more than 0.5 s")
    peer = peers.register(b"back", ready(0, "token-of-0"), "", 3)
    assert peer.state is PeerState.LIVE and peers.dead == set() and peer.how == ""


def test_exited_and_silent_ranks_are_dead():
    peers = table(3)
    for peer in peers.by_rank.values():
        peer.heard_ns = 1000 * MS
    assert peers.judge(1010 * MS, set(), H, LIVENESS) == []
    newly = peers.judge(1020 * MS, {2}, H, LIVENESS)
    assert [(p.rank, p.how) for p in newly] == [(2, "its process exited")]
    peers.by_rank[0].heard_ns = 1040 * MS
    for t in range(1060, 1600, 20):  # the master looks every 20 ms
        newly = peers.judge(t * MS, set(), H, LIVENESS)
        if newly:
            break
    assert [(p.rank, p.how) for p in newly] == [(1, "silent for more than 0.5 s")]
    assert t == 1520  # the first look after more than 500 ms of silence
    assert peers.dead == {1, 2}


def test_a_gap_the_master_caused_is_never_held_against_a_worker():
    """The master stopped looking for 3 s (SIGSTOP, a long computation): when it looks again
    every clock restarts; silence is judged from there, not from before the gap."""
    peers = table(2)
    for t in range(0, 201, 20):
        peers.judge(t * MS, set(), H, LIVENESS)
    for peer in peers.by_rank.values():
        peer.heard_ns = 200 * MS
    assert peers.judge(3200 * MS, set(), H, LIVENESS) == []  # back after 3 s: nobody dead
    peers.by_rank[0].heard_ns = 3300 * MS  # rank 0 speaks again, rank 1 does not
    for t in range(3220, 3701, 20):
        assert peers.judge(t * MS, set(), H, LIVENESS) == []
    assert [p.rank for p in peers.judge(3720 * MS, set(), H, LIVENESS)] == [1]


def test_a_peer_is_judged_by_its_own_slower_heartbeat_until_it_is_set_up():
    peers = PeerTable()
    peers.register(b"w", ready(0, "token-of-slow", heartbeat_s=0.5), "", 0)
    for t in range(20, 2501, 20):  # 2.5 s: liveness x its 0.5 s heartbeat
        assert peers.judge(t * MS, set(), H, LIVENESS) == []
    assert len(peers.judge(2520 * MS, set(), H, LIVENESS)) == 1


def test_rejections_are_counted_and_a_flood_logs_a_few_lines(caplog):
    rejections = Rejections()
    with caplog.at_level(logging.WARNING, logger="bcgc.master"):
        for _ in range(20_000):
            rejections.add("malformed", "peer 00ff", "not a bcgc message")
        rejections.summarise()  # within the interval: nothing yet
        assert len(caplog.records) == Rejections.FIRST_LOGGED + 1  # 5 lines, "further ..."
        rejections.summarise(force=True)  # as at the end of the run (or 10 s later)
        assert len(caplog.records) == 7  # README
        assert "rejected 19995 more messages (malformed)" in caplog.records[-1].getMessage()
        rejections.add("duplicate", "worker 1", "block 0 again")  # another reason: its own lines
        assert len(caplog.records) == 8
    assert rejections.counts == {"malformed": 20_000, "duplicate": 1}


def test_the_link_counts_a_flood_and_answers_a_surplus_worker_with_stop(caplog):
    link = WorkerLink("tcp://127.0.0.1")
    context = zmq.Context()
    try:
        stranger = context.socket(zmq.DEALER)
        stranger.connect(link.endpoint)
        with caplog.at_level(logging.WARNING, logger="bcgc.master"):
            for _ in range(5000):
                stranger.send(b"junk")
            end = time.monotonic() + 10
            while link.rejected["malformed"] < 5000 and time.monotonic() < end:
                link.receive(20)
        assert dict(link.rejected) == {"malformed": 5000}
        assert len(caplog.records) <= Rejections.FIRST_LOGGED + 2
        link.peers.size = 0  # every rank is taken
        late = context.socket(zmq.DEALER)
        late.connect(link.endpoint)
        late.send_multipart(encode(MessageType.READY, ready(0, "token-of-latecomer")))
        while link.rejected["surplus-worker"] < 1 and time.monotonic() < end:
            link.receive(20)
        assert late.poll(2000)
        stop = parse(late.recv_multipart())
        assert stop.kind is MessageType.STOP and "ranks are taken" in stop.header["reason"]
    finally:
        context.destroy(linger=0)
        link.close()


# -- the limits -----------------------------------------------------------------------------------


def test_the_stall_limit_is_derived_from_the_window_and_the_iteration_or_set():
    settings = SessionSettings(1, 1.0, False, 0.0, heartbeat_s=0.1, liveness=5)
    assert stall_limit_s(settings, 0.2) == pytest.approx(0.5 + 0.4 + 1.0)
    assert stall_limit_s(SessionSettings(1, 1.0, False, 0.0, stall_timeout_s=7.0), 0.2) == 7.0
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(UserError, match="cluster.stall_timeout must be >= 0"):
            load_config(None, [f"cluster.stall_timeout={bad}"])
    assert load_config(None, ["cluster.stall_timeout=3"]).cluster.stall_timeout == 3.0


@pytest.mark.parametrize("heartbeat_s", [0.05, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("liveness", [2, 3, 5, 10, 30])
def test_a_remote_worker_exits_within_the_window_of_a_silent_master(heartbeat_s, liveness):
    """Worst case from the master's last answer to the worker's exit: one interval to the next
    ZeroMQ ping, its timeout, noticing the closed connection (two quarter-interval waits), the
    reconnect grace, and one more quarter interval before the check."""
    h = int(heartbeat_s * 1e9)
    times = DownTimes.of(h, liveness)
    worst = h + times.timeout_ns + h // 2 + times.grace_ns + h // 4
    assert worst <= liveness * h + 1e9 * (liveness < 4)  # README: + 1 s
    assert times.timeout_ns >= h // 2 and times.grace_ns >= h // 2


# -- SchemeSession against simulated workers ------------------------------------------------------


class SimCluster:
    """N workers simulated in-process, with the link and cluster interface SchemeSession uses:
    a set-up rank answers an ITERATE at once with its real coded blocks (workers/compute.py).
    `exit_after[rank] = i` makes its process exit after sending its blocks of iteration i;
    `exit_on_setup` ranks exit on their next SETUP; `silent` ranks stay live but never answer;
    `tamper(rank, iteration, blocks)` may rewrite what a rank sends."""

    def __init__(self, n: int) -> None:
        self.peers = table(n)
        self.dead = self.peers.dead
        self.rejected = self.peers.rejections.counts
        self.queue: collections.deque[Received] = collections.deque()
        self.computers: dict[int, tuple[str, SlotComputer, list[Slot]]] = {}
        self.exited: set[int] = set()
        self.exit_after: dict[int, int] = {}
        self.exit_on_setup: set[int] = set()
        self.silent: set[int] = set()
        self.tamper = lambda rank, iteration, blocks: blocks
        self.sent: list[tuple[int, MessageType]] = []
        self.spawned = 0

    # the link
    def send(self, rank, kind, header, array=None):
        self.sent.append((rank, kind))
        if rank in self.exited:
            return
        if kind is MessageType.SETUP:
            if rank in self.exit_on_setup:
                self.exit_on_setup.discard(rank)
                self.exited.add(rank)
                return
            slots = [Slot(a, b, s, load, p) for a, b, s, load, p in header["slots"]]
            rows = {int(s): np.array(r) for s, r in header["code_rows"].items()}
            partitions = {k: tuple(v) for k, v in header["partitions"].items()}
            computer = SlotComputer(
                ProblemData(**header["data"]), partitions, slots, rank, header["n_workers"], rows
            )
            self.computers[rank] = (header["run"], computer, slots)
            self.push(rank, MessageType.SETUP_OK, {"run": header["run"], "affinity": None})
        elif kind is MessageType.ITERATE and rank not in self.silent:
            run, computer, slots = self.computers[rank]
            computer.begin(array)
            blocks = [(index, computer.compute(slot)) for index, slot in enumerate(slots)]
            for index, values in self.tamper(rank, header["iteration"], blocks):
                h = {
                    "run": run, "iteration": header["iteration"], "worker": rank, "slot": index,
                    "cycle_time": 1.0, "start_ns": 0, "received_ns": 0, "deadline_ns": 0,
                    "send_ns": 0, "overrun_ns": 0,
                }  # fmt: skip
                self.push(rank, MessageType.BLOCK, h, values)
            if self.exit_after.get(rank) == header["iteration"]:
                self.exited.add(rank)

    def push(self, rank, kind, header, array=None):
        self.queue.append(Received(rank, Message(kind, header, array), time.monotonic_ns()))

    def broadcast(self, kind, header, array, ranks):
        for rank in sorted(ranks):
            self.send(rank, kind, header, array)

    def receive(self, timeout_ms):
        if self.queue:
            return self.queue.popleft()
        time.sleep(0.001)
        return None

    def check_liveness(self, exited, heartbeat_s, liveness):
        return self.peers.judge(time.monotonic_ns(), exited, 1 << 62, 1)  # deaths by exit only

    def reject(self, reason, source, detail=""):
        self.peers.rejections.add(reason, f"worker {source}", detail)

    # the cluster
    def dead_ranks(self):
        return set(self.exited)

    def respawn(self, rank):
        self.spawned += 1
        self.exited.discard(rank)
        token = f"replacement-{rank}-{self.spawned}"
        self.peers.register(f"r{rank}-{self.spawned}".encode(), ready(rank, token), "", 0)


N = 4
LAW = ShiftedExponential(1e-3, 50.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return prepare_data("least-squares", "synthetic", 40, 12, 0.1, 1, str(folder))


def sim_session(sim, data, tmp_path, scheme, **settings):
    model = SystemModel(N, data.coordinates, data.rows, 1.0, LAW)
    plan = build_plan(scheme, model)
    options = dict(seed=1, time_scale=1e-9, check=True, learning_rate=0.0)
    session = SchemeSession(
        sim, scheme, plan, layout_for(plan, data.rows), model, data, CodeBook(N, 1),
        SessionSettings(**(options | settings)), RunRecorder(tmp_path / f"{scheme}-{time.monotonic_ns()}"),
        sim.dead_ranks, sim.respawn,
    )  # fmt: skip
    session.setup(5.0)
    return session


def theta_of(data):
    return np.linspace(-1, 1, data.coordinates)


def exact(gradient, data) -> bool:
    true, _ = full_gradient(data, theta_of(data))
    return np.allclose(gradient, true, rtol=1e-9, atol=1e-12)


def test_a_rank_that_died_after_its_blocks_arrived_ends_the_next_iteration_at_once(data, tmp_path):
    sim = SimCluster(N)
    session = sim_session(sim, data, tmp_path, "uncoded")
    sim.exit_after[2] = 0
    result, gradient = session.iterate(0, theta_of(data))  # complete: rank 2 sent everything
    assert exact(gradient, data)
    start = time.monotonic()
    with pytest.raises(RunError, match=r"uncoded, iteration 1: worker\(s\) 2 died and block 0"):
        session.iterate(1, theta_of(data))
    assert time.monotonic() - start < 0.5
    # and in the next scheme of the run: no wait for rank 2 at set-up, the same error at once
    start = time.monotonic()
    later = sim_session(sim, data, tmp_path, "tandon")
    with pytest.raises(RunError, match=r"tandon, iteration 0: worker\(s\) 2 died and block 0"):
        later.iterate(0, theta_of(data))
    assert time.monotonic() - start < 0.5
    assert sim.sent.count((2, MessageType.SETUP)) == 1  # never set up again


def test_blocks_that_live_ranks_can_decode_go_on_without_the_dead_rank(data, tmp_path):
    sim = SimCluster(N)
    sim.exit_after[3] = 0
    session = sim_session(sim, data, tmp_path, "single-bcgc")
    for iteration in range(3):
        _, gradient = session.iterate(iteration, theta_of(data))
        assert exact(gradient, data)
    assert sim.sent.count((3, MessageType.ITERATE)) == 1  # only iteration 0's broadcast
    assert [e["event"] for e in session.events] == ["died"]


def test_with_replace_the_next_iteration_gets_a_replacement_at_once(data, tmp_path):
    sim = SimCluster(N)
    session = sim_session(sim, data, tmp_path, "uncoded", on_failure="replace")
    sim.exit_after[1] = 0
    session.iterate(0, theta_of(data))
    _, gradient = session.iterate(1, theta_of(data))
    assert exact(gradient, data) and sim.spawned == 1
    assert [e["event"] for e in session.events] == ["died", "replaced"]
    _, gradient = session.iterate(2, theta_of(data))  # the replacement carries on
    assert exact(gradient, data) and sim.spawned == 1


def test_a_worker_that_dies_at_set_up_is_not_waited_for(data, tmp_path):
    sim = SimCluster(N)
    sim.exit_on_setup = {2}
    start = time.monotonic()
    session = sim_session(sim, data, tmp_path, "uncoded")
    assert time.monotonic() - start < 0.5 and session.events[0]["iteration"] is None
    with pytest.raises(RunError, match=r"worker\(s\) 2 died and block 0"):
        session.iterate(0, theta_of(data))
    sim = SimCluster(N)
    sim.exit_on_setup = {2}
    session = sim_session(sim, data, tmp_path, "uncoded", on_failure="replace")
    _, gradient = session.iterate(0, theta_of(data))
    assert exact(gradient, data)
    assert [e["event"] for e in session.events] == ["died", "replaced"]


def test_a_replacement_that_does_not_come_ends_the_run_after_replace_timeout(data, tmp_path):
    sim = SimCluster(N)
    sim.respawn = lambda rank: None  # remote: nobody starts one
    session = sim_session(
        sim, data, tmp_path, "uncoded", on_failure="replace", replace_timeout_s=0.2
    )
    sim.exit_after[0] = 0
    session.iterate(0, theta_of(data))
    start = time.monotonic()
    with pytest.raises(RunError, match=r"no replacement for worker\(s\) 0 within 0.2 s"):
        session.iterate(1, theta_of(data))
    assert 0.2 <= time.monotonic() - start < 0.6


def test_a_reconnected_worker_is_sent_the_iteration_again(data, tmp_path):
    sim = SimCluster(N)
    session = sim_session(sim, data, tmp_path, "uncoded")
    sim.silent = {1}  # its theta is "lost"; then it reconnects under a new routing id

    original = sim.receive

    def receive(timeout_ms):
        if sim.silent and not sim.queue:
            sim.silent.clear()
            sim.peers.register(b"again", ready(1, "token-of-1", run=session.run_id), "", 0)
        return original(timeout_ms)

    sim.receive = receive
    _, gradient = session.iterate(0, theta_of(data))
    assert exact(gradient, data)
    assert sim.sent.count((1, MessageType.ITERATE)) == 2
    assert [e["event"] for e in session.events] == ["reconnected"]
    assert sim.peers.by_rank[1].identity == b"again"


def test_non_finite_blocks_are_rejected_and_never_decoded(data, tmp_path):
    sim = SimCluster(N)
    session = sim_session(sim, data, tmp_path, "single-bcgc")  # any one worker decodes

    def nan_from_rank_0(rank, iteration, blocks):
        return [(i, np.full_like(v, np.nan)) for i, v in blocks] if rank == 0 else blocks

    sim.tamper = nan_from_rank_0  # rank 0 answers first (broadcast order)
    _, gradient = session.iterate(0, theta_of(data))
    assert exact(gradient, data)
    assert sim.rejected["non-finite"] == 1 and sim.dead == {0}
    assert session.events[0]["how"] == "sent non-finite values"
    sim = SimCluster(N)
    session = sim_session(sim, data, tmp_path, "uncoded")  # needs rank 0: the run ends
    sim.tamper = nan_from_rank_0
    with pytest.raises(RunError, match=r"worker\(s\) 0 died and block 0.*sent non-finite values"):
        session.iterate(0, theta_of(data))


def test_duplicate_unknown_and_misshapen_blocks_are_counted_by_reason(data, tmp_path):
    sim = SimCluster(N)
    session = sim_session(sim, data, tmp_path, "bcgc-t")

    def bad(rank, iteration, blocks):
        if rank != 0:
            return blocks
        first = blocks[0][1]
        return [(0, first), (0, first), (99, first), (0, np.zeros(first.size + 1)),
                (0, np.zeros(8 * data.coordinates + 1)), *blocks[1:]]  # fmt: skip

    sim.tamper = bad  # rank 0 answers first (broadcast order): all of it arrives in time
    _, gradient = session.iterate(0, theta_of(data))
    assert exact(gradient, data)
    assert dict(sim.rejected) == {
        "duplicate": 1, "unknown-slot": 1, "wrong-shape": 1, "oversized": 1
    }  # fmt: skip


def test_live_workers_that_stay_silent_hit_the_stall_limit_not_a_hang(data, tmp_path):
    sim = SimCluster(N)
    session = sim_session(sim, data, tmp_path, "uncoded", stall_timeout_s=0.3)
    sim.silent = {2}
    start = time.monotonic()
    with pytest.raises(RunError, match=r"no usable message for 0.3 s although worker\(s\) \[2\]"):
        session.iterate(0, theta_of(data))
    assert 0.3 <= time.monotonic() - start < 0.6
