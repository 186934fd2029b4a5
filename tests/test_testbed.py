"""A real cluster on loopback: every scheme decodes the exact gradient, stale messages are
dropped, results are written; start-up failures end quickly and leave no process behind."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import no_children_left

from bcgc_sim.config import load_config
from bcgc_sim.errors import UserError
from bcgc_sim.model.codes import CodeBook
from bcgc_sim.model.costs import SystemCosts
from bcgc_sim.model.layout import layout_for
from bcgc_sim.results import RunRecorder
from bcgc_sim.schemes import APPROXIMATE_SCHEMES, SCHEMES, build_plan
from master.bcgc_session import SchemeSession
from master.cluster import LocalCluster
from master.runner import model_for_data, prepare_problem, run_testbed
from master.settings import SessionSettings

pytestmark = pytest.mark.slow


def small_config(tmp_path, *extra):
    return load_config(
        None,
        [
            "cluster.workers=5", "model.samples=200", "model.coordinates=60",
            "run.iterations=3", "run.iteration_seconds=0.03", "run.check=true",
            f"run.output='{tmp_path}'", "predict.samples=2000", *extra,
        ],
    )  # fmt: skip


def test_every_scheme_runs_exactly_on_a_local_cluster(tmp_path):
    exact = [
        name for name in SCHEMES if name not in APPROXIMATE_SCHEMES
    ]  # tests/test_partial_testbed.py
    schemes = ", ".join(f"'{name}'" for name in exact)
    # the deadline (model time units, about E[tau] of uncoded) lets bcgc-cdf-* be planned too
    config = small_config(tmp_path, f"run.schemes=[{schemes}]", "predict.deadline=5e6")
    folder = tmp_path / "run"
    # bcgc-sys-opt is planned on a calibration: here a synthetic one of a 2-core machine
    costs = SystemCosts(derivative_element_s=1e-9, send_s=20e-6, master_message_s=20e-6, cores=2)
    summaries = run_testbed(config, folder, log=lambda text: None, costs=costs)
    assert [s.scheme for s in summaries] == exact
    for s in summaries:
        assert s.iterations == 3
        assert s.gradient_max_rel_error is not None and s.gradient_max_rel_error <= 1e-9, s
        assert 0.9 < s.ratio < 2.0, s  # measured runtime tracks the prediction
    # the same exact gradient gives the same loss curve under every scheme
    rows = list(csv.DictReader(open(folder / "iterations.csv")))
    assert len(rows) == 3 * len(exact)
    for iteration in range(3):
        losses = [float(r["loss"]) for r in rows if int(r["iteration"]) == iteration]
        np.testing.assert_allclose(losses, losses[0], rtol=1e-9)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # gradient descent makes progress
    finals = [s.final_loss for s in summaries]
    np.testing.assert_allclose(finals, finals[0], rtol=1e-9)
    statuses = {r["status"] for r in csv.DictReader(open(folder / "messages.csv"))}
    assert statuses <= {"used", "late", "stale"} and "used" in statuses
    meta = json.loads((folder / "run.json").read_text())
    assert meta["status"] == "completed"
    assert set(meta["summaries"]) == set(exact)
    assert len(meta["worker_cpu_affinity"]) == 5
    assert meta["versions"]["numpy"] and meta["host"]["cpu_count"]
    assert no_children_left()


def test_real_data_set_with_logistic_regression(tmp_path):
    config = small_config(
        tmp_path, "problem.kind='logistic'", "problem.dataset='breast-cancer'",
        "cluster.workers=4", "run.schemes=['bcgc-t', 'tandon']",
    )  # fmt: skip
    summaries = run_testbed(config, tmp_path / "run", log=lambda text: None)
    for s in summaries:
        assert s.gradient_max_rel_error <= 1e-9
    assert summaries[0].final_loss == pytest.approx(summaries[1].final_loss, rel=1e-9)
    assert summaries[0].final_loss < np.log(2)  # below the loss at theta = 0


def test_stale_messages_are_counted_and_never_decoded(tmp_path):
    """single-bcgc decodes from the fastest worker; the other N - 1 messages of iteration 0
    arrive after it completed and must be dropped as stale during iteration 1."""
    config = small_config(tmp_path, "cluster.workers=4")
    data = prepare_problem(config)
    model = model_for_data(config, data)
    plan = build_plan("single-bcgc", model)
    assert plan.x[-1] == model.coordinates  # one block, N - 1 stragglers tolerated
    recorder = RunRecorder(tmp_path / "stale")
    settings = SessionSettings(seed=1, time_scale=4e-9, check=True, learning_rate=0.0)
    with LocalCluster(4, log_dir=tmp_path / "logs") as cluster:
        session = SchemeSession(
            cluster.link, "single-bcgc", plan, layout_for(plan, data.rows), model, data,
            CodeBook(4, 1), settings, recorder,
        )  # fmt: skip
        session.setup()
        theta = np.zeros(data.coordinates)
        first, _ = session.iterate(0, theta)
        time.sleep(0.5)  # every deadline of iteration 0 has passed
        second, gradient = session.iterate(1, theta)
    recorder.close()
    assert first.stale == 0
    assert second.stale == 3
    assert second.gradient_rel_error <= 1e-9
    stale = [
        r
        for r in csv.DictReader(open(tmp_path / "stale" / "messages.csv"))
        if r["status"] == "stale"
    ]
    assert len(stale) == 3 and {r["iteration"] for r in stale} == {"0"}
    assert no_children_left()


class DyingCluster(LocalCluster):
    def worker_command(self, rank):
        if rank == 2:
            return [
                sys.executable,
                "-c",
                "import sys; sys.stderr.write('boom: no data\\n'); sys.exit(3)",
            ]
        return super().worker_command(rank)


def test_a_worker_dying_at_start_up_is_reported_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(
        UserError, match=r"worker 2 exited at start-up with status 3: boom: no data"
    ):
        with DyingCluster(4, startup_timeout_s=30, log_dir=tmp_path):
            pass
    assert time.monotonic() - start < 10
    assert no_children_left()


def test_an_impossible_number_of_workers_is_refused_before_starting(tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bcgc_sim", "run", "--set", "cluster.workers=1000000",
         "--set", "model.samples=2000000", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bcgc: error: cluster.workers = 1000000 needs")
    assert time.monotonic() - start < 10
    assert not (tmp_path / "run.json").exists()


def test_a_worker_without_master_gives_up_with_one_line():
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "workers", "--connect", "tcp://127.0.0.1:9", "--timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no answer from the master at tcp://127.0.0.1:9" in lines[0]
    assert time.monotonic() - start < 5


def test_workers_start_without_importing_scipy():
    """A worker needs numpy, pyzmq and msgpack only: scipy would add ~0.5 s to every start-up
    (N of them share the cores)."""
    code = "import sys, workers.worker; print('scipy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_master_computes_with_one_blas_thread_while_workers_run(tmp_path):
    """Idle BLAS threads of the master spin on the cores the workers need."""
    from threadpoolctl import threadpool_info

    threads = []

    class Probe(Exception):
        pass

    class Cluster:
        def __enter__(self):
            threads.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
            raise Probe  # enough: the cluster's lifetime has begun

        def __exit__(self, *exc):
            return False

    with pytest.raises(Probe):
        run_testbed(small_config(tmp_path), tmp_path / "run", lambda text: None, Cluster)
    assert threads and set(threads) == {1}
