"""Reliability with real processes and faults the tests inject themselves: dead workers (after
their blocks arrived, at set-up, between schemes, replaced), a stopped, paused or dead master,
half-open and dropped connections (a loopback relay, tests/relay.py), bad and non-finite blocks,
stalls, shutdown by signal, full stragglers, and multi-host runs with CURVE authentication
(good, bad and missing keys). Liveness rules without processes: tests/test_liveness.py."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers import no_children_left

from bcgc_sim.config import load_config
from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.layout import layout_for
from bcgc_sim.model.stragglers import iteration_cycle_times
from bcgc_sim.results import RunRecorder
from bcgc_sim.schemes import build_plan
from master.cluster import LocalCluster
from master.runner import model_for_data, prepare_problem, run_testbed
from master.session import RunError, SchemeSession, SessionSettings, no_dead_ranks

pytestmark = pytest.mark.slow
BCGC = [sys.executable, "-m", "bcgc_sim"]
RELAY = str(Path(__file__).with_name("relay.py"))
FAST = ["cluster.heartbeat=0.1", "cluster.liveness=5"]  # a liveness window of 0.5 s
WINDOW_S = 0.5


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


# -- issue 14: dead ranks stay dead, set-up, silent and paused masters, dropped connections -------


class PatchedCluster(LocalCluster):
    """A LocalCluster whose workers run `patch` (Python, with `rank` and `marker` defined) before
    the worker's main; `relay` (a Relay) puts a loopback relay between workers and master."""

    def __init__(self, *args, patch: str = "", marker: Path | None = None, relay=None, **kwargs):
        kwargs.setdefault("heartbeat_s", 0.1)
        kwargs.setdefault("liveness", 5)
        super().__init__(*args, **kwargs)
        self.patch, self.marker, self.relay = patch, marker, relay

    def _spawn(self) -> None:
        if self.relay is not None:
            self.relay.start(self.link.endpoint)
        super()._spawn()

    def worker_command(self, rank):
        command = super().worker_command(rank)
        if self.relay is not None:
            command[command.index("--connect") + 1] = self.relay.endpoint
        code = (
            f"import os, sys\nrank, marker = {rank}, {str(self.marker)!r}\n{self.patch}\n"
            "from workers.worker import main\nsys.exit(main(sys.argv[1:]))"
        )
        return [sys.executable, "-c", code, *command[3:]]

    def close(self, grace_s: float = 0.5) -> None:
        super().close(grace_s)
        if self.relay is not None:
            self.relay.stop()


class Relay:
    """tests/relay.py in its own process: `drop()` closes every relayed connection once,
    `freeze()` stops the process (connections stay open at both ends, nothing passes)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.endpoint = ""

    def start(self, target: str) -> Relay:
        self.process = subprocess.Popen(
            [sys.executable, RELAY, target.rsplit(":", 1)[1]], stdout=subprocess.PIPE, text=True
        )
        self.endpoint = f"tcp://127.0.0.1:{int(self.process.stdout.readline())}"
        return self

    def drop(self) -> None:
        self.process.send_signal(signal.SIGUSR1)

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


DIES_ON_SETUP = """
import workers.worker as w
setup = w.Worker.setup
def dying(self, message):
    if os.path.exists(marker):  # once: the replacement finds no marker
        os.unlink(marker)
        os._exit(5)
    setup(self, message)
if rank == 1:
    w.Worker.setup = dying
"""

BAD_BLOCKS = """
import numpy as np
import workers.worker as w
from bcgc_sim.wire.protocol import MessageType
send = w.Worker.send
def bad(self, kind, header, array=None):
    if kind is MessageType.BLOCK and header["iteration"] == 1:
        send(self, kind, dict(header, slot=99), array)  # a slot that does not exist
        send(self, kind, header, np.zeros(array.size - 1))  # the wrong length
        array = np.full_like(array, np.nan)
    send(self, kind, header, array)
if rank == 0:
    w.Worker.send = bad
"""

SILENT = """
import workers.worker as w
if rank == 2:  # stays live (heartbeats) but never computes anything
    w.Worker.iterate = lambda self, message: self.wait_until(None)
"""


def fast_config(tmp_path, *extra):
    return small(tmp_path, *FAST, "run.iteration_seconds=0.05", *extra)


def kill_when_used(session, cluster, victim: int, iteration: int) -> None:
    """SIGKILL `victim` as soon as the master has used its last block of `iteration`."""
    on_block = session._on_block
    last = len(session.layout.slots) - 1

    def hooked(received, state):
        used = on_block(received, state)
        h = received.message.header
        if used and received.rank == victim and state.number == iteration and h["slot"] == last:
            cluster.processes[victim].kill()
            cluster.processes[victim].wait()
        return used

    session._on_block = hooked


@pytest.mark.parametrize("on_failure", ["error", "replace"])
def test_a_worker_killed_after_its_blocks_arrived_stays_dead_for_later_iterations_and_schemes(
    tmp_path, on_failure
):
    """The master usually notices this death during the iteration that no longer needs the
    worker; every later iteration and scheme must still count the rank as dead."""
    config = fast_config(tmp_path)
    with PatchedCluster(4, log_dir=tmp_path / "logs") as cluster:
        session, theta = session_for(
            cluster, config, "uncoded", tmp_path, on_failure=on_failure, time_scale=5e-7
        )
        kill_when_used(session, cluster, victim=2, iteration=0)
        result, _ = session.iterate(0, theta)
        assert result.gradient_rel_error <= 1e-9
        start = time.monotonic()
        if on_failure == "error":
            with pytest.raises(
                RunError, match=r"uncoded, iteration 1: worker\(s\) 2 died and block 0"
            ):
                session.iterate(1, theta)
            assert time.monotonic() - start < 0.5  # at once, not after a stall limit
            later, theta = session_for(cluster, config, "tandon", tmp_path / "t", time_scale=5e-7)
            with pytest.raises(
                RunError, match=r"tandon, iteration 0: worker\(s\) 2 died and block"
            ):
                later.iterate(0, theta)
            assert time.monotonic() - start < 1.5  # the set-up did not wait for rank 2 either
        else:
            for iteration in (1, 2):
                result, _ = session.iterate(iteration, theta)
                assert result.gradient_rel_error <= 1e-9
            assert time.monotonic() - start < 5  # a replacement process started and set up
            assert [e["event"] for e in session.events] == ["died", "replaced"]
            assert cluster.processes[2].poll() is None
    assert no_children_left()


@pytest.mark.parametrize("on_failure", ["error", "replace"])
def test_a_worker_dying_during_set_up_is_noticed_at_once(tmp_path, on_failure):
    marker = tmp_path / "die-once"
    marker.touch()
    config = fast_config(tmp_path, "run.schemes=['uncoded']", f"cluster.on_failure='{on_failure}'")
    folder = tmp_path / "run"

    def cluster():
        return PatchedCluster(
            4, 30, folder / "logs", max_message_bytes=1 << 20, patch=DIES_ON_SETUP, marker=marker
        )  # fmt: skip

    start = time.monotonic()
    if on_failure == "error":
        with pytest.raises(RunError, match=r"uncoded, iteration 0: worker\(s\) 1 died and block 0"):
            run_testbed(config, folder, log=lambda text: None, cluster_factory=cluster)
        assert time.monotonic() - start < 5  # start-up included; never the 60 s set-up wait
    else:
        (summary,) = run_testbed(config, folder, log=lambda text: None, cluster_factory=cluster)
        assert summary.gradient_max_rel_error <= 1e-9
    meta = json.loads((folder / "run.json").read_text())
    events = [(e["scheme"], e["rank"], e["event"]) for e in meta["worker_events"]]
    expected = [("uncoded", 1, "died")] + [("uncoded", 1, "replaced")] * (on_failure == "replace")
    assert events == expected
    assert meta["status"].startswith("completed" if on_failure == "replace" else "failed: ")
    assert no_children_left()


@pytest.mark.parametrize("on_failure", ["error", "replace"])
def test_a_worker_dying_between_two_schemes_is_noticed_at_once(tmp_path, on_failure):
    config = fast_config(
        tmp_path, "run.schemes=['single-bcgc', 'uncoded']", "run.iterations=3",
        f"cluster.on_failure='{on_failure}'",
    )  # fmt: skip
    folder = tmp_path / "run"
    clusters, killed = [], []

    def cluster():
        clusters.append(PatchedCluster(4, 30, folder / "logs", max_message_bytes=1 << 20))
        return clusters[-1]

    def log(text):
        if text.startswith("uncoded"):  # single-bcgc is done, uncoded not yet set up
            clusters[0].processes[3].kill()
            clusters[0].processes[3].wait()
            killed.append(time.monotonic())

    if on_failure == "error":
        with pytest.raises(RunError, match=r"uncoded, iteration 0: worker\(s\) 3 died and block 0"):
            run_testbed(config, folder, log=log, cluster_factory=cluster)
        assert time.monotonic() - killed[0] < 1.0
        assert json.loads((folder / "run.json").read_text())["status"].startswith("failed")
    else:
        summaries = run_testbed(config, folder, log=log, cluster_factory=cluster)
        assert all(s.gradient_max_rel_error <= 1e-9 for s in summaries)
    assert no_children_left()


def _remote_run(tmp_path, endpoint, *extra, workers_at=None, keys=None):
    """`bcgc master` on `endpoint` and two `bcgc worker`s (at `workers_at`, default the same
    endpoint) started with the default heartbeat: they take the master's 0.1 s at set-up."""
    curve = (
        []
        if keys is None
        else ["--key", str(keys / "master.key_secret"), "--allow", str(keys / "allow")]
    )
    master = subprocess.Popen(
        [*BCGC, "master", "--bind", endpoint, "--workers", "2", "-o", str(tmp_path / "run"),
         "--set", "model.samples=80", "--set", "model.coordinates=30", "--json",
         *[a for item in FAST for a in ("--set", item)], *curve, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    workers = []
    for name in ("w0", "w1"):
        worker_curve = (
            [] if keys is None else
            ["--key", str(keys / f"{name}.key_secret"), "--server-key", str(keys / "master.key")]
        )  # fmt: skip
        workers.append(
            subprocess.Popen(
                [*BCGC, "worker", "--connect", workers_at or endpoint, *worker_curve],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    return master, workers


def _wait_rows(path, rows: int, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and _lines(path) < rows + 1:
        time.sleep(0.05)
    assert _lines(path) >= rows + 1, f"no {rows} rows in {path}"


def _exit_times(workers, since: float, timeout_s: float = 10) -> list[float]:
    times = []
    for worker in workers:
        worker.wait(timeout_s)
        times.append(time.monotonic() - since)
    return times


def test_remote_workers_leave_a_stopped_master_within_the_liveness_window(tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    master, workers = _remote_run(tmp_path, endpoint, "--set", "run.iterations=100000")
    try:
        _wait_rows(tmp_path / "run" / "iterations.csv", 3)
        master.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        times = _exit_times(workers, stopped)
        print(f"workers left a stopped master after {times} s")
        assert max(times) < WINDOW_S + 1.0, times  # README: liveness x heartbeat (+ 1 s)
        for worker in workers:
            assert worker.returncode == 3
            assert "lost the connection to the master" in worker.stderr.read()
    finally:
        for process in [master, *workers]:
            process.kill()
            process.wait()


def test_remote_workers_leave_a_half_open_connection_within_the_liveness_window(tmp_path):
    """A relay that stops passing bytes: both TCP connections stay open (the kernel still
    acknowledges), as when the master's host freezes or the path between them dies."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    relay = Relay().start(endpoint)
    master, workers = _remote_run(
        tmp_path, endpoint, "--set", "run.iterations=100000", workers_at=relay.endpoint
    )
    try:
        _wait_rows(tmp_path / "run" / "iterations.csv", 3)
        relay.freeze()
        frozen = time.monotonic()
        times = _exit_times(workers, frozen)
        print(f"workers left a half-open connection after {times} s")
        assert max(times) < WINDOW_S + 1.0, times
        assert all(worker.returncode == 3 for worker in workers)
        # the master finds them silent and ends the run with one line, not a hang
        assert master.wait(10) == 2
        assert "silent for more than" in master.stderr.read()
    finally:
        relay.process.send_signal(signal.SIGCONT)
        relay.stop()
        for process in [master, *workers]:
            process.kill()
            process.wait()


def test_a_master_stopped_for_longer_than_the_window_blames_no_worker(tmp_path):
    """SIGSTOP for 3 windows in the middle of a run: when it resumes it reads what is queued
    and restarts every clock; the run completes, exact, with no worker declared dead."""
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [*BCGC, "run", "-o", str(folder), "--json", "--set", "run.iterations=30",
         "--set", "run.iteration_seconds=0.05", "--set", "run.schemes=['bcgc-t', 'tandon']",
         *[a for item in FAST for a in ("--set", item)]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_rows(folder / "iterations.csv", 5)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3 * WINDOW_S)
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "completed" and meta["worker_events"] == []
    for scheme in json.loads(out)["schemes"].values():
        assert scheme["gradient_max_rel_error"] <= 1e-9


def test_a_busy_master_blames_no_worker_and_still_finds_a_dead_one(tmp_path):
    """The master's main thread does not read for 3 windows in mid-iteration (a long
    computation): no worker is blamed; a worker killed afterwards is still found by silence."""
    config = fast_config(tmp_path)
    with PatchedCluster(4, log_dir=tmp_path / "logs") as cluster:
        cluster.dead_ranks = no_dead_ranks  # silence alone, as for remote workers
        session, theta = session_for(cluster, config, "single-bcgc", tmp_path, time_scale=1e-6)
        receive, calls = cluster.link.receive, []

        def busy(timeout_ms):
            calls.append(1)
            if len(calls) == 3:
                time.sleep(3 * WINDOW_S)
            return receive(timeout_ms)

        cluster.link.receive = busy
        result, _ = session.iterate(0, theta)
        assert result.gradient_rel_error <= 1e-9 and session.events == []
        cluster.processes[1].kill()
        killed = time.monotonic()
        for iteration in (1, 2, 3):
            result, _ = session.iterate(iteration, theta)
            assert result.gradient_rel_error <= 1e-9
        deaths = [e for e in session.events if e["event"] == "died"]
        assert [(e["rank"], e["how"]) for e in deaths] == [(1, "silent for more than 0.5 s")]
        assert time.monotonic() - killed > WINDOW_S


def test_a_dropped_connection_is_survived_by_re_registering(tmp_path):
    config = fast_config(tmp_path)
    relay = Relay()
    with PatchedCluster(4, log_dir=tmp_path / "logs", relay=relay) as cluster:
        session, theta = session_for(cluster, config, "bcgc-t", tmp_path, time_scale=1e-6)
        for iteration in range(5):
            if iteration == 2:
                threading.Timer(0.02, relay.drop).start()  # inside the iteration
            result, _ = session.iterate(iteration, theta)
            print(
                f"iteration {iteration}: {result.measured_s:.3f} s (predicted {result.predicted_s:.3f} s)"
            )
            assert result.gradient_rel_error <= 1e-9
            assert result.measured_s < 2.0
        events = [(e["rank"], e["event"]) for e in session.events]
        assert sorted(events) == [(r, "reconnected") for r in range(4)]
        assert cluster.link.dead == set()
    assert no_children_left()


def test_a_dropped_connection_with_curve_keys_is_survived_in_both_protocols(tmp_path, keys):
    """Through a relay with CURVE on: dropped once during bcgc-t and once during partial-gc;
    each worker re-registers under its rank with the same key and the run completes exactly."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    relay = Relay().start(endpoint)
    master, workers = _remote_run(
        tmp_path, endpoint, "--set", "run.iterations=8", "--set", "run.iteration_seconds=0.05",
        "--set", "run.schemes=['bcgc-t', 'partial-gc']",
        workers_at=relay.endpoint, keys=keys,
    )  # fmt: skip
    drops = []

    def drop_in_each_scheme():
        for line in master.stderr:
            if line.startswith(("bcgc-t:", "partial-gc:")):
                time.sleep(0.15)
                relay.drop()
                drops.append(line.split(":")[0])

    reader = threading.Thread(target=drop_in_each_scheme, daemon=True)
    reader.start()
    try:
        out = master.stdout.read()
        assert master.wait(60) == 0
        reader.join(5)
        assert drops == ["bcgc-t", "partial-gc"]
        for scheme in json.loads(out)["schemes"].values():
            assert scheme["gradient_max_rel_error"] <= 1e-9
        meta = json.loads((tmp_path / "run" / "run.json").read_text())
        events = {(e["scheme"], e["rank"], e["event"]) for e in meta["worker_events"]}
        assert {e for e in events if e[2] == "died"} == set()
        assert {(s, r) for s, r, e in events if e == "reconnected"} == {
            (s, r) for s in ("bcgc-t", "partial-gc") for r in (0, 1)
        }
        for worker in workers:
            assert worker.wait(10) == 0, worker.stderr.read()
    finally:
        relay.stop()
        for process in [master, *workers]:
            process.kill()
            process.wait()


def failing_patched_run(tmp_path, scheme: str, patch: str, error: str) -> tuple[Path, dict]:
    """A 3-iteration run of `scheme` on PatchedCluster workers that must end with a RunError
    matching `error`; its folder and run.json."""
    config = fast_config(tmp_path, f"run.schemes=['{scheme}']", "run.iterations=3")
    folder = tmp_path / "run"

    def cluster():
        return PatchedCluster(4, 30, folder / "logs", max_message_bytes=1 << 20, patch=patch)

    with pytest.raises(RunError, match=error):
        run_testbed(config, folder, log=lambda text: None, cluster_factory=cluster)
    return folder, json.loads((folder / "run.json").read_text())


def test_bad_and_non_finite_blocks_are_counted_logged_and_never_decoded(tmp_path):
    folder, meta = failing_patched_run(
        tmp_path, "uncoded", BAD_BLOCKS, r"worker\(s\) 0 died and block 0.*sent non-finite values"
    )
    rejected = meta["rejected_messages"]
    assert rejected["unknown-slot"] == 1 and rejected["wrong-shape"] == 1, rejected
    assert rejected["non-finite"] >= 1, rejected
    log = (folder / "logs" / "master.log").read_text()
    for reason in ("unknown-slot", "wrong-shape", "non-finite"):
        assert f"rejected a message ({reason}) from worker 0" in log
    rows = list(csv.DictReader(open(folder / "iterations.csv")))
    assert [r["iteration"] for r in rows] == ["0"]  # no iteration with a nan gradient
    assert no_children_left()


def test_live_workers_that_send_nothing_end_the_iteration_at_the_derived_stall_limit(tmp_path):
    config = fast_config(tmp_path)
    with PatchedCluster(4, log_dir=tmp_path / "logs", patch=SILENT) as cluster:
        session, theta = session_for(cluster, config, "uncoded", tmp_path, time_scale=1e-7)
        start = time.monotonic()
        with pytest.raises(RunError, match=r"although worker\(s\) \[2\] are live") as info:
            session.iterate(0, theta)
        waited = time.monotonic() - start
        predicted = session.predicted_seconds(
            iteration_cycle_times(session.model.distribution, 1, 0, 4)
        )
        limit = float(re.search(r"no usable message for ([\d.]+) s", str(info.value)).group(1))
        assert limit == pytest.approx(WINDOW_S + 2 * predicted + 1.0, rel=1e-4)  # derived
        assert limit < waited < limit + 0.5
        assert session.events == []  # it heartbeats: live, never dead


def test_partial_gc_never_counts_a_rank_that_died_earlier(tmp_path):
    """Killed after partial-gc's first iteration: its later iterations run without the rank
    (full storage) and the next scheme, which needs every worker, ends at once."""
    config = fast_config(
        tmp_path, "run.schemes=['partial-gc', 'uncoded']", "run.iterations=4", "partial.storage=4"
    )
    folder = tmp_path / "run"
    clusters = []

    def cluster():
        clusters.append(PatchedCluster(4, 30, folder / "logs", max_message_bytes=1 << 20))
        return clusters[-1]

    def log(text):
        if text.startswith("partial-gc"):
            threading.Timer(0.05, clusters[0].processes[2].kill).start()

    with pytest.raises(RunError, match=r"uncoded, iteration 0: worker\(s\) 2 died and block 0"):
        run_testbed(config, folder, log=log, cluster_factory=cluster)
    rows = [
        r for r in csv.DictReader(open(folder / "iterations.csv")) if r["scheme"] == "partial-gc"
    ]
    assert len(rows) == 4 and all(float(r["gradient_rel_error"]) <= 1e-9 for r in rows)
    assert no_children_left()


NAN_UPLOAD = """
import numpy as np
import workers.partial as p
upload = p.r1_upload
if rank == 0:
    p.r1_upload = lambda *args: np.full_like(upload(*args), np.nan)
"""


def test_a_non_finite_upload_ends_partial_gc_with_one_line(tmp_path):
    folder, meta = failing_patched_run(
        tmp_path, "partial-gc", NAN_UPLOAD, r"worker\(s\) \[0\] sent non-finite values; variant R1"
    )
    assert meta["rejected_messages"]["non-finite"] == 1
    assert not (folder / "iterations.csv").read_text().strip().splitlines()[1:]  # no nan row
    assert no_children_left()


def test_a_frozen_local_worker_is_declared_dead_by_silence_and_replaced(tmp_path):
    """SIGSTOP: the process is still there, so only its silence tells; its replacement takes
    over and the frozen process is killed (no second worker for the rank)."""
    config = fast_config(tmp_path)
    with PatchedCluster(4, log_dir=tmp_path / "logs") as cluster:
        session, theta = session_for(
            cluster, config, "uncoded", tmp_path, on_failure="replace", time_scale=1e-7
        )
        session.iterate(0, theta)
        frozen = cluster.processes[3]
        frozen.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        result, _ = session.iterate(1, theta)
        assert result.gradient_rel_error <= 1e-9
        assert WINDOW_S < time.monotonic() - start < WINDOW_S + 5  # silence, then a new process
        assert [(e["event"], e.get("how")) for e in session.events] == [
            ("died", "silent for more than 0.5 s"),
            ("replaced", None),
        ]
        assert frozen.poll() is not None and cluster.processes[3] is not frozen
    assert no_children_left()


def test_a_remote_replacement_takes_the_rank_of_a_dead_worker(tmp_path):
    """`bcgc master` with on_failure = replace: a remote worker is killed, the master says so and
    waits; a new `bcgc worker` takes its rank and the run completes with exact gradients."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    master, workers = _remote_run(
        tmp_path, endpoint, "--set", "run.iterations=40", "--set", "run.schemes=['uncoded']",
        "--set", "cluster.on_failure='replace'", "--set", "cluster.replace_timeout=30",
    )  # fmt: skip
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(master.stderr), daemon=True)
    reader.start()
    try:
        _wait_rows(tmp_path / "run" / "iterations.csv", 3)
        workers[1].kill()
        end = time.monotonic() + 10
        while time.monotonic() < end and not any("start a replacement" in l for l in lines):
            time.sleep(0.05)
        assert any("start a replacement" in l for l in lines), lines
        workers.append(
            subprocess.Popen(
                [*BCGC, "worker", "--connect", endpoint],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
        out = master.stdout.read()
        assert master.wait(60) == 0, lines
        assert json.loads(out)["schemes"]["uncoded"]["gradient_max_rel_error"] <= 1e-9
        meta = json.loads((tmp_path / "run" / "run.json").read_text())
        assert [e["event"] for e in meta["worker_events"]] == ["died", "replaced"]
    finally:
        for process in [master, *workers]:
            process.kill()
            process.wait()
