"""Reliability: dead workers, a dead master, shutdown by signal, full stragglers, and
multi-host runs with CURVE authentication (good, bad and missing keys)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import psutil
import pytest

from bcgc_sim.config import load_config
from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.layout import layout_for
from bcgc_sim.results import RunRecorder
from bcgc_sim.schemes import build_plan
from master.cluster import LocalCluster
from master.runner import model_for_data, prepare_problem, run_testbed
from master.session import RunError, SchemeSession, SessionSettings, no_dead_ranks

pytestmark = pytest.mark.slow
BCGC = [sys.executable, "-m", "bcgc_sim"]


def gone(pids, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            for p in pids
        ):
            return True
        time.sleep(0.05)
    return False


def small(tmp_path, *extra):
    return load_config(
        None,
        [
            "cluster.workers=4",
            "model.samples=80",
            "model.coordinates=30",
            f"run.output='{tmp_path}'",
            *extra,
        ],
    )


def session_for(cluster, config, scheme, tmp_path, **settings):
    data = prepare_problem(config)
    model = model_for_data(config, data)
    plan = build_plan(scheme, model)
    options = dict(
        seed=1, time_scale=1.5e-6, check=True, learning_rate=0.0, heartbeat_s=0.1, liveness=5
    )
    options.update(settings)
    session = SchemeSession(
        cluster.link, scheme, plan, layout_for(plan, data.rows), model, data, CodeBook(4, 1),
        SessionSettings(**options), RunRecorder(tmp_path / scheme), cluster.dead_ranks, cluster.respawn,
    )  # fmt: skip
    session.setup()
    return session, np.zeros(data.coordinates)


def kill_later(cluster, rank: int, after_s: float) -> threading.Timer:
    timer = threading.Timer(after_s, lambda: cluster.processes[rank].send_signal(signal.SIGKILL))
    timer.start()
    return timer


def test_a_dead_worker_that_makes_a_block_undecodable_ends_the_run_with_one_clear_error(tmp_path):
    config = small(tmp_path)
    with LocalCluster(4, log_dir=tmp_path / "logs") as cluster:
        session, theta = session_for(cluster, config, "uncoded", tmp_path)  # every worker needed
        pids = [p.pid for p in cluster.processes]
        kill_later(cluster, 2, 0.2)
        start = time.monotonic()
        with pytest.raises(
            RunError, match=r"uncoded, iteration 0: worker\(s\) 2 died and block 0 \(s = 0\)"
        ):
            session.iterate(0, theta)
        assert time.monotonic() - start < 3
        assert session.events[0]["rank"] == 2 and session.events[0]["event"] == "died"
    assert gone(pids, 3)


def test_blocks_with_enough_live_workers_keep_decoding(tmp_path):
    config = small(tmp_path)
    with LocalCluster(4, log_dir=tmp_path / "logs") as cluster:
        session, theta = session_for(cluster, config, "single-bcgc", tmp_path)  # any 1 of 4 will do
        cluster.processes[3].send_signal(signal.SIGKILL)
        cluster.processes[3].wait()
        for iteration in range(3):
            result, _ = session.iterate(iteration, theta)
            assert result.gradient_rel_error <= 1e-9
        assert [e["event"] for e in session.events] == ["died"]


def test_a_replacement_worker_takes_the_dead_workers_place(tmp_path):
    config = small(tmp_path)
    with LocalCluster(4, log_dir=tmp_path / "logs") as cluster:
        session, theta = session_for(cluster, config, "uncoded", tmp_path, on_failure="replace")
        old = cluster.processes[1].pid
        kill_later(cluster, 1, 0.2)
        result, _ = session.iterate(0, theta)
        assert result.gradient_rel_error <= 1e-9
        assert [e["event"] for e in session.events] == ["died", "replaced"]
        assert cluster.processes[1].pid != old and cluster.processes[1].poll() is None
        result, _ = session.iterate(1, theta)  # the replacement carries on like the original
        assert result.gradient_rel_error <= 1e-9 and result.measured_s < 5


def test_a_silent_worker_is_found_by_heartbeats_alone(tmp_path):
    """Without process information (as for remote workers), silence reveals the death."""
    config = small(tmp_path)
    with LocalCluster(4, log_dir=tmp_path / "logs") as cluster:
        cluster.dead_ranks = no_dead_ranks
        session, theta = session_for(cluster, config, "uncoded", tmp_path)
        kill_later(cluster, 0, 0.2)
        start = time.monotonic()
        with pytest.raises(RunError, match=r"worker\(s\) 0 died"):
            session.iterate(0, theta)
        assert time.monotonic() - start < 0.2 + 0.5 + 1.0  # kill + liveness (5 x 0.1 s) + slack
        assert "silent" in session.events[0]["how"]


def test_full_stragglers_never_answer_and_are_predicted_alike(tmp_path):
    config = small(
        tmp_path, "straggler.distribution='failure-mixture'", "straggler.failure_probability=0.25",
        "run.schemes=['ferdinand-L']", "run.iterations=6", "run.iteration_seconds=0.05",
    )  # fmt: skip
    summaries = run_testbed(config, tmp_path / "run", log=lambda text: None)
    for s in summaries:
        assert s.gradient_max_rel_error <= 1e-9
        assert 0.95 < s.ratio < 1.3  # silent workers are simply absent, in both clocks
    with pytest.raises(RunError, match="full stragglers"):
        run_testbed(
            small(tmp_path, "straggler.distribution='failure-mixture'", "straggler.failure_probability=0.5",
                  "run.schemes=['uncoded']", "run.iterations=6"),
            tmp_path / "run2", log=lambda text: None,
        )  # fmt: skip


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_every_process_within_two_seconds_and_keeps_the_results(
    tmp_path, signum, status
):
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [*BCGC, "run", "-o", str(folder), "--set", "run.iterations=1000", "--set", "run.iteration_seconds=0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )  # fmt: skip
    end = time.monotonic() + 60
    while time.monotonic() < end and _lines(folder / "iterations.csv") < 3:  # some iterations done
        time.sleep(0.1)
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(children) >= 8
    start = time.monotonic()
    proc.send_signal(signum)
    proc.wait(10)
    assert time.monotonic() - start < 2.0
    assert proc.returncode == status
    assert gone(children, 0.5)
    assert len(proc.stderr.read().strip().splitlines()[-1:]) == 1
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "interrupted"
    assert len((folder / "iterations.csv").read_text().splitlines()) > 2  # header + finished rows


def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_workers_exit_when_the_master_dies(tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    master = subprocess.Popen(
        [*BCGC, "master", "--bind", endpoint, "--workers", "2", "-o", str(tmp_path / "run"),
         "--set", "run.iterations=1000", "--set", "cluster.heartbeat=0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers = [
        subprocess.Popen(
            [*BCGC, "worker", "--connect", endpoint],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and _lines(tmp_path / "run" / "iterations.csv") < 3:
            time.sleep(0.1)
        master.send_signal(signal.SIGKILL)
        start = time.monotonic()
        for worker in workers:
            worker.wait(10)
        assert time.monotonic() - start < 0.1 * 10 + 1.5  # liveness (10 x 0.1 s) plus slack
        for worker in workers:
            assert worker.returncode == 3
            assert "lost the connection to the master" in worker.stderr.read()
    finally:
        for p in [master, *workers]:
            if p.poll() is None:
                p.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- multi-host with CURVE --------------------------------------------------------------------------


def _netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"bcgcprobe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    return ok


@pytest.fixture(scope="module")
def worker_host():
    """(master address, command prefix running a worker on another host): a network namespace
    joined by a veth pair where the machine allows it, else a second loopback address."""
    if not _netns_available():
        yield "127.0.0.2", []
        return
    tag = uuid.uuid4().hex[:6]
    ns, outside, inside = f"bcgc{tag}", f"vb{tag}", f"vw{tag}"
    commands = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
        ["ip", "link", "set", inside, "netns", ns],
        ["ip", "addr", "add", "169.254.77.1/30", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", "169.254.77.2/30", "dev", inside],
        ["ip", "netns", "exec", ns, "ip", "link", "set", inside, "up"],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield "169.254.77.1", ["ip", "netns", "exec", ns]
    finally:
        subprocess.run(["ip", "link", "delete", outside], capture_output=True)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    for name in ("master", "w0", "w1", "stranger"):
        subprocess.run(
            [*BCGC, "keygen", "--dir", str(folder), "--name", name], check=True, capture_output=True
        )
    allow = folder / "allow"
    allow.mkdir()
    for name in ("w0", "w1"):
        shutil.copy(folder / f"{name}.key", allow)
    return folder


def _master(address, keys, folder, port, *extra):
    return subprocess.Popen(
        [*BCGC, "master", "--bind", f"tcp://{address}:{port}", "--workers", "2", "-o", str(folder),
         "--key", str(keys / "master.key_secret"), "--allow", str(keys / "allow"),
         "--set", "run.iterations=3", "--set", "run.schemes=['bcgc-t', 'tandon']", "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _worker(prefix, address, port, key, keys, timeout="30"):
    extra = (
        []
        if key is None
        else ["--key", str(keys / f"{key}.key_secret"), "--server-key", str(keys / "master.key")]
    )
    return subprocess.Popen(
        [*prefix, *BCGC, "worker", "--connect", f"tcp://{address}:{port}", "--timeout", timeout, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_multi_host_run_with_allowed_keys(worker_host, keys, tmp_path):
    address, prefix = worker_host
    port = _free_port()
    master = _master(address, keys, tmp_path / "run", port)
    workers = [_worker(prefix, address, port, name, keys) for name in ("w0", "w1")]
    out, err = master.communicate(timeout=120)
    assert master.returncode == 0, err
    result = json.loads(out)
    for scheme in ("bcgc-t", "tandon"):
        assert result["schemes"][scheme]["gradient_max_rel_error"] <= 1e-9
    for worker in workers:
        assert worker.wait(10) == 0


@pytest.mark.parametrize("key", ["stranger", None], ids=["unlisted key", "no key"])
def test_workers_without_an_allowed_key_are_refused(worker_host, keys, tmp_path, key):
    address, prefix = worker_host
    port = _free_port()
    master = _master(address, keys, tmp_path / "run", port, "--set", "run.startup_timeout=4")
    intruder = _worker(prefix, address, port, key, keys, timeout="2")
    assert intruder.wait(15) == 1
    assert "no answer from the master" in intruder.stderr.read()
    master.wait(20)
    assert master.returncode == 2
    assert "only 0 of 2 workers connected" in master.stderr.read()


def test_a_non_loopback_master_without_keys_is_refused(worker_host, tmp_path):
    address, _ = worker_host
    if address.startswith("127."):
        address = "0.0.0.0"
    proc = subprocess.run(
        [*BCGC, "master", "--bind", f"tcp://{address}:{_free_port()}", "--workers", "2", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "exposes it beyond this machine" in lines[0]
