"""Reliability of what a run writes and of the command line: full disks, two runs into one
folder, runs too large for memory, key files, Ctrl-C while starting, interrupted flushes, and
bad input that must end in one line. Every fault is injected here (a tiny tmpfs, a failing or
interrupted write, a second process, a signal)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
import weakref
from pathlib import Path

import psutil
import pytest

from bcgc_sim import results
from bcgc_sim.config import load_config
from bcgc_sim.entry.cli import StopSignals, main
from bcgc_sim.errors import UserError
from bcgc_sim.results import BlockRow, IterationRow, MessageRow, RunRecorder, WriteError
from master.cluster import WORKER_MEMORY_BYTES
from master.runner import check_run_memory

BCGC = [sys.executable, "-m", "bcgc_sim"]
FAST = ["--set", "run.iteration_seconds=0.002", "--set", "run.schemes=['bcgc-t']"]


def _row(iteration: int) -> dict:
    return {"scheme": "uncoded", "iteration": iteration, "measured_s": 0.25, "ratio": 1.0}


def whole_rows(path: Path, record) -> list[list[str]]:
    """The rows of a CSV table of `record`s, asserting that every row is whole (no torn last
    row, no missing field)."""
    fields = [f.name for f in dataclasses.fields(record)]
    raw = path.read_text()
    assert raw == "" or raw.endswith("\n"), f"{path.name}: torn last row {raw[-60:]!r}"
    rows = list(csv.reader(raw.splitlines()))
    assert rows[0] == fields
    assert all(len(r) == len(fields) for r in rows), f"{path.name}: a row with missing fields"
    return rows[1:]


def leftovers(folder: Path) -> list[str]:
    """Temporary files and locks left in `folder` (recursively)."""
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name == results.LOCK_NAME]


def one_error_line(stderr: str) -> str:
    """The single `bcgc: error: ...` line of stderr (progress lines aside), and no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


# -- item 14: an interrupt inside a flush --------------------------------------------------------


@pytest.mark.parametrize(
    "moment", ["inside the write", "inside the write and its clean-up", "after the write"]
)
def test_an_interrupt_inside_a_flush_never_writes_a_row_twice(tmp_path, monkeypatch, moment):
    recorder = RunRecorder(tmp_path)
    recorder.iterations.writerows(_row(i) for i in range(3000))
    real_pwrite, real_write_at, real_truncate = os.pwrite, results.write_at, os.ftruncate

    def half_then_interrupt(fd, data, offset):  # half the bytes reach the file, then Ctrl-C
        real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        raise KeyboardInterrupt

    def interrupt(*args):
        raise KeyboardInterrupt

    def written_then_interrupt(fd, data, offset):  # all bytes written, Ctrl-C before booking
        real_write_at(fd, data, offset)
        raise KeyboardInterrupt

    if moment == "after the write":
        monkeypatch.setattr(results, "write_at", written_then_interrupt)
    else:
        monkeypatch.setattr(results.os, "pwrite", half_then_interrupt)
        if moment == "inside the write and its clean-up":
            monkeypatch.setattr(results.os, "ftruncate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        recorder.flush()
    monkeypatch.setattr(results.os, "pwrite", real_pwrite)
    monkeypatch.setattr(results.os, "ftruncate", real_truncate)
    monkeypatch.setattr(results, "write_at", real_write_at)
    recorder.iterations.writerow(_row(3000))
    recorder.close({"status": "interrupted"})  # the final flush after the interrupt
    rows = whole_rows(tmp_path / "iterations.csv", IterationRow)
    assert [int(r[1]) for r in rows] == list(range(3001))  # each row exactly once, in order
    assert leftovers(tmp_path) == []


# -- item 6: a full disk (simulated write failure, then a real tmpfs) ----------------------------


def test_a_failed_write_keeps_whole_rows_and_marks_run_json_failed(tmp_path, monkeypatch):
    recorder = RunRecorder(tmp_path)
    recorder.messages.writerows({"scheme": "bcgc-t", "iteration": i} for i in range(50))
    recorder.flush()
    real_pwrite = os.pwrite

    def disk_full(fd, data, offset):  # part of the rows fit, then the disk is full
        real_pwrite(fd, bytes(data[:100]), offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results.os, "pwrite", disk_full)
    recorder.messages.writerows({"scheme": "bcgc-t", "iteration": i} for i in range(50, 99))
    with pytest.raises(WriteError, match=r"messages.csv: No space left on device"):
        recorder.flush()
    meta = {"status": "completed"}
    with pytest.raises(WriteError):  # the last flush fails too: the completed run has failed
        recorder.close(meta)
    assert json.loads((tmp_path / "run.json").read_text())["status"].startswith(
        "failed: cannot write"
    )
    rows = whole_rows(tmp_path / "messages.csv", MessageRow)
    assert [int(r[1]) for r in rows] == list(range(50))  # whole rows, the failed ones absent
    assert leftovers(tmp_path) == []


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """(folder, preexec): a folder whose writes fail once about 600 KiB are used. A 640 KiB
    tmpfs where this machine lets us mount one (writes fail with ENOSPC); elsewhere a file size
    limit (RLIMIT_FSIZE, EFBIG) set in the child by `preexec`."""
    folder = tmp_path / "small"
    if _mount_tmpfs(folder, "640k"):
        yield folder, None
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return
    folder.mkdir()

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (400 << 10, 400 << 10))

    yield folder, limit_file_size


def _children_of(pid: int) -> list[int]:
    """Processes started by `pid` that may outlive it (workers name it as --parent-pid)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if f"--parent-pid {pid}" in " ".join(process.info["cmdline"] or []):
                found.append(process.pid)
    return found


def no_survivors(pid: int, timeout_s: float = 3.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not _children_of(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_full_disk_ends_the_run_with_one_line_whole_rows_and_run_json_failed(
    tmp_path, small_disk
):
    folder, preexec = small_disk
    run = folder / "run"
    proc = subprocess.run(
        [*BCGC, "run", "-o", str(run), "--set", f"run.output='{tmp_path}'", *FAST,
         "--set", "run.iterations=100000"],
        capture_output=True, text=True, timeout=120, preexec_fn=preexec,
    )  # fmt: skip
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert line.startswith("bcgc: error: cannot write") and str(run) in line
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"].startswith("failed: cannot write")
    assert ("No space left" in meta["status"]) or ("too large" in meta["status"])
    iterations = whole_rows(run / "iterations.csv", IterationRow)
    messages = whole_rows(run / "messages.csv", MessageRow)
    assert len(iterations) > 10 and len(messages) > 100  # it ran until the disk was full
    whole_rows(run / "blocks.csv", BlockRow)
    assert leftovers(run) == []


@pytest.mark.slow
def test_data_preparation_on_a_full_disk_leaves_no_temporary_file(tmp_path, small_disk):
    folder, preexec = small_disk
    run = tmp_path / "run"
    proc = subprocess.run(
        [*BCGC, "run", "-o", str(run), "--set", f"problem.data_dir='{folder / 'data'}'",
         "--set", "model.samples=800", "--set", "model.coordinates=200"],  # X: 1.2 MiB
        capture_output=True, text=True, timeout=120, preexec_fn=preexec,
    )  # fmt: skip
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert line.startswith("bcgc: error: cannot write the data set") and "it needs 1.2 MiB" in line
    assert list(folder.rglob("*.npy")) == []  # no temporary .npy, no half X.npy
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"].startswith("failed: cannot write the data set")
    assert leftovers(run) == []


@pytest.mark.slow
def test_a_disk_full_from_the_start_is_one_line_and_leaves_nothing(tmp_path):
    folder = tmp_path / "tiny"
    if not _mount_tmpfs(folder, "64k"):  # less than the space a run holds back
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = subprocess.run(
            [*BCGC, "run", "-o", str(folder / "run"), "--set", f"run.output='{tmp_path}'"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2
        assert "No space left on device" in one_error_line(proc.stderr)
        assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# -- item 7: two runs into one folder --------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_until_the_first_ends(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [*BCGC, "run", "-o", str(run), "--set", f"run.output='{tmp_path}'", *FAST,
         "--set", "run.iterations=100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and '"status": "running"' not in _text(run / "run.json"):
            time.sleep(0.05)
        before = (run / "run.json").read_text()
        second = subprocess.run(
            [*BCGC, "run", "-o", str(run), "--set", f"run.output='{tmp_path}'", *FAST],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert f"another run (pid {first.pid}) is writing into {run}" in line
        assert first.poll() is None  # the first run goes on, its records untouched
        assert json.loads((run / "run.json").read_text())["config"] == json.loads(before)["config"]
        first.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock
        first.wait(10)
        assert no_survivors(first.pid)
        third = subprocess.run(
            [*BCGC, "run", "-o", str(run), "--set", f"run.output='{tmp_path}'", *FAST,
             "--set", "run.iterations=3", "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert third.returncode == 0, third.stderr
        assert json.loads((run / "run.json").read_text())["status"] == "completed"
        assert leftovers(run) == []
    finally:
        if first.poll() is None:
            first.kill()


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


# -- item 8: runs too large for memory -----------------------------------------------------------


def test_a_run_too_large_for_memory_is_refused_before_it_allocates(tmp_path, capsys):
    available = psutil.virtual_memory().available
    coordinates = 2 * available // (8 * 800) + 1  # X of 800 rows: twice the memory there is
    status = main(
        ["run", "-o", str(tmp_path / "run"), "--set", f"run.output='{tmp_path}'",
         "--set", f"model.coordinates={coordinates}"]
    )  # fmt: skip
    assert status == 2
    line = one_error_line(capsys.readouterr().err)
    assert "generating the data set needs about" in line and "GiB of memory" in line
    assert f"800 x {coordinates}" in line and "lower model.samples or model.coordinates" in line
    assert not (tmp_path / "run").exists()


def test_predict_and_plan_check_the_memory_of_their_monte_carlo_draws(capsys):
    available = psutil.virtual_memory().available
    n = int((available / (3 * 8 * 20_000)) ** 0.5) + 2  # partial-gc: 3 x 20000 x N x N floats
    for argv in (["plan", "--scheme", "partial-gc"], ["predict"]):
        status = main([*argv, "--set", f"cluster.workers={n}", "--set", f"model.samples={n}"])
        assert status == 2
        line = one_error_line(capsys.readouterr().err)
        assert "Monte Carlo draws" in line and "partial-gc" in line and "GiB of memory" in line


def test_only_local_workers_count_against_this_machines_memory(tmp_path):
    n = psutil.virtual_memory().available // WORKER_MEMORY_BYTES + 1
    config = load_config(None, [f"cluster.workers={n}", f"run.output='{tmp_path}'"])
    with pytest.raises(
        UserError,
        match=rf"the largest part is {n} local worker processes \(.* GiB\): lower cluster.workers",
    ):
        check_run_memory(config, local=True)
    check_run_memory(config, local=False)  # 'bcgc master': the workers run elsewhere


@pytest.mark.slow
def test_a_master_for_200_remote_workers_is_not_refused_for_their_memory(tmp_path):
    proc = subprocess.run(
        [*BCGC, "master", "--workers", "200", "-o", str(tmp_path / "run"), "--bind", _endpoint(),
         "--set", f"run.output='{tmp_path}'", "--set", "run.startup_timeout=1",
         "--set", "run.schemes=['uncoded']"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "only 0 of 200 workers connected" in one_error_line(proc.stderr)


# -- item 9: keys ---------------------------------------------------------------------------------


def test_keygen_writes_the_secret_key_0600_from_the_start_and_keeps_an_existing_pair(
    tmp_path, monkeypatch, capsys
):
    modes = []
    real_write_at = results.write_at

    def watched(fd, data, offset):  # the mode of the file at the moment the key goes in
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_write_at(fd, data, offset)

    monkeypatch.setattr(results, "write_at", watched)
    old_umask = os.umask(0)  # the loosest umask: nothing but the code keeps the key private
    try:
        assert main(["keygen", "--dir", str(tmp_path), "--name", "w0"]) == 0
        secret = tmp_path / "w0.key_secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert modes[0] == 0o600  # already private when the secret was written
        first = secret.read_bytes()
        assert main(["keygen", "--dir", str(tmp_path), "--name", "w0"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "w0.key_secret already exists and is kept" in line and "--force" in line
        assert secret.read_bytes() == first
        assert main(["keygen", "--dir", str(tmp_path), "--name", "w0", "--force"]) == 0
        assert secret.read_bytes() != first
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and modes[-2] == 0o600
    finally:
        os.umask(old_umask)
    import zmq.auth

    public, private = zmq.auth.load_certificate(str(secret))
    assert private is not None
    assert zmq.auth.load_certificate(str(tmp_path / "w0.key")) == (public, None)
    assert leftovers(tmp_path) == []


def _endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


# -- item 13: Ctrl-C while `bcgc run` starts -------------------------------------------------------


def _numpy_loaded(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    return False


def _data_being_saved(folder: Path) -> bool:
    return any(folder.rglob("*.tmp*.npy"))


def _workers_started(pid: int) -> bool:
    return bool(_children_of(pid))


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment",
    ["imports", "0.3 s", "0.6 s", "data preparation", "cluster start"],
)
def test_ctrl_c_while_bcgc_run_starts_exits_130_without_traceback(tmp_path, moment):
    if moment in ("imports",) and not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc")
    data = tmp_path / "data"
    size = ["--set", "model.samples=3000", "--set", "model.coordinates=3000"]  # X: 69 MiB
    proc = subprocess.Popen(
        [*BCGC, "run", "-o", str(tmp_path / "run"), "--set", f"problem.data_dir='{data}'",
         *(size if moment == "data preparation" else []), *FAST],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a shell
    )  # fmt: skip
    ready = {
        "imports": lambda: _numpy_loaded(proc.pid),
        "data preparation": lambda: _data_being_saved(data),
        "cluster start": lambda: _workers_started(proc.pid),
    }.get(moment)
    start = time.monotonic()
    if ready is None:
        time.sleep(float(moment.split()[0]))
    else:
        while not ready() and proc.poll() is None and time.monotonic() - start < 60:
            time.sleep(0.002)
    assert proc.poll() is None, f"the run ended before the moment: {proc.stderr.read()}"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "bcgc: interrupted"
    assert no_survivors(proc.pid)
    assert not list(data.rglob("*.tmp*.npy"))
    if (tmp_path / "run" / "run.json").exists():
        assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"
        assert leftovers(tmp_path / "run") == []


@pytest.fixture
def python_sigint():
    """SIGINT as a fresh Python process has it (a test that ran a worker in-process ignores it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_swallowed_by_a_callback_is_delivered_again(python_sigint):
    stop = StopSignals()
    with pytest.raises(KeyboardInterrupt), stop:

        class Thing:
            pass

        thing = Thing()
        # Ctrl-C lands inside a weakref callback, where Python can only swallow it (as it does
        # in the import system's own callbacks while bcgc starts)
        kept = weakref.ref(thing, lambda ref: os.kill(os.getpid(), signal.SIGINT))
        del thing
        time.sleep(2)  # the interrupt must come again here
    assert kept() is None and stop.received == [signal.SIGINT, signal.SIGINT]


def test_an_interrupt_that_a_library_turned_into_another_error_still_exits_130():
    stop = StopSignals()
    stop.received.append(signal.SIGINT)  # Ctrl-C arrived, then e.g. an extension's import said
    assert stop.status(ImportError("initialization failed")) == 130
    assert StopSignals().status(ImportError()) is None
    assert StopSignals().status(KeyboardInterrupt()) == 130


def test_an_interrupt_through_an_exec_of_a_string_exits_130_under_python_m(tmp_path):
    (tmp_path / "interrupted_inside_exec.py").write_text(
        "import sys\n"
        "import bcgc_sim.entry.cli as cli\n"
        "cli.cmd_plan = lambda args: exec('raise KeyboardInterrupt')  # as scipy's imports do\n"
        "sys.exit(cli.main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "interrupted_inside_exec", "plan"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
    )  # fmt: skip
    assert (proc.returncode, proc.stderr.strip()) == (130, "bcgc: interrupted")


# -- item 15: bad input gives one line -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv, mentions",
    [
        (["run", "-o", "/proc/x"], "cannot write /proc/x"),
        (["keygen", "--dir", "/proc/x", "--name", "w"], "cannot write /proc/x"),
        (["keygen", "--name", "../w"], "--name must be a plain file name"),
        (["worker", "--connect", "127.0.0.1:5999"], "--connect needs an endpoint like tcp://"),
        (["worker", "--connect", "tcp://127.0.0.1:0"], "a port 1..65535"),
        (["worker", "--connect", "tcp://127.0.0.1:5999", "--rank", "x"], "invalid int value"),
        (["worker", "--connect", "tcp://127.0.0.1:5999", "--timeout", "-1"], "--timeout must be"),
    ],
)
def test_bad_paths_and_endpoints_are_one_line(argv, mentions, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exc:  # the worker's parser exits by itself (status 2 from the shell)
        status = exc.code
    assert status == 2
    assert mentions in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_a_refused_curve_key_is_explained_to_the_worker_and_logged_by_the_master(tmp_path):
    keys = tmp_path / "keys"
    for name in ("master", "w0", "stranger"):
        assert main(["keygen", "--dir", str(keys), "--name", name]) == 0
    (keys / "allow").mkdir()
    (keys / "allow" / "w0.key").write_bytes((keys / "w0.key").read_bytes())
    endpoint, run = _endpoint(), tmp_path / "run"
    master = subprocess.Popen(
        [*BCGC, "master", "--bind", endpoint, "--workers", "2", "-o", str(run),
         "--key", str(keys / "master.key_secret"), "--allow", str(keys / "allow"),
         "--set", f"run.output='{tmp_path}'", "--set", "run.startup_timeout=6"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cases = {  # worker's key pair, key it takes for the master's, what its error must say
        "stranger": ("stranger", "master", "is not in the master's --allow folder"),
        "wrong server key": ("w0", "stranger", "--server-key is likely not the master's public"),
        "no keys": (None, None, "the master likely needs CURVE keys"),
    }
    workers = {
        name: subprocess.Popen(
            [
                *BCGC,
                "worker",
                "--connect",
                endpoint,
                "--timeout",
                "2",
                *(
                    [
                        "--key",
                        str(keys / f"{own}.key_secret"),
                        "--server-key",
                        str(keys / f"{server}.key"),
                    ]
                    if own
                    else []
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name, (own, server, _) in cases.items()
    }
    for name, worker in workers.items():
        assert worker.wait(30) == 1
        line = one_error_line(worker.stderr.read())
        assert "no answer from the master" in line and cases[name][2] in line, line
    assert master.wait(30) == 2
    stranger = (keys / "stranger.key").read_text().split('public-key = "')[1].split('"')[0]
    log = (run / "logs" / "master.log").read_text()
    assert f"refused a CURVE handshake: worker key {stranger} is not in the --allow" in log
    assert log.count("refused a CURVE handshake") == 1  # retries are counted, not logged
