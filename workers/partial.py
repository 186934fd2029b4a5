"""The worker's side of the partial-straggler protocol, variant R1 (bcgc_sim.partial.decoder notes).

Per ITERATE the worker computes the full gradient of each chunk (= data partition) it stores, in
its order pi_j, keeps them, and after the k-th one sends a NOTICE (header only) at its deadline
    t_start + time_scale * (M C / N) * T_j * k * L
(one chunk = raw load L, bcgc_sim.partial.plan). A COMBINE for this iteration (chunks, beta) is
answered at once with one UPLOAD z_j = sum_k sum_u beta[k, u] g_{chunks[k]}^(u) (ceil(L / l)
floats, `r1_upload`), after which the iteration is over for this worker, as it is after an
ABANDON. COMBINE and ABANDON of another run or iteration are stale and ignored; any other master
message (ITERATE, SETUP, STOP) interrupts the iteration as in the BCGC loop. A COMBINE naming a
chunk this worker has not computed is answered with FAILED, so the master stops with a clear
error instead of waiting. The chunk gradients of the last iteration are kept until the next
one: a COMBINE repeated after a dropped connection (its UPLOAD was lost) is answered again
(`combine_again`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from bcgc_sim.partial.coding import Coefficients, r1_upload
from bcgc_sim.problems import ProblemData, loss_derivative
from bcgc_sim.wire.protocol import Message, MessageType

_DEADLINE = object()  # _wait's result when the deadline passed with no master message


class ChunkComputer:
    """Worker j's chunks (data partitions), its order and the gradient of one chunk."""

    def __init__(
        self,
        data: ProblemData,
        bounds: Sequence[int],
        order: Sequence[int],
        parts: int,
        chunk_load: float,
    ) -> None:
        self.kind = data.kind
        self.features, self.targets = data.load()
        self.bounds = tuple(int(b) for b in bounds)
        self.order = tuple(int(i) for i in order)
        self.parts = int(parts)
        self.chunk_load = float(chunk_load)
        chunks = len(self.bounds) - 1
        if chunks < 1 or any(b > c for b, c in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"bad partition bounds {list(self.bounds)}")
        if self.bounds[0] < 0 or self.bounds[-1] > data.rows:
            raise ValueError(f"partition bounds {list(self.bounds)} exceed the {data.rows} rows")
        if not self.order or len(set(self.order)) != len(self.order):
            raise ValueError(f"bad chunk order {list(self.order)}")
        if not all(0 <= i < chunks for i in self.order):
            raise ValueError(f"chunk order {list(self.order)} names chunks outside 0..{chunks - 1}")
        if self.parts < 1 or not (math.isfinite(self.chunk_load) and self.chunk_load >= 0):
            raise ValueError(f"bad parts {self.parts} or chunk load {self.chunk_load}")

    @classmethod
    def from_header(cls, data: ProblemData, header: dict) -> ChunkComputer:
        order, bounds = header.get("order"), header.get("bounds")
        if not isinstance(order, list) or not isinstance(bounds, list):
            raise ValueError("a partial-gc SETUP needs the lists 'order' and 'bounds'")
        return cls(data, bounds, order, int(header["parts"]), float(header["chunk_load"]))

    def gradient(self, theta: np.ndarray, chunk: int) -> np.ndarray:
        """g_i = X_i^T l'(X_i theta, y_i) over partition i's rows, shape (L,)."""
        rows = slice(self.bounds[chunk], self.bounds[chunk + 1])
        x = self.features[rows]
        return x.T @ loss_derivative(self.kind, x @ theta, self.targets[rows])


def iterate(worker, message: Message) -> Message | None:
    """One iteration of `worker` (a workers.worker.Worker with .partial set); returns the master
    message that interrupted it, if any (as Worker.iterate does)."""
    begun = worker.begin(message)
    if begun is None:
        return None  # stale or malformed: ignore
    iteration, start, received, cycle_time, theta = begun
    computer: ChunkComputer = worker.partial
    context = {"start_ns": start, "received_ns": received, "cycle_time": cycle_time}
    gradients: dict[int, np.ndarray] = {}
    worker.partial_kept = (iteration, context, gradients)  # for a repeated COMBINE
    if not math.isfinite(cycle_time):  # a full straggler: computes and notices nothing
        outcome = _wait(worker, None, iteration, context, gradients)
        return None if outcome is _DEADLINE else outcome
    theta = np.asarray(theta, dtype=float)
    for position, chunk in enumerate(computer.order, start=1):
        for _ in range(worker.repeat):  # a per-worker slowdown is real extra work
            gradient = computer.gradient(theta, chunk)
        gradients[chunk] = gradient
        computed = time.monotonic_ns()
        deadline = (
            computed
            if worker.natural
            else start + round(worker.ns_per_load * cycle_time * computer.chunk_load * position)
        )
        outcome = _wait(worker, deadline, iteration, context, gradients)
        if outcome is not _DEADLINE:
            return outcome
        header = {
            "run": worker.run_id, "iteration": iteration, "worker": worker.rank, "chunk": chunk,
            "position": position, "cycle_time": cycle_time, "start_ns": start,
            "received_ns": received, "deadline_ns": deadline,
            "overrun_ns": max(0, computed - deadline), "send_ns": time.monotonic_ns(),
        }  # fmt: skip
        worker.send(MessageType.NOTICE, header)
    outcome = _wait(worker, None, iteration, context, gradients)  # every chunk done: wait
    return None if outcome is _DEADLINE else outcome


def _wait(worker, deadline: int | None, iteration: int, context: dict, gradients: dict):
    """Wait until `deadline` (None: until released). Returns _DEADLINE when it passed, None when
    the iteration ended for this worker (COMBINE answered, or ABANDON), or an interrupting
    message."""
    while True:
        message = worker.wait_until(deadline)
        if message is None:
            return _DEADLINE
        if message.kind not in (MessageType.COMBINE, MessageType.ABANDON):
            return message
        h = message.header
        if h.get("run") != worker.run_id or h.get("iteration") != iteration:
            continue  # stale: of an earlier iteration or plan
        if message.kind is MessageType.COMBINE:
            combine(worker, message, iteration, context, gradients)
        return None


def combine_again(worker, message: Message) -> None:
    """A COMBINE that reached the serve loop: answer it if it is for this worker's last
    iteration (the master repeats a COMBINE whose UPLOAD a dropped connection lost); anything
    else is stale."""
    kept = getattr(worker, "partial_kept", None)
    h = message.header
    if kept is None or h.get("run") != worker.run_id or h.get("iteration") != kept[0]:
        return
    combine(worker, message, *kept)


def combine(worker, message: Message, iteration: int, context: dict, gradients: dict) -> None:
    """Answer a COMBINE with the UPLOAD z_j, or with FAILED if it cannot be computed."""
    got = time.monotonic_ns()
    computer: ChunkComputer = worker.partial
    chunks, beta = message.header.get("chunks"), message.array
    try:
        if not isinstance(chunks, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in chunks
        ):
            raise ValueError("COMBINE needs a list of chunk ids")
        if beta is None or beta.shape != (len(chunks), computer.parts):
            shape = None if beta is None else list(beta.shape)
            raise ValueError(f"beta has shape {shape}, expected [{len(chunks)}, {computer.parts}]")
        coefficients = Coefficients(worker.rank, tuple(chunks), np.asarray(beta, dtype=float))
        values = r1_upload(coefficients, gradients, computer.parts)
    except (ValueError, KeyError) as exc:
        worker.send(
            MessageType.FAILED,
            {"rank": worker.rank, "run": worker.run_id, "iteration": iteration,
             "reason": f"cannot combine: {exc}"},
        )  # fmt: skip
        return
    header = {
        "run": worker.run_id, "iteration": iteration, "worker": worker.rank,
        "chunks": len(chunks), **context, "combine_ns": got, "send_ns": time.monotonic_ns(),
    }  # fmt: skip
    worker.send(MessageType.UPLOAD, header, values)
