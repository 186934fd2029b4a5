"""Launchers: the rank a worker takes from mpirun's, PMIx's, MPICH's or srun's variables, a real
cluster started by mpirun, the Slurm batch script (checked without Slurm), and `bcgc master
--timeout` reporting who connected and who was refused."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from bcgc_sim.wire.protocol import PROTOCOL_VERSION
from master.transport import PeerTable
from workers.worker import RankError, rank_from_environment

BCGC = [sys.executable, "-m", "bcgc_sim"]


# -- the rank from the launcher's environment ------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "rank"),
    [
        ({}, -1),
        ({"OMPI_COMM_WORLD_RANK": "3"}, 3),
        ({"PMIX_RANK": "4"}, 4),
        ({"PMI_RANK": "5"}, 5),
        ({"SLURM_PROCID": "6"}, 6),
        # mpirun inside a Slurm allocation: SLURM_PROCID is its daemon's node index
        ({"SLURM_PROCID": "1", "OMPI_COMM_WORLD_RANK": "7", "PMIX_RANK": "7"}, 7),
        ({"SLURM_PROCID": "0", "PMI_RANK": "2"}, 2),
        ({"OMPI_COMM_WORLD_RANK": " 8\n", "SLURM_PROCID": "0"}, 8),
        ({"OMPI_COMM_WORLD_RANK": "", "SLURM_PROCID": "9"}, 9),  # empty is unset
    ],
)
def test_the_rank_comes_from_the_most_specific_launcher_variable(environ, rank):
    assert rank_from_environment(environ) == rank


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "٣"])
def test_a_rank_variable_that_is_not_a_rank_is_an_error(value):
    with pytest.raises(RankError, match="PMI_RANK="):
        rank_from_environment({"PMI_RANK": value, "SLURM_PROCID": "0"})


def test_the_worker_refuses_a_bad_rank_variable_in_one_line():
    proc = subprocess.run(
        [*BCGC, "worker", "--connect", "tcp://127.0.0.1:5999"],
        capture_output=True, text=True, timeout=60, env={"SLURM_PROCID": "x", "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "SLURM_PROCID='x' is not a rank" in lines[0], proc.stderr


def _ready(rank: int, token: str) -> dict:
    return {"rank": rank, "pid": 1, "protocol": PROTOCOL_VERSION, "token": token}


def test_a_launchers_rank_is_honoured_or_refused_never_swapped():
    peers = PeerTable()
    peers.size = 3
    assert peers.register(b"a", _ready(2, "token-of-a"), "", 0, "10.0.0.2").rank == 2
    assert peers.by_rank[2].host == "10.0.0.2"
    assert peers.register(b"b", _ready(2, "token-of-b"), "", 0) == "duplicate-rank"
    assert peers.register(b"c", _ready(3, "token-of-c"), "", 0) == "rank-out-of-range"
    assert peers.register(b"d", _ready(-1, "token-of-d"), "", 0).rank == 0  # none asked: lowest
    assert peers.register(b"e", _ready(1, "token-of-e"), "", 0).rank == 1
    assert peers.register(b"f", _ready(1, "token-of-f"), "", 0) == "surplus-worker"  # all taken
    peers.mark_dead(peers.by_rank[1], "its process exited")
    assert peers.register(b"g", _ready(1, "token-of-g"), "", 0).rank == 1  # a replacement


# -- bcgc master --timeout: who connected, who was refused -----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """CURVE key pairs: the master, two allowed workers (w0, w1) and a stranger."""
    folder = tmp_path_factory.mktemp("keys")
    allow = folder / "allow"
    allow.mkdir()
    for name in ("master", "w0", "w1", "stranger"):
        zmq.auth.create_certificates(str(folder), name)
    for name in ("w0", "w1"):
        shutil.copy(folder / f"{name}.key", allow)
    return folder


def _worker(endpoint: str, keys: Path, key: str, rank: int | None) -> subprocess.Popen:
    env = {**os.environ, "SLURM_PROCID": str(rank)} if rank is not None else dict(os.environ)
    return subprocess.Popen(
        [*BCGC, "worker", "--connect", endpoint, "--timeout", "30",
         "--key", str(keys / f"{key}.key_secret"), "--server-key", str(keys / "master.key")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_a_master_that_times_out_names_who_connected_and_who_was_refused(keys, tmp_path):
    """3 workers wanted: ranks 0 and 1 come, a second rank 0 is refused as a duplicate, a
    stranger's CURVE key is refused; after --timeout the master says so in one line, exit 2."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    master = subprocess.Popen(
        [*BCGC, "master", "--bind", endpoint, "--workers", "3", "--timeout", "5",
         "-o", str(tmp_path / "run"), "--key", str(keys / "master.key_secret"),
         "--allow", str(keys / "allow")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    zeros = [_worker(endpoint, keys, "w0", 0), _worker(endpoint, keys, "w1", 0)]
    others = [_worker(endpoint, keys, "w1", 1), _worker(endpoint, keys, "stranger", None)]
    try:
        _, err = master.communicate(timeout=90)
        waited = time.monotonic() - started
        codes = [w.wait(40) for w in zeros]
        errors = [w.stderr.read() for w in zeros]
    finally:
        for process in [master, *zeros, *others]:
            if process.poll() is None:
                process.kill()
    assert master.returncode == 2, err
    assert waited >= 5
    line = err.strip().splitlines()[-1]
    assert line.startswith("bcgc: error: only 2 of 3 workers connected"), err
    refused = 0 if codes[0] == 1 else 1  # the rank 0 that came second
    assert sorted(codes) == [0, 1], (codes, errors)  # refused; the other stopped by the master
    assert "rank 0 is held by a live worker" in errors[refused], errors
    kept = zeros[1 - refused].pid
    assert (
        f"connected: rank 0 (127.0.0.1, pid {kept}), rank 1 (127.0.0.1, pid {others[0].pid})"
        in line
    )
    assert "missing: rank 2 (start them or raise --timeout)" in line
    assert "1 x duplicate-rank from 127.0.0.1" in line
    assert "x CURVE key" in line and "not in --allow" in line


# -- a real cluster started by mpirun --------------------------------------------------------------


def mpirun_command(n: int) -> list[str]:
    """`mpirun -np n` as this machine needs it: root needs --allow-run-as-root; more ranks than
    cores need --oversubscribe; the workers pin themselves (--bind-to none)."""
    command = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(n)]
    if os.geteuid() == 0:
        command.insert(1, "--allow-run-as-root")
    return command


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mpirun") is None, reason="mpirun not found (Debian: apt-get install openmpi-bin)"
)
def test_workers_started_by_mpirun_take_its_ranks_and_decode_exactly(tmp_path):
    """`bcgc master` on loopback, `mpirun -np 3 bcgc worker --connect ...`: each worker holds
    the rank mpirun gave it (rank 0 comes last, so arrival order would give it rank 2), and
    every scheme's decoded gradient equals the uncoded one."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    folder = tmp_path / "run"
    master = subprocess.Popen(
        [*BCGC, "master", "--bind", endpoint, "--workers", "3", "--timeout", "60", "-o", str(folder),
         "--set", "model.samples=90", "--set", "model.coordinates=30", "--set", "run.iterations=3",
         "--set", "run.schemes=['bcgc-t', 'tandon', 'uncoded']", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    launched = tmp_path / "launched"  # "rank pid" per worker, written before it becomes bcgc
    log = folder / "logs" / "master.log"
    wrapper = (  # rank 0 waits until the master registered two workers: a master that
        # assigned ranks by arrival would give it rank 2
        f'echo "$OMPI_COMM_WORLD_RANK $$" >> {launched}; i=0; '
        f'while [ "$OMPI_COMM_WORLD_RANK" = 0 ] && [ $i -lt 300 ] && '
        f'[ "$(grep -c registered {log} 2>/dev/null)" != 2 ]; do sleep 0.1; i=$((i+1)); done; '
        'exec "$@"'
    )
    bcgc = str(Path(sys.executable).with_name("bcgc"))
    workers = subprocess.Popen(
        [*mpirun_command(3), "sh", "-c", wrapper, "sh", bcgc, "worker", "--connect", endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, err = master.communicate(timeout=120)
        mpirun_out, _ = workers.communicate(timeout=30)
    finally:
        for process in (master, workers):
            if process.poll() is None:
                process.kill()
    assert master.returncode == 0, err
    assert workers.returncode == 0, mpirun_out
    result = json.loads(out)
    for scheme in ("bcgc-t", "tandon", "uncoded"):
        assert result["schemes"][scheme]["gradient_max_rel_error"] <= 1e-9, result
    by_pid = dict(reversed(line.split()) for line in launched.read_text().splitlines())
    text = log.read_text()
    pattern = r"worker rank (\d+) registered \(pid (\d+), host 127.0.0.1\)"
    held = {pid: rank for rank, pid in re.findall(pattern, text)}
    assert sorted(by_pid.values()) == ["0", "1", "2"]
    assert held == by_pid, text


# -- the Slurm batch script, without Slurm ---------------------------------------------------------

SBATCH = Path(__file__).parents[1] / "scripts" / "slurm" / "bcgc.sbatch"
FAKE_SRUN = """#!/bin/sh
# srun for the tests: --ntasks=N copies of the command, task i with SLURM_PROCID=i; each
# writes "task pid" to $SRUN_LOG before it becomes the command.
n=1
while [ $# -gt 0 ]; do
    case $1 in --ntasks=*) n=${1#--ntasks=}; shift ;; --*) shift ;; *) break ;; esac
done
i=0
while [ $i -lt $n ]; do
    SLURM_PROCID=$i sh -c 'echo "$SLURM_PROCID $$" >> "$SRUN_LOG"; exec "$@"' sh "$@" &
    i=$((i + 1))
done
wait
"""
FAKE_SCONTROL = "#!/bin/sh\necho localhost\necho node2\n"  # `scontrol show hostnames LIST`


def test_the_batch_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_batch_scripts_commands_parse(tmp_path):
    """A dry run prints every command; each bcgc command is accepted by its own parser."""
    from bcgc_sim.entry.cli import build_parser
    from workers.worker import build_parser as worker_parser

    env = {**os.environ, "BCGC_DRY_RUN": "1", "SLURM_JOB_ID": "42", "SLURM_NTASKS": "5",
           "SLURM_JOB_NODELIST": "n7,n8", "PATH": "/usr/bin:/bin"}  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SBATCH), "--set", "run.iterations=30"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines()]
    assert not list(tmp_path.iterdir())  # a dry run changes nothing
    (master,) = [c for c in commands if c[:2] == ["bcgc", "master"]]
    args = build_parser().parse_args(master[1:])
    assert (args.workers, args.timeout, args.bind) == (5, 300.0, "tcp://0.0.0.0:5555")
    assert args.overrides == ["run.iterations=30"] and args.output == "results/slurm-42"
    (srun,) = [c for c in commands if c[0] == "srun"]
    assert "--ntasks=5" in srun
    worker = worker_parser().parse_args(srun[srun.index("worker") + 1 :])
    assert worker.connect == "tcp://n7:5555"  # the first node of the job
    assert worker.key == "keys/slurm-42/worker.key_secret"
    keygens = [c for c in commands if c[:2] == ["bcgc", "keygen"]]
    assert [build_parser().parse_args(c[1:]).name for c in keygens] == ["master", "worker"]


@pytest.mark.slow
def test_the_batch_script_runs_a_cluster_with_a_stand_in_srun(tmp_path):
    """The script itself, with srun and scontrol replaced by stand-ins that start the tasks on
    this machine: keys, master, 3 workers with srun's ranks, exact gradients."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    tasks = tmp_path / "tasks"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_LOG": str(tasks),
           "BCGC": str(Path(sys.executable).with_name("bcgc")), "BCGC_PORT": str(_free_port()),
           "BCGC_TIMEOUT": "60", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "3",
           "SLURM_JOB_NODELIST": "localhost,node2"}  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SBATCH), "--set", "model.samples=90", "--set", "model.coordinates=30",
         "--set", "run.iterations=3", "--set", "run.schemes=['bcgc-t', 'uncoded']", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    for scheme in ("bcgc-t", "uncoded"):
        assert result["schemes"][scheme]["gradient_max_rel_error"] <= 1e-9, result
    assert (tmp_path / "keys" / "slurm-7" / "worker.key_secret").stat().st_mode & 0o077 == 0
    by_pid = dict(reversed(line.split()) for line in tasks.read_text().splitlines())
    text = (tmp_path / "results" / "slurm-7" / "logs" / "master.log").read_text()
    held = {
        pid: rank for rank, pid in re.findall(r"worker rank (\d+) registered \(pid (\d+)", text)
    }
    assert sorted(by_pid.values()) == ["0", "1", "2"] and held == by_pid, text
