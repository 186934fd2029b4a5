"""The worker's side of the partial-straggler protocol, variant R1 (bcgc_sim.partial.decoder notes).

Per ITERATE the worker computes the full gradient of each chunk (= data partition) it stores, in
its order pi_j, keeps them, and after the k-th one sends a NOTICE (header only) at its deadline
    t_start + time_scale * (M C / N) * T_j * k * L
(one chunk = raw load L, bcgc_sim.partial.plan). A COMBINE for this iteration (chunks, beta) is
answered at once with one UPLOAD z_j = sum_k sum_u beta[k, u] g_{chunks[k]}^(u) (ceil(L / l)
floats, `r1_upload`), after which the iteration is over for this worker, as it is after an
ABANDON. COMBINE and ABANDON of another run or iteration are stale and ignored; any other master
message (ITERATE, SETUP, STOP) interrupts the iteration as in the BCGC job (workers/slots.py). A COMBINE naming a
chunk this worker has not computed is answered with FAILED, so the master stops with a clear
error instead of waiting. The chunk gradients of the last iteration are kept until the next
one: a COMBINE repeated after a dropped connection (its UPLOAD was lost) is answered again
(`ChunkJob.between`). The unit loop is workers/loop.py's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import numpy as np

from bcgc_sim.partial.coding import Coefficients, block_length, r1_upload
from bcgc_sim.problems import ProblemData, loss_derivative
from bcgc_sim.wire.protocol import SETUP_HEADER, Message, MessageType, check
from bcgc_sim.wire.shm import record_bytes

from .loop import STALE, Port, Stamp


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


class ChunkJob:
    """The partial-gc job of a worker: a NOTICE after each chunk of its order, the chunk
    gradients kept for the COMBINE that follows."""

    kind = MessageType.NOTICE
    waits_after = True  # every chunk done: wait for COMBINE or ABANDON

    def __init__(self, computer: ChunkComputer, coordinates: int) -> None:
        self.computer = computer
        self.sent_bytes = record_bytes(8 * block_length(coordinates, computer.parts))  # an UPLOAD
        self.stamp: Stamp | None = None  # the last iteration begun
        self.gradients: dict[int, np.ndarray] = {}  # its chunk gradients, by chunk
        self.theta: np.ndarray | None = None

    @classmethod
    def from_setup(cls, h: dict) -> ChunkJob:
        """The job a SETUP with protocol "partial-r1" describes (checked against SETUP_HEADER)."""
        check(h, SETUP_HEADER)
        computer = ChunkComputer.from_header(ProblemData(**h["data"]), h)
        return cls(computer, h["data"]["coordinates"])

    def begin(self, stamp: Stamp, theta: np.ndarray, repeat: int) -> None:
        self.stamp, self.theta, self.gradients = stamp, theta, {}  # kept for a repeated COMBINE

    def units(self) -> Iterable[tuple[int, int]]:
        return enumerate(self.computer.order, start=1)

    def load(self, unit: tuple[int, int]) -> float:
        return self.computer.chunk_load * unit[0]

    def compute(self, unit: tuple[int, int]) -> np.ndarray:
        gradient = self.computer.gradient(self.theta, unit[1])
        self.gradients[unit[1]] = gradient
        return gradient

    def message(self, unit: tuple[int, int], values: np.ndarray) -> tuple[dict, None]:
        return {"chunk": unit[1], "position": unit[0]}, None  # a NOTICE has no payload

    def during(self, port: Port, message: Message):
        """COMBINE and ABANDON of this iteration end it (a COMBINE answered); those of another
        run or iteration are STALE; anything else interrupts."""
        if message.kind not in (MessageType.COMBINE, MessageType.ABANDON):
            return message
        if not self._current(message):
            return STALE  # of an earlier iteration or plan
        if message.kind is MessageType.COMBINE:
            combine(port, self.computer, message, self.stamp, self.gradients)
        return None

    def between(self, port: Port, message: Message) -> None:
        """A COMBINE that reached the serve loop: answer it if it is for this worker's last
        iteration (the master repeats a COMBINE whose UPLOAD a dropped connection lost); anything
        else is stale."""
        if message.kind is MessageType.COMBINE and self._current(message):
            combine(port, self.computer, message, self.stamp, self.gradients)

    def _current(self, message: Message) -> bool:
        h, stamp = message.header, self.stamp
        return stamp is not None and (h.get("run"), h.get("iteration")) == (
            stamp.fields["run"],
            stamp.iteration,
        )


def combine(
    port: Port, computer: ChunkComputer, message: Message, stamp: Stamp, gradients: dict
) -> None:
    """Answer a COMBINE with the UPLOAD z_j, or with FAILED if it cannot be computed."""
    got = time.monotonic_ns()
    chunks, beta = message.header.get("chunks"), message.array
    rank = stamp.fields["worker"]
    try:
        if not isinstance(chunks, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in chunks
        ):
            raise ValueError("COMBINE needs a list of chunk ids")
        if beta is None or beta.shape != (len(chunks), computer.parts):
            shape = None if beta is None else list(beta.shape)
            raise ValueError(f"beta has shape {shape}, expected [{len(chunks)}, {computer.parts}]")
        coefficients = Coefficients(rank, tuple(chunks), np.asarray(beta, dtype=float))
        values = r1_upload(coefficients, gradients, computer.parts)
    except (ValueError, KeyError) as exc:
        reason = f"cannot combine: {exc}"
        failed = {"rank": rank, "run": stamp.fields["run"], "iteration": stamp.iteration}
        port.send(MessageType.FAILED, failed | {"reason": reason})
        return
    header = {
        **stamp.fields,
        "chunks": len(chunks),
        "combine_ns": got,
        "send_ns": time.monotonic_ns(),
    }
    port.send(MessageType.UPLOAD, header, values)
