"""Testbed overhead per iteration with zero injected delay vs a raw pyzmq round trip of the
same bytes; target ratio <= 2.

Three measurements per round, alternated so that all see the same machine state:
- testbed: `bcgc run` in natural mode (no injected delay), uncoded, one row per worker: the
  master broadcasts theta (L float64) to N pinned workers, each computes its gradient and
  returns one message of L float64, the master decodes;
- wire: the same exchange in this project's wire format with nothing else (parse, one row's
  gradient, a BLOCK with a worker's header, parse and sum at the master; run ids and clock
  readings of the testbed's sizes, so that messages have the testbed's length): the floor any
  implementation of this protocol and compute pays;
- raw: N pinned echo peers return the same number of bytes.
All three move frames with the same calls and settings (bcgc_sim.wire.framing: copy threshold, one
shared frame set per broadcast, malloc settings), so the ratios measure the testbed and the
wire format, not a transport tuning one side lacks. Each is the median over the iterations of
broadcast-to-last-reply time; the verdict is the median over rounds of testbed / raw.

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

from bcgc_sim.config import load_config
from bcgc_sim.wire import framing
from bcgc_sim.wire.protocol import MessageType, clock_id, encode, parse
from master.cluster import SINGLE_THREADED
from master.runner import run_testbed

PEER = """
import os, sys, time, numpy as np, zmq
from bcgc_sim.wire import framing
from bcgc_sim.wire.protocol import MessageType, encode, parse
framing.keep_freed_memory()
endpoint, core, wire = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "wire"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core})
context = zmq.Context()
socket = framing.configure(context.socket(zmq.DEALER))
socket.connect(endpoint)
framing.send(socket, [b"ready"])
row = None
while True:
    frames = framing.receive(socket)
    if frames[0].bytes == b"stop":
        break
    if not wire:  # raw: the same bytes back
        framing.send(socket, [bytes(len(frames[-1].buffer))])
        continue
    message = parse(frames)  # ITERATE
    theta = message.array
    if row is None:
        row = np.random.default_rng(core).standard_normal(theta.size)
    received = time.monotonic_ns()
    values = row * (row @ theta - 1.0)  # one least-squares row's gradient, as a worker's
    computed = time.monotonic_ns()
    header = {  # a worker's header with values of its sizes (msgpack: 9-byte clock readings)
        "run": message.header["run"], "iteration": message.header["iteration"], "worker": core,
        "slot": 0, "cycle_time": 0.0, "start_ns": message.header["sent_ns"],
        "received_ns": received, "deadline_ns": computed,
        "overrun_ns": 0, "send_ns": time.monotonic_ns(),
    }
    framing.send(socket, encode(MessageType.BLOCK, header, values))
"""


def peer_round_trips(n: int, length: int, iterations: int, wire: bool) -> np.ndarray:
    """Per-iteration times of a broadcast of L float64 to n pinned peers and their n replies.

    raw (wire=False): the peers echo the same number of bytes; the master only receives.
    wire (wire=True): this project's wire format and nothing else: the master broadcasts an
    ITERATE, peers parse it, compute one row's gradient and send a BLOCK with a worker's
    header, the master parses every BLOCK and sums them.
    """
    framing.keep_freed_memory()
    context = zmq.Context()
    router = framing.configure(context.socket(zmq.ROUTER))
    port = router.bind_to_random_port("tcp://127.0.0.1")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    peers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PEER,
                f"tcp://127.0.0.1:{port}",
                str(cores[r % len(cores)]),
                "wire" if wire else "raw",
            ],
            env=os.environ | SINGLE_THREADED,  # as the testbed's workers: one BLAS thread
        )
        for r in range(n)
    ]
    try:
        identities = [framing.receive(router)[0].bytes for _ in range(n)]
        theta = np.zeros(length)
        run_id, clock = f"uncoded-{time.monotonic_ns()}", clock_id()  # as a testbed session's
        times = []
        for iteration in range(iterations):
            start = time.perf_counter()
            if wire:
                header = {  # the testbed's ITERATE header: run id, clock id
                    "run": run_id,
                    "iteration": iteration,
                    "sent_ns": time.monotonic_ns(),
                    "clock": clock,
                }
                frames = framing.shareable(encode(MessageType.ITERATE, header, theta))
            else:
                frames = framing.shareable([b"theta", memoryview(theta).cast("B")])
            for identity in identities:
                framing.send(router, [identity, *frames])
            total = np.zeros(length)
            for _ in range(n):
                reply = framing.receive(router)
                if wire:
                    total += parse(reply[1:]).array
            times.append(time.perf_counter() - start)
        for identity in identities:
            framing.send(router, [identity, b"stop"])
    finally:
        for peer in peers:
            peer.wait(5)
        context.destroy(linger=0)
    return np.array(times[5:])


def testbed_iterations(n: int, length: int, iterations: int, folder: Path) -> np.ndarray:
    config = load_config(
        None,
        [
            f"cluster.workers={n}",
            f"model.samples={n}",
            f"model.coordinates={length}",
            f"run.iterations={iterations}",
            "run.mode='natural'",
            "run.check=false",
            "run.schemes=['uncoded']",
            f"run.output='{folder}'",
        ],
    )
    run_testbed(config, folder, log=lambda text: None)
    with open(folder / "iterations.csv") as handle:
        return np.array([float(r["measured_s"]) for r in csv.DictReader(handle)][5:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--coordinates", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bcgc-overhead-"))
    print(
        f"N = {args.workers} workers, {args.coordinates} float64 each way, {args.iterations} iterations"
    )
    print(
        f"{'round':>5} {'testbed ms':>11} {'wire ms':>8} {'raw ms':>8} {'testbed/raw':>12} "
        f"{'wire/raw':>9}   (medians per iteration)"
    )
    ratios, floors = [], []
    for index in range(args.rounds):  # alternate, so that all see the same machine state
        bed = testbed_iterations(
            args.workers, args.coordinates, args.iterations, folder / str(index)
        )
        wire = peer_round_trips(args.workers, args.coordinates, args.iterations, wire=True)
        raw = peer_round_trips(args.workers, args.coordinates, args.iterations, wire=False)
        bed_ms, wire_ms, raw_ms = (1e3 * float(np.median(t)) for t in (bed, wire, raw))
        ratios.append(bed_ms / raw_ms)
        floors.append(wire_ms / raw_ms)
        print(
            f"{index:>5} {bed_ms:>11.3f} {wire_ms:>8.3f} {raw_ms:>8.3f} {ratios[-1]:>12.2f} "
            f"{floors[-1]:>9.2f}"
        )
    print(f"median wire/raw {float(np.median(floors)):.2f} (the wire format and compute alone)")
    ratio = float(np.median(ratios))
    print(f"median testbed/raw {ratio:.2f} (target <= 2)")
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
