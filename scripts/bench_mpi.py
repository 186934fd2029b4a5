"""The testbed against a reference mpi4py gradient-coding exchange, natural mode, side by side.

The reference is the exchange of the public gradient-coding code (Tandon et al., "Gradient
Coding", ICML 2017, arXiv:1612.03301): rank 0 Isends theta to each of N worker ranks; worker n
computes X_n^T (X_n theta - y_n) on its data subset (for s = 1 the coded combination of its
s + 1 = 2 subsets with row n of the same B(s) the testbed uses) and sends it; rank 0 waits for
the first N - s replies (MPI Waitany) and decodes them. The testbed runs the same exchange in
natural mode (no injected delay): `uncoded`, and a block plan with every coordinate coded for
s = 1. Both use the same data files (memory-mapped), N, M, L, s and seed, the same arithmetic
(the reference's workers call the testbed's workers/compute.py), the same worker placement
(worker n pinned to core n mod cores, the master unpinned, one BLAS thread each), the same
malloc settings (bcgc_sim.framing.keep_freed_memory) and the same timed interval: from the
broadcast of theta to the decoded gradient; so the two differ in how theta and the results
travel. Late replies are collected after the clock stops in both.

Per table row the two alternate for --rounds rounds; each run's time is the median over its
iterations (the first few dropped as warm-up), the row shows the medians over rounds and the
median of the per-round ratios. Targets: testbed / mpi4py <= 1.2 at L >= 1e4, <= 3 below.
Exit status 0 if every row meets its target, 1 otherwise, 2 when MPI is missing.

Needs Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev) and the extra
`pip install -e '.[mpi]'`.

    python scripts/bench_mpi.py [--workers 8] [--sizes 800x400 800x10000 80x100000]
                                [--iterations 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bcgc_sim.config import load_config
from bcgc_sim.model.codes import CodeBook, cyclic_support
from bcgc_sim.model.layout import Slot, partition_bounds
from bcgc_sim.model.plans import BlockPlan
from bcgc_sim.problems import ProblemData, full_gradient, step_size
from bcgc_sim.wire import framing
from master.cluster import SINGLE_THREADED
from master.runner import prepare_problem, run_testbed
from workers.compute import SlotComputer

SCHEMES = {0: "uncoded", 1: "coded s = 1"}
WARM_UP = 5  # iterations dropped from each run (connections, page faults, caches)


def mpi_rank_main(args: argparse.Namespace) -> int:
    """One rank of the reference exchange (started by mpirun); rank 0 prints a JSON line."""
    from mpi4py import MPI  # the optional extra: imported only inside mpirun

    framing.keep_freed_memory()  # the testbed's malloc settings: no page faults per iteration
    comm = MPI.COMM_WORLD
    rank, n = comm.Get_rank(), comm.Get_size() - 1
    s = args.stragglers
    data = ProblemData("least-squares", args.features, args.targets, args.rows, args.coordinates)
    bounds = partition_bounds(data.rows, n)
    code = CodeBook(n, args.seed)
    theta = np.zeros(data.coordinates)
    if rank == 0:
        return _mpi_master(comm, MPI, data, code, s, theta, args)
    worker = rank - 1
    if hasattr(os, "sched_setaffinity"):  # as the testbed's pin_to_core(rank)
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[worker % len(cores)]})
    partitions = {"subsets": bounds}
    slot = Slot(0, data.coordinates, s, 0.0, "subsets")
    code_rows = {s: code.matrix(s)[worker, cyclic_support(worker, s, n)]}
    computer = SlotComputer(data, partitions, [slot], worker, n, code_rows)
    for iteration in range(args.iterations):
        comm.Recv([theta, MPI.DOUBLE], source=0, tag=iteration)
        computer.begin(theta)
        coded = computer.compute(slot)  # sum_j B(s)[n, j] X_j^T (X_j theta - y_j)
        comm.Isend([coded, MPI.DOUBLE], dest=0, tag=iteration).Wait()
    return 0


def _mpi_master(comm, MPI, data, code, s, theta, args) -> int:
    n = comm.Get_size() - 1
    replies = np.empty((n, data.coordinates))
    times, errors, scale = [], [], None
    for iteration in range(args.iterations):
        start = time.perf_counter()
        sends = [comm.Isend([theta, MPI.DOUBLE], dest=w + 1, tag=iteration) for w in range(n)]
        receives = [
            comm.Irecv([replies[w], MPI.DOUBLE], source=w + 1, tag=iteration) for w in range(n)
        ]
        gradient = np.zeros(data.coordinates)
        fastest = []
        while len(fastest) < n - s:
            worker = MPI.Request.Waitany(receives)
            fastest.append(worker)
            if s == 0:
                gradient += replies[worker]
        if s > 0:
            fastest.sort()
            gradient = code.decoder(s, fastest) @ replies[fastest]
        times.append(time.perf_counter() - start)
        MPI.Request.Waitall(sends + receives)  # the late replies, after the clock stopped
        true_gradient, _ = full_gradient(data, theta)  # not timed, as the testbed's check
        scale = scale or float(np.max(np.abs(true_gradient))) or 1.0
        errors.append(float(np.max(np.abs(gradient - true_gradient))) / scale)
        theta = theta - args.rate * gradient / data.rows
    print(json.dumps({"times": times, "error": max(errors)}))
    return 0


def mpi_times(
    data: ProblemData, n: int, s: int, iterations: int, seed: int, rate: float
) -> tuple[np.ndarray, float]:
    """Per-iteration seconds of the reference exchange (warm-up dropped) and the largest error
    of a decoded gradient, max |g - g_true| relative to max |g_true| at the first iteration
    (gradient descent drives the gradient itself towards 0)."""
    command = [shutil.which("mpirun") or "mpirun", "--oversubscribe", "--bind-to", "none"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-run-as-root")
    command += [
        "-n", str(n + 1), sys.executable, str(Path(__file__).resolve()), "--mpi-rank",
        "--features", data.features, "--targets", data.targets, "--rows", str(data.rows),
        "--coordinates", str(data.coordinates), "--stragglers", str(s),
        "--iterations", str(iterations), "--seed", str(seed), "--rate", repr(rate),
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, env=os.environ | SINGLE_THREADED, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"mpirun failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1])
    return np.array(result["times"][warm_up(iterations) :]), float(result["error"])


def warm_up(iterations: int) -> int:
    return min(WARM_UP, iterations // 2)


def testbed_config(
    n: int, rows: int, length: int, iterations: int, seed: int, folder: Path, rate: float = 0.0,
    overrides: tuple[str, ...] = (),
):  # fmt: skip
    return load_config(
        None,
        [
            f"seed={seed}", f"cluster.workers={n}", f"model.samples={rows}",
            f"model.coordinates={length}", f"run.iterations={iterations}", "run.mode='natural'",
            "run.check=false", f"run.output='{folder}'", f"problem.data_dir='{folder / 'data'}'",
            f"problem.learning_rate={rate!r}", *overrides,
        ],
    )  # fmt: skip


def testbed_times(config, s: int, folder: Path) -> np.ndarray:
    """Per-iteration seconds of the testbed in natural mode (warm-up dropped)."""
    n, length = config.cluster.workers, config.model.coordinates
    x = [0] * n
    x[s] = length
    plan = BlockPlan(SCHEMES[s], tuple(x))  # uncoded, or every coordinate coded for s
    run_testbed(config, folder, log=lambda text: None, plans=lambda model: {plan.scheme: plan})
    with open(folder / "iterations.csv") as handle:
        measured = [float(r["measured_s"]) for r in csv.DictReader(handle)]
    return np.array(measured[warm_up(len(measured)) :])


def parse_size(text: str) -> tuple[int, int]:
    rows, _, length = text.lower().partition("x")
    return int(float(rows)), int(float(length))


def short(value: int) -> str:
    """400 -> '400', 10000 -> '1e4': as the issue's table writes sizes."""
    exponent = len(str(value)) - 1
    return f"1e{exponent}" if value >= 10_000 and value == 10**exponent else str(value)


def target(length: int) -> float:
    return 1.2 if length >= 10_000 else 3.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--sizes", nargs="+", default=["800x400", "800x10000", "80x100000"], help="M x L"
    )
    parser.add_argument("--stragglers", type=int, nargs="+", default=[0, 1], help="s values")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per row")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a testbed config override, e.g. cluster.transport='zmq' (repeatable)",
    )  # fmt: skip
    child = parser.add_argument_group("one rank of the reference (started by mpirun)")
    child.add_argument("--mpi-rank", action="store_true", help=argparse.SUPPRESS)
    for name in ("--features", "--targets"):
        child.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--rows", "--coordinates"):
        child.add_argument(name, type=int, help=argparse.SUPPRESS)
    child.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mpi_rank:
        args.stragglers = args.stragglers[0]
        return mpi_rank_main(args)
    if shutil.which("mpirun") is None:
        print(
            "bench_mpi: error: mpirun not found; install Open MPI (Debian: apt-get install "
            "openmpi-bin libopenmpi-dev) and mpi4py (pip install -e '.[mpi]')",
            file=sys.stderr,
        )
        return 2
    folder = Path(args.output or tempfile.mkdtemp(prefix="bcgc-mpi-"))
    n = args.workers
    print(
        f"N = {n} workers + master, least squares, natural mode, {args.iterations} iterations "
        f"per run ({warm_up(args.iterations)} warm-up dropped), {args.rounds} alternating rounds; "
        "median per-iteration time, broadcast to decoded gradient"
    )
    print(
        "| M x L | scheme | mpi4py ms | testbed ms | testbed / mpi4py | target | mpi4py grad err "
        "| ratio per round |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for size in args.sizes:
        rows, length = parse_size(size)
        data = prepare_problem(testbed_config(n, rows, length, args.iterations, args.seed, folder))
        rate = step_size(data)  # as the testbed's default learning rate
        config = testbed_config(
            n, rows, length, args.iterations, args.seed, folder, rate, tuple(args.set)
        )
        for s in args.stragglers:
            mpi_ms, bed_ms, ratios, error = [], [], [], 0.0
            for index in range(args.rounds):  # alternate: both see the same machine state
                reference, err = mpi_times(data, n, s, args.iterations, args.seed, rate)
                where = folder / f"{rows}x{length}-s{s}-{index}"
                bed = testbed_times(config, s, where)
                mpi_ms.append(1e3 * float(np.median(reference)))
                bed_ms.append(1e3 * float(np.median(bed)))
                ratios.append(bed_ms[-1] / mpi_ms[-1])
                error = max(error, err)
            ratio = float(np.median(ratios))
            ok &= ratio <= target(length)
            print(
                f"| {rows} x {short(length)} | {SCHEMES.get(s, f'coded s = {s}')} | "
                f"{np.median(mpi_ms):.3f} | {np.median(bed_ms):.3f} | {ratio:.2f} | "
                f"<= {target(length):g} | {error:.1e} | {' '.join(f'{r:.2f}' for r in ratios)} |",
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
