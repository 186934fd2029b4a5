"""Testbed overhead per iteration with zero injected delay vs a raw pyzmq round trip of the
same bytes; target ratio <= 2.

Testbed: `bcgc run` in natural mode (no injected delay) with the uncoded scheme and one row
per worker, so an iteration is: broadcast theta (L float64) to N pinned workers, each computes
and returns one message of L float64, the master decodes. Raw: the same N processes' worth of
pyzmq DEALER echo peers, pinned the same way, each answering the master's ROUTER with a
message of the same size. Both sides move frames with the same calls and settings
(bcgc_sim.zmq_io: copy threshold, one shared frame set per broadcast, malloc settings), so
the ratio is the cost of the testbed's protocol, bookkeeping and compute, not of a transport
tuning the raw side lacks. Both report the median over the iterations of
broadcast-to-last-reply time.

    python scripts/bench_overhead.py [--workers 8] [--coordinates 10000] [--iterations 100]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from bcgc_sim import zmq_io
from bcgc_sim.config import load_config
from master.runner import run_testbed

ECHO = """
import os, sys, zmq
from bcgc_sim import zmq_io
zmq_io.keep_freed_memory()
core = int(sys.argv[2])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})
context = zmq.Context()
socket = zmq_io.configure(context.socket(zmq.DEALER))
socket.connect(sys.argv[1])
zmq_io.send(socket, [b"ready"])
while True:
    frames = zmq_io.receive(socket)
    if frames[0].bytes == b"stop":
        break
    zmq_io.send(socket, [bytes(len(frames[-1].buffer))])
"""


def raw_round_trips(n: int, length: int, iterations: int) -> np.ndarray:
    zmq_io.keep_freed_memory()
    context = zmq.Context()
    router = zmq_io.configure(context.socket(zmq.ROUTER))
    port = router.bind_to_random_port("tcp://127.0.0.1")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    peers = [
        subprocess.Popen(
            [sys.executable, "-c", ECHO, f"tcp://127.0.0.1:{port}", str(cores[r % len(cores)])]
        )
        for r in range(n)
    ]
    try:
        identities = [zmq_io.receive(router)[0].bytes for _ in range(n)]
        payload = np.zeros(length)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            frames = zmq_io.shareable([b"theta", memoryview(payload).cast("B")])
            for identity in identities:
                zmq_io.send(router, [identity, *frames])
            for _ in range(n):
                zmq_io.receive(router)
            times.append(time.perf_counter() - start)
        for identity in identities:
            zmq_io.send(router, [identity, b"stop"])
    finally:
        for peer in peers:
            peer.wait(5)
        context.destroy(linger=0)
    return np.array(times[5:])


def testbed_iterations(n: int, length: int, iterations: int, folder: Path) -> np.ndarray:
    config = load_config(
        None,
        [
            f"cluster.workers={n}", f"model.samples={n}", f"model.coordinates={length}",
            f"run.iterations={iterations}", "run.mode='natural'", "run.check=false",
            "run.schemes=['uncoded']", f"run.output='{folder}'",
        ],
    )  # fmt: skip
    run_testbed(config, folder, log=lambda text: None)
    with open(folder / "iterations.csv") as handle:
        return np.array([float(r["measured_s"]) for r in csv.DictReader(handle)][5:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--coordinates", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternating testbed / raw rounds")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bcgc-overhead-"))
    print(
        f"N = {args.workers} workers, {args.coordinates} float64 each way, {args.iterations} iterations"
    )
    print(f"{'round':>5} {'testbed ms':>11} {'raw ms':>8} {'ratio':>6}   (medians per iteration)")
    ratios = []
    for index in range(args.rounds):  # alternate, so that both see the same machine state
        bed = testbed_iterations(
            args.workers, args.coordinates, args.iterations, folder / str(index)
        )
        raw = raw_round_trips(args.workers, args.coordinates, args.iterations)
        ratios.append(float(np.median(bed) / np.median(raw)))
        print(
            f"{index:>5} {1e3 * np.median(bed):>11.3f} {1e3 * np.median(raw):>8.3f} {ratios[-1]:>6.2f}"
        )
    ratio = float(np.median(ratios))
    print(f"median ratio {ratio:.2f} (target <= 2)")
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
