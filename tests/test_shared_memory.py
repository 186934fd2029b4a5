"""Shared memory on the testbed (cluster.transport): the SETUP / SETUP_OK negotiation, the
master's link refusing and counting bad references from a worker, exact gradients by shared
memory, and no segment left behind after any kind of death (worker SIGKILL, master SIGKILL,
Ctrl-C, an error)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import zmq
from helpers import mapped_segments, shm_files
from test_reliability import gone, session_for

from bcgc_sim.config import load_config
from bcgc_sim.errors import UserError
from bcgc_sim.wire import framing
from bcgc_sim.wire.protocol import PROTOCOL_VERSION, MessageType, clock_id, encode
from bcgc_sim.wire.shm import (
    MasterSegments,
    OwnSegment,
    Unavailable,
    WorkerSegments,
    encode_shared,
    record_bytes,
)
from master.cluster import LocalCluster
from master.runner import run_testbed
from master.session import RunError
from master.transport import WorkerLink

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "memfd_create") and clock_id()), reason="needs memfd and a boot id (Linux)"
)
BCGC = [sys.executable, "-m", "bcgc_sim"]


# -- negotiation ------------------------------------------------------------------------------


def test_the_master_offers_nothing_with_zmq_and_its_theta_segment_otherwise():
    assert MasterSegments("zmq", clock_id()).setup_fields(100) == {}
    master = MasterSegments("auto", clock_id())
    try:
        offer = master.setup_fields(100)["shm_offer"]
        assert offer["required"] is False and offer["prefix"] == master.prefix
        assert offer["segment"]["name"] == f"{master.prefix}-theta"
        assert master.segment.half >= record_bytes(800)
        same = master.setup_fields(50)["shm_offer"]["segment"]  # big enough: the same segment
        assert same == offer["segment"]
        assert MasterSegments("shm", clock_id()).setup_fields(1)["shm_offer"]["required"] is True
    finally:
        master.close()


def test_a_worker_accepts_an_offer_of_its_host_and_answers_by_reference_only_when_asked():
    master = MasterSegments("auto", clock_id())
    worker = WorkerSegments(clock_id())
    try:
        fields = worker.setup(master.setup_fields(10)["shm_offer"], rank=3, half_bytes=1024)
        assert fields["shm_segment"]["name"].startswith(f"{master.prefix}-w3-")
        master.accepted(3, {"shm_segment": fields["shm_segment"]})
        assert 3 in master.tables
        header = {"iteration": 0, "run": "r"}
        assert worker.frames(MessageType.BLOCK, header, np.ones(4)) is None  # not replying
        worker.replying = True
        assert len(worker.frames(MessageType.BLOCK, header, np.ones(4))) == 1
        master.accepted(3, {})  # a SETUP_OK without a segment: the rank goes back to frames
        assert 3 not in master.tables
    finally:
        worker.close()
        master.close()


def test_an_offer_from_another_host_falls_back_to_frames_unless_shm_is_required():
    master = MasterSegments("auto", clock_id())
    try:
        offer = master.setup_fields(10)["shm_offer"]
        elsewhere = {**offer, "segment": {**offer["segment"], "clock": "another-boot-id"}}
        worker = WorkerSegments(clock_id())
        assert worker.setup(elsewhere, 0, 1024) == {} and worker.segment is None
        assert worker.setup(None, 0, 1024) == {}
        with pytest.raises(Unavailable, match="cluster.transport = 'shm' but the master is on"):
            worker.setup({**elsewhere, "required": True}, 0, 1024)
        with pytest.raises(Unavailable, match="another host"):
            master.accepted(0, {"shm_segment": elsewhere["segment"]})
    finally:
        master.close()


def test_cluster_transport_takes_three_values():
    assert load_config(None, []).cluster.transport == "auto"
    assert load_config(None, ["cluster.transport='zmq'"]).cluster.transport == "zmq"
    with pytest.raises(UserError, match="cluster.transport must be one of auto, zmq, shm"):
        load_config(None, ["cluster.transport='udp'"])


# -- the master's link against a hand-made worker ---------------------------------------------


@pytest.fixture
def link_and_peer():
    """A WorkerLink and one registered fake worker (a DEALER in this process) whose segment
    the link has mapped from its SETUP_OK."""
    link = WorkerLink("tcp://127.0.0.1")
    context = zmq.Context()
    peer = context.socket(zmq.DEALER)
    peer.connect(link.endpoint)
    ready = {"rank": 0, "pid": os.getpid(), "protocol": PROTOCOL_VERSION}
    framing.send(peer, encode(MessageType.READY, ready))
    link.wait_for_workers(1, 5)
    segment = OwnSegment(f"{link.shared.prefix}-w0-test", 2 * record_bytes(80), clock_id())
    ok = {"run": "r", "rank": 0, "affinity": None, "shm_segment": segment.info.to_header()}
    framing.send(peer, encode(MessageType.SETUP_OK, ok))
    assert link.receive(2000).message.kind is MessageType.SETUP_OK
    assert 0 in link.shared.tables
    yield link, peer, segment
    segment.close()
    context.destroy(linger=0)
    link.close()


def block(iteration: int) -> dict:
    return {"run": "r", "iteration": iteration, "worker": 0, "slot": 0}


def send_reference(peer, ref, iteration=0, length=10):
    fields = {**block(iteration), "dtype": "<f8", "shape": [length], "shm": ref}
    framing.send(peer, encode(MessageType.BLOCK, fields))


def test_the_link_reads_a_block_by_reference(link_and_peer):
    link, peer, segment = link_and_peer
    framing.send(peer, encode_shared(segment, MessageType.BLOCK, block(0), np.arange(10.0)))
    received = link.receive(2000)
    np.testing.assert_array_equal(received.message.array, np.arange(10.0))
    assert not link.rejected


def test_the_link_refuses_and_counts_a_reference_to_an_unknown_segment(link_and_peer):
    link, peer, segment = link_and_peer
    send_reference(peer, [f"{link.shared.prefix}-w9-other", 128, 80, 0])
    theta_segment = link.shared.setup_fields(10)["shm_offer"]["segment"]["name"]
    send_reference(peer, [theta_segment, 128, 80, 0])  # the master's own: not this peer's
    assert link.receive(300) is None
    assert link.rejected == {"unknown-segment": 2}


def test_the_link_refuses_and_counts_a_reference_out_of_bounds(link_and_peer):
    link, peer, segment = link_and_peer
    segment.put(0, np.zeros(10))
    send_reference(peer, [segment.info.name, segment.info.size - 64, 80, 0])
    send_reference(peer, [segment.info.name, 0, 80, 0])
    assert link.receive(300) is None
    assert link.rejected == {"out-of-bounds": 2}


def test_the_link_refuses_and_counts_a_stale_reference(link_and_peer):
    link, peer, segment = link_and_peer
    old = segment.put(0, np.zeros(10))
    segment.put(2, np.ones(10))  # iteration 2 reuses iteration 0's record
    send_reference(peer, old)
    assert link.receive(300) is None
    assert link.rejected == {"stale-reference": 1}


def test_the_link_refuses_a_reference_from_a_worker_that_announced_no_segment(link_and_peer):
    link, peer, segment = link_and_peer
    framing.send(peer, encode(MessageType.SETUP_OK, {"run": "r2", "rank": 0, "affinity": None}))
    assert link.receive(2000).message.kind is MessageType.SETUP_OK
    framing.send(peer, encode_shared(segment, MessageType.BLOCK, block(0), np.arange(10.0)))
    assert link.receive(300) is None
    assert link.rejected == {"unknown-segment": 1}


def test_a_required_shared_memory_that_the_master_cannot_map_is_a_clear_error():
    link = WorkerLink("tcp://127.0.0.1", transport="shm")
    context = zmq.Context()
    try:
        peer = context.socket(zmq.DEALER)
        peer.connect(link.endpoint)
        ready = {"rank": 0, "pid": os.getpid(), "protocol": PROTOCOL_VERSION}
        framing.send(peer, encode(MessageType.READY, ready))
        link.wait_for_workers(1, 5)
        segment = OwnSegment(f"{link.shared.prefix}-w0-x", 1024, clock_id())
        bogus = {**segment.info.to_header(), "token": "0" * 32}
        framing.send(peer, encode(MessageType.SETUP_OK, {"run": "r", "shm_segment": bogus}))
        with pytest.raises(UserError, match="cluster.transport = 'shm' but the master cannot"):
            link.receive(2000)
        segment.close()
    finally:
        context.destroy(linger=0)
        link.close()


# -- real processes ---------------------------------------------------------------------------


def small(tmp_path, *extra):
    return load_config(
        None,
        [
            "cluster.workers=4", "model.samples=80", "model.coordinates=30",
            "run.iterations=3", "run.iteration_seconds=0.02", f"run.output='{tmp_path}'",
            "predict.samples=2000", *extra,
        ],
    )  # fmt: skip


def ours(pid: int) -> str:
    """The segment name prefix of the master process `pid` (bcgc_sim.wire.shm.run_prefix)."""
    return f"bcgc-{pid}-"


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["shm", "zmq"])
def test_every_protocol_decodes_exactly_with_either_transport(tmp_path, transport):
    schemes = "['uncoded', 'bcgc-opt', 'tandon', 'partial-gc']"
    config = small(tmp_path, f"run.schemes={schemes}", f"cluster.transport='{transport}'")
    summaries = run_testbed(config, tmp_path / "run", log=lambda text: None)
    for s in summaries:
        assert s.gradient_max_rel_error is not None and s.gradient_max_rel_error <= 1e-9, s
    assert mapped_segments(ours(os.getpid())) == []  # closed with the cluster


@pytest.mark.slow
def test_theta_and_blocks_go_by_reference_on_one_host_and_a_killed_workers_segment_is_freed(
    tmp_path,
):
    config = small(tmp_path)
    with LocalCluster(4, log_dir=tmp_path / "logs", transport="shm") as cluster:
        session, theta = session_for(cluster, config, "single-bcgc", tmp_path)
        assert sorted(cluster.link.shared.tables) == [0, 1, 2, 3]
        pids = [p.pid for p in cluster.processes]
        prefix = cluster.link.shared.prefix
        segments = {name for _, _, name in mapped_segments(prefix)}
        assert {f"{prefix}-theta"} | {f"{prefix}-w{r}-{pids[r]}" for r in range(4)} == segments
        result, _ = session.iterate(0, theta)
        assert result.gradient_rel_error <= 1e-9
        cluster.processes[3].send_signal(signal.SIGKILL)
        cluster.processes[3].wait()
        for iteration in (1, 2):
            result, _ = session.iterate(iteration, theta)
            assert result.gradient_rel_error <= 1e-9
        assert 3 in cluster.link.dead
        left = {name for _, _, name in mapped_segments(prefix)}
        assert f"{prefix}-w3-{pids[3]}" not in left  # the master let go of the dead one's
        assert f"{prefix}-w0-{pids[0]}" in left
    assert mapped_segments(prefix) == [] and shm_files(prefix) == []


@pytest.mark.slow
def test_an_error_that_ends_the_run_leaves_no_segment(tmp_path):
    config = small(tmp_path)
    with pytest.raises(RunError, match="can no longer be decoded"):  # uncoded needs all N
        with LocalCluster(4, log_dir=tmp_path / "logs", transport="shm") as cluster:
            prefix = cluster.link.shared.prefix
            session, theta = session_for(cluster, config, "uncoded", tmp_path)
            session.iterate(0, theta)
            cluster.processes[1].kill()
            session.iterate(1, theta)
    assert wait_until_no_segment(prefix)
    assert shm_files(prefix) == []


def wait_until_no_segment(prefix: str, timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not mapped_segments(prefix):
            return True
        time.sleep(0.05)
    return False


def start_master_run(tmp_path) -> tuple[subprocess.Popen, str]:
    """`bcgc run` in a subprocess with shared memory, long enough to be interrupted; returns it
    once its workers have mapped their segments, and the prefix of its segments."""
    proc = subprocess.Popen(
        [*BCGC, "run", "--set", "cluster.workers=3", "--set", "model.samples=60",
         "--set", "model.coordinates=20", "--set", "run.iterations=100000",
         "--set", "run.iteration_seconds=0.01", "--set", "run.schemes=['uncoded']",
         "--set", "cluster.transport='shm'", "--set", f"run.output='{tmp_path}'"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    prefix = ours(proc.pid)
    end = time.monotonic() + 60
    while len({pid for pid, _, _ in mapped_segments(prefix)}) < 4:  # the master and 3 workers
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < end, "the run never mapped its segments"
        time.sleep(0.1)
    return proc, prefix


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_no_segment_outlives_a_master_that_is_killed_or_interrupted(tmp_path, how):
    proc, prefix = start_master_run(tmp_path)
    workers = [c.pid for c in psutil.Process(proc.pid).children()]
    proc.send_signal(how)
    proc.wait(10)
    assert wait_until_no_segment(prefix, 10), mapped_segments(prefix)
    assert gone(workers, 5)
    assert shm_files(prefix) == []
